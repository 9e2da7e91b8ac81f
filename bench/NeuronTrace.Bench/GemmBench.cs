using System.Diagnostics;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Bench;

/// <summary>
/// GFLOP/s of <see cref="Gemm"/> on the synthetic Llama model's shapes (rows = batch 8 × seq 128), forward
/// (A·Bᵀ against a [n, k] weight) and backward input gradient (A·B against the same weight), best of several runs.
/// </summary>
public static class GemmBench
{
    /// <summary>(n, k) of the forward products: q/o, k/v, gate/up, down, logits.</summary>
    static readonly (string Name, int N, int K)[] Weights =
    [
        ("attn q/o", 1024, 1024), ("attn k/v", 256, 1024), ("mlp gate/up", 2816, 1024), ("mlp down", 1024, 2816), ("logits", 32000, 1024),
    ];

    public static void Run(TextWriter output) => Run(output, rows: [1024, 8, 1], minRepeats: 5, minSeconds: 1.0);

    public static void Run(TextWriter output, int[] rows, int minRepeats, double minSeconds)
    {
        output.WriteLine($"GEMM (fp32, {Environment.ProcessorCount} threads), best of ≥{minRepeats} runs and ≥{minSeconds:0.#} s per shape");
        output.WriteLine($"{"shape",-14} {"op",-28} {"m",5} {"n",6} {"k",6} {"ms",9} {"GFLOP/s",8}");
        double totalFlops = 0, totalSeconds = 0;
        foreach (int m in rows)
            foreach (var (name, n, k) in Weights)
            {
                // forward: y[m, n] = x[m, k] · W[n, k]ᵀ
                double s = Time(m, n, k, transposedB: true, minRepeats, minSeconds);
                Report(output, name, "MultiplyTransposedB (fwd)", m, n, k, s);
                if (m == 1024) { totalFlops += 2.0 * m * n * k; totalSeconds += s; }
                // backward: dx[m, k] = dy[m, n] · W[n, k]
                s = Time(m, k, n, transposedB: false, minRepeats, minSeconds);
                Report(output, name, "Multiply (bwd dx)", m, k, n, s);
                if (m == 1024) { totalFlops += 2.0 * m * n * k; totalSeconds += s; }
            }
        if (totalSeconds > 0)
            output.WriteLine($"all m=1024 shapes together: {totalFlops / totalSeconds * 1e-9:0.0} GFLOP/s");
    }

    static void Report(TextWriter output, string name, string op, int m, int n, int k, double seconds) =>
        output.WriteLine($"{name,-14} {op,-28} {m,5} {n,6} {k,6} {seconds * 1e3,9:0.000} {2.0 * m * n * k / seconds * 1e-9,8:0.0}");

    /// <summary>Best wall time of one product c[m, n] = a[m, k] · (b[n, k]ᵀ or b[k, n]).</summary>
    static double Time(int m, int n, int k, bool transposedB, int minRepeats, double minSeconds)
    {
        var rng = new Random(1234);
        var a = Fill(rng, (long)m * k);
        var b = Fill(rng, (long)n * k);
        var c = new float[(long)m * n];
        void Once()
        {
            if (transposedB) Gemm.MultiplyTransposedB(a, b, c, m, n, k, accumulate: false);
            else Gemm.Multiply(a, b, c, m, n, k, accumulate: false);
        }

        Once(); // warm-up: JIT, scratch buffers, pages
        double best = double.MaxValue;
        var total = Stopwatch.StartNew();
        for (int r = 0; r < minRepeats || total.Elapsed.TotalSeconds < minSeconds; r++)
        {
            long t0 = Stopwatch.GetTimestamp();
            Once();
            best = Math.Min(best, Stopwatch.GetElapsedTime(t0).TotalSeconds);
            if (r > 1000) break;
        }
        return best;
    }

    static float[] Fill(Random rng, long count)
    {
        var x = GC.AllocateUninitializedArray<float>(checked((int)count));
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
