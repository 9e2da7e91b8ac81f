using System.Diagnostics;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Bench;

/// <summary>
/// <c>bench gemm-bf16 [--rounds R] [--fwd-rows M] [--bwd-rows M]</c>: the bf16-math products
/// (<see cref="Gemm.MultiplyTransposedBBf16"/>, <see cref="Gemm.MultiplyBf16"/>) alone at the 1B-shape attribution's
/// shapes (forward 192 rows: the paired forward's clean and patch rows; input gradient 64 rows: the clean rows from each
/// pair's first differing token, BackwardRows), over 16 distinct weight matrices per shape so that the weights come
/// from memory as in a pass, not from cache. Per shape: multiply-adds per CPU second (all threads) and per wall second.
/// </summary>
static class GemmBf16Bench
{
    static readonly (string Name, int N, int K)[] Weights = [("q/o", 2048, 2048), ("k/v", 512, 2048), ("gate/up", 8192, 2048), ("down", 2048, 8192)];

    public static int Run(string[] rest)
    {
        int ri = Array.IndexOf(rest, "--rounds");
        int rounds = ri >= 0 && ri + 1 < rest.Length ? int.Parse(rest[ri + 1]) : 3;
        int Rows(string flag, int fallback) { int i = Array.IndexOf(rest, flag); return i >= 0 && i + 1 < rest.Length ? int.Parse(rest[i + 1]) : fallback; }
        int fwdRows = Rows("--fwd-rows", 192), bwdRows = Rows("--bwd-rows", 64);
        if (rounds < 1 || fwdRows < 1 || bwdRows < 1) throw new ArgumentException("--rounds, --fwd-rows and --bwd-rows must be positive");
        Console.WriteLine($"bf16 GEMM, {(CpuBf16Library.Available ? "AVX-512 BF16 micro-kernel" : "portable path: " + CpuBf16Library.WhyNot)}, {Environment.ProcessorCount} threads, 16 weight matrices per shape; uptime {BenchRunner.UptimeLine()}");
        Console.WriteLine($"{"weight",-8} {"op",-14} {"m",4} {"n",6} {"k",6} {"GMAC/cpu-s",10} {"GMAC/s",7}");
        var rng = new Random(1);
        foreach (var (name, n, k) in Weights)
        {
            var w = new HalfWeights[16];
            for (int l = 0; l < w.Length; l++)
            {
                var bits = new ushort[n * k];
                for (int i = 0; i < bits.Length; i++) bits[i] = (ushort)(BitConverter.SingleToUInt32Bits((float)(rng.NextDouble() * 0.04 - 0.02)) >> 16);
                w[l] = new HalfWeights(bits, HalfFormat.BFloat16);
            }
            foreach (bool forward in new[] { true, false })
            {
                int m = forward ? fwdRows : bwdRows, cn = forward ? n : k, ck = forward ? k : n;
                var a = new float[m * ck];
                for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
                var c = new float[m * cn];
                double bestCpu = 0, bestWall = 0;
                for (int r = 0; r < rounds; r++)
                {
                    var cpu0 = Environment.CpuUsage.TotalTime;
                    var watch = Stopwatch.StartNew();
                    foreach (var wl in w)
                        if (forward) Gemm.MultiplyTransposedBBf16(a, wl, c, m, cn, ck, false);
                        else Gemm.MultiplyBf16(a, wl, c, m, cn, ck, false);
                    double wall = watch.Elapsed.TotalSeconds, cpu = (Environment.CpuUsage.TotalTime - cpu0).TotalSeconds;
                    double macs = 16.0 * m * cn * ck;
                    bestCpu = Math.Max(bestCpu, macs / cpu * 1e-9);
                    bestWall = Math.Max(bestWall, macs / wall * 1e-9);
                }
                Console.WriteLine($"{name,-8} {(forward ? "x·Wᵀ (fwd)" : "dy·W (bwd dx)"),-14} {m,4} {cn,6} {ck,6} {bestCpu,10:F1} {bestWall,7:F1}");
            }
        }
        Console.WriteLine($"uptime after {BenchRunner.UptimeLine()}");
        return 0;
    }
}
