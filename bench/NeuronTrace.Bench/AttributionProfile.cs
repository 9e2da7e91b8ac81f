using System.Diagnostics;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Bench;

/// <summary>
/// <c>bench attribution-profile [--model DIR] [--layers 2,4,8,16] [--iters N]</c>: our side of the 1B-shape attribution
/// alone, on the first N layers of one loaded model (the weights are shared, nothing is regenerated), so that the cost
/// per layer can be read off. On a shared machine wall time says little, so each pass also reports what the load does
/// not change: the process's CPU seconds, GC collections and pause time, and major page faults (a weight page read
/// back from disk after the kernel dropped it). <c>--math fp32|bf16|both</c> (default fp32) picks the CPU math mode(s);
/// <c>--gemm-shapes</c> adds, per timed pass, each product shape's calls, CPU seconds and multiply-adds per CPU second
/// (<see cref="GemmTimes"/>), and the pass's CPU time outside the products. <c>--every-row</c> computes every row
/// (<see cref="AttributionOptions.ComputeEveryRow"/>: the backward, and the top layer's forward), as before rows were left out.
/// </summary>
static partial class BenchRunner
{
    static int AttributionProfile(string[] rest)
    {
        string Opt(string name, string fallback) { int i = Array.IndexOf(rest, name); return i >= 0 && i + 1 < rest.Length ? rest[i + 1] : fallback; }
        string model = Opt("--model", Path.Combine(Root, "bench", "results", OneBShape));
        if (!Directory.Exists(model)) model = EnsureOneBShape(null);
        int iters = int.Parse(Opt("--iters", "1"));
        var counts = Opt("--layers", "2,4,8,16").Split(',').Select(int.Parse).ToArray();
        if (iters is < 1 or > 20 || counts.Any(c => c < 1)) throw new ArgumentException("--iters must be in 1..20 and --layers positive integers");
        CpuMath[] maths = Opt("--math", "fp32") switch
        {
            "fp32" => [CpuMath.Fp32],
            "bf16" => [CpuMath.Bf16],
            "both" => [CpuMath.Fp32, CpuMath.Bf16],
            var other => throw new ArgumentException($"--math {other}: expected fp32, bf16 or both"),
        };
        bool shapes = rest.Contains("--gemm-shapes");
        if (maths.Contains(CpuMath.Bf16)) Console.WriteLine($"bf16 math: {(CpuBf16Library.Available ? "AVX-512 BF16 micro-kernel (native/cpu)" : "portable path: " + CpuBf16Library.WhyNot)}");
        int batch = 8, seq = 16;
        var loaded = ModelLoader.Load(model);
        var w = loaded.Weights;
        var task = RandomPairs(batch, seq, w.Config.VocabSize);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = batch, Sites = [NodeSite.Resid, NodeSite.Attn, NodeSite.MlpOut, NodeSite.MlpAct],
            ComputeEveryRow = rest.Contains("--every-row") };
        Console.WriteLine($"attribution-profile {Name(model)} batch {batch} seq {seq}{(options.ComputeEveryRow ? ", every row computed" : "")}, {iters} timed pass(es) per layer count after one warm-up; uptime {Uptime()}");
        Console.WriteLine($"{"math",5} {"layers",6} {"wall s",8} {"cpu s",8} {"gen0",5} {"gen1",5} {"gen2",5} {"gc pause s",10} {"majflt",7} {"minflt",8} {"VmHWM GB",9} {"anon GB",8} {"file GB",8} {"gc heap GB",10} {"gc commit GB",12}");
        foreach (int n in counts.Where(c => c <= w.Config.Layers))
        {
            var sub = new LlamaWeights
            {
                Config = w.Config with { Layers = n },
                TokenEmbedding = w.TokenEmbedding,
                FinalNorm = w.FinalNorm,
                Classifier = w.Classifier,
                Layers = w.Layers.Take(n).ToArray(),
            };
            foreach (var math in maths)
            {
                using var llama = new Llama(sub, CpuBackend.For(math));
                Attributor.Score(llama, task, options);   // warm-up
                for (int i = 0; i < iters; i++)
                {
                    var times = shapes ? new GemmTimes() : null;
                    GemmTimes.Active = times;
                    var before = Sample();
                    var watch = Stopwatch.StartNew();
                    Attributor.Score(llama, task, options);
                    double wall = watch.Elapsed.TotalSeconds;
                    var after = Sample();
                    GemmTimes.Active = null;
                    Console.WriteLine($"{(math == CpuMath.Bf16 ? "bf16" : "fp32"),5} {n,6} {wall,8:F2} {(after.Cpu - before.Cpu).TotalSeconds,8:F2} {after.Gen0 - before.Gen0,5} {after.Gen1 - before.Gen1,5} {after.Gen2 - before.Gen2,5} {(after.Pause - before.Pause).TotalSeconds,10:F3} {after.MajFlt - before.MajFlt,7} {after.MinFlt - before.MinFlt,8} {Status("VmHWM:") / 1e9,9:F2} {Status("RssAnon:") / 1e9,8:F2} {Status("RssFile:") / 1e9,8:F2} {GC.GetGCMemoryInfo().HeapSizeBytes / 1e9,10:F2} {GC.GetGCMemoryInfo().TotalCommittedBytes / 1e9,12:F2}");
                    if (times is not null) PrintShapes(times, (after.Cpu - before.Cpu).TotalSeconds, wall);
                }
            }
        }
        Console.WriteLine($"uptime after {Uptime()}");
        return 0;
    }

    /// <summary>The products of one pass by shape, most CPU time first, and what the pass spent outside them.</summary>
    static void PrintShapes(GemmTimes times, double passCpu, double passWall)
    {
        var entries = times.Entries().OrderByDescending(e => e.Cpu).ToList();
        Console.WriteLine($"      {"product",-22} {"m",5} {"n",7} {"k",6} {"calls",5} {"cpu s",7} {"wall s",7} {"GMAC/cpu-s",10} {"GMAC/s",7}");
        double total = 0, totalWall = 0, macs = 0;
        foreach (var (shape, calls, cpu, wallTime) in entries)
        {
            double s = cpu.TotalSeconds, w = wallTime.TotalSeconds, mac = (double)shape.M * shape.N * shape.K * calls;
            total += s; totalWall += w; macs += mac;
            string op = (shape.TransposedB ? "x·Wᵀ (fwd)" : "dy·W (bwd dx)") + (shape.HalfWeights ? " bf16 W" : " fp32 W");
            Console.WriteLine($"      {op,-22} {shape.M,5} {shape.N,7} {shape.K,6} {calls,5} {s,7:F3} {w,7:F3} {(s > 0 ? mac / s * 1e-9 : 0),10:F1} {(w > 0 ? mac / w * 1e-9 : 0),7:F1}");
        }
        Console.WriteLine($"      products: {total:F2} cpu s, {totalWall:F2} wall s for {macs * 1e-9:F1} GMAC ({(total > 0 ? macs / total * 1e-9 : 0):F1} GMAC/cpu-s); outside the products: {passCpu - total:F2} cpu s of {passCpu:F2}, {passWall - totalWall:F2} wall s of {passWall:F2}");
    }

    readonly record struct ProcessSample(TimeSpan Cpu, int Gen0, int Gen1, int Gen2, TimeSpan Pause, long MinFlt, long MajFlt);

    static ProcessSample Sample()
    {
        // /proc/self/stat: fields after the command's closing parenthesis; minflt is field 10, majflt field 12.
        string stat = File.ReadAllText("/proc/self/stat");
        var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
        return new ProcessSample(Process.GetCurrentProcess().TotalProcessorTime, GC.CollectionCount(0), GC.CollectionCount(1),
            GC.CollectionCount(2), GC.GetTotalPauseDuration(), long.Parse(f[7]), long.Parse(f[9]));
    }

    /// <summary>A /proc/self/status size line (kB) in bytes.</summary>
    static double Status(string key)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key)) return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return double.NaN;
    }
}
