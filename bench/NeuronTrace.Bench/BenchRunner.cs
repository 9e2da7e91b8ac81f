using System.Diagnostics;
using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Bench;

/// <summary>
/// Throughput benchmarks, each against PyTorch doing the same work in the same run (bench/torch_*.py under Debian's
/// /usr/bin/python3), printing both numbers and the ratio. Usage: bench [all|forward|attribution|sweep|gemm] [--quick]
/// [--rounds N]. On a shared machine a single pair of runs can be off by 2× either way, so each comparison is made in
/// rounds (ours, then PyTorch, again and again; 3 for stories260K, 1 for the slow synthetic model unless --rounds says)
/// and the median of the rounds' ratios is the headline figure.
/// </summary>
static partial class BenchRunner
{
    static readonly string Root = FindRoot();
    static bool _quick;
    static int? _rounds;

    public static int Run(string which, string[] rest)
    {
        _quick = rest.Contains("--quick");
        int at = Array.IndexOf(rest, "--rounds");
        if (at >= 0 && at + 1 < rest.Length && int.TryParse(rest[at + 1], out int r) && r > 0) _rounds = r;
        if (which == "long-prompt") return LongPromptBench.Run(Root, rest);
        if (which == "long-prompt-one") return LongPromptBench.One(rest[0], int.Parse(rest[1], System.Globalization.CultureInfo.InvariantCulture), rest.Length > 2 && rest[2] == "checkpoint");
        if (which == "gpu-check") return GpuCheck.Check(rest);
        if (which == "gpu-plan") return GpuPlan.Run(rest);
        if (which == "gpu-bench") return GpuBench.Run(rest);
        if (which == "gpu-long-prompt") return GpuLongPrompt.Run(rest);
        if (which == "ksweep") return KSweep(rest);
        if (which == "attribution-profile") return AttributionProfile(rest);
        if (which == "gemm-bf16") return GemmBf16Bench.Run(rest);
        if (which == "ksweep-ledger") return KSweepBench.Ledger(rest);
        if (which is not ("all" or "forward" or "attribution" or "sweep" or "gemm"))
            throw new ArgumentException($"unknown benchmark '{which}': expected all, forward, attribution, attribution-profile, sweep, ksweep, ksweep-ledger, gemm, gemm-bf16, gpu-check, gpu-bench, gpu-long-prompt or gpu-plan");
        int only = Array.IndexOf(rest, "--model");
        string? onlyModel = only >= 0 && only + 1 < rest.Length ? rest[only + 1] : null;
        if (onlyModel is not null and not "stories260K" and not "synthetic" and not OneBShape)
            throw new ArgumentException($"--model {onlyModel}: expected stories260K, synthetic or {OneBShape}");
        if (onlyModel == OneBShape)
        {
            if (which != "attribution") throw new ArgumentException($"--model {OneBShape} runs the attribution benchmark only");
            int li = Array.IndexOf(rest, "--layers");
            int? layers = li >= 0 && li + 1 < rest.Length && int.TryParse(rest[li + 1], out int l) && l is >= 1 and <= 16 ? l
                : li >= 0 ? throw new ArgumentException("--layers: expected an integer 1..16") : null;
            AttributionAtScale(EnsureOneBShape(layers), batch: 8, seq: 16);
            return 0;
        }
        if (which is "gemm" or "all") GemmBench.Run(Console.Out);
        var models = new List<(string Path, int Batch, int Seq)>();
        if (onlyModel is null or "stories260K") models.Add((Path.Combine(Root, "models", "stories260K", "stories260K.bin"), 8, 64));
        if (onlyModel is null or "synthetic") models.Add((EnsureSynthetic(), 8, 128));
        foreach (var m in models)
        {
            if (which is "forward" or "all") Forward(m.Path, m.Batch, m.Seq);
            if (which is "attribution" or "all") Attribution(m.Path, m.Batch, m.Seq);
            if (which is "sweep" or "all") Sweep(m.Path, m.Batch, m.Seq, masks: 8);
        }
        return 0;
    }

    // ksweep [--model stories260K|wide] [--kpoints N] [--sites a,b] [--rounds R] [--torch-masks M] [--floor]: the trace's k-sweep,
    // plain vs shortcuts vs PyTorch (M masks timed: its rate does not depend on the masks), R rounds back to back.
    static int KSweep(string[] rest)
    {
        string Opt(string name, string fallback) { int i = Array.IndexOf(rest, name); return i >= 0 && i + 1 < rest.Length ? rest[i + 1] : fallback; }
        string which = Opt("--model", "stories260K");
        int kPoints = int.Parse(Opt("--kpoints", "24"));
        var sites = NodeSites.ParseList(Opt("--sites", "mlp_act,mlp_out,attn,resid"));
        var (path, batch, seq) = which switch
        {
            "stories260K" => (Path.Combine(Root, "models", "stories260K", "stories260K.bin"), 8, 32),
            "wide" => (EnsureWide(), int.Parse(Opt("--batch", "4")), int.Parse(Opt("--seq", "16"))),
            _ => throw new ArgumentException($"--model {which}: expected stories260K or wide"),
        };
        int rounds = int.Parse(Opt("--rounds", "3")), torchMasks = int.Parse(Opt("--torch-masks", "32"));
        if (rounds < 1 || rounds > 100 || torchMasks < 8 || torchMasks > 100_000) throw new ArgumentException("--rounds must be in 1..100 and --torch-masks in 8..100000");
        KSweepBench.Run(path, which, batch, seq, kPoints, sites, rounds, torchMasks, rest.Contains("--floor"), (script, b, t, masks, per, extra) =>
            Torch(script, path, b, t, KSweepBench.TorchIters, extra).GetProperty("best_prompt_forwards_per_s").GetDouble() / b);
        return 0;
    }

    // dim 1024, hidden 4096 (issue 18's wide shape), 4 layers and a 4096-token vocabulary to keep a sweep short here.
    static string EnsureWide()
    {
        string dir = Path.Combine(Root, "bench", "results", "synthetic-wide");
        if (File.Exists(Path.Combine(dir, "model.safetensors"))) return dir;
        var psi = new ProcessStartInfo("/usr/bin/python3") { WorkingDirectory = Root };
        foreach (var a in new[] { Path.Combine(Root, "bench", "make_synthetic_model.py"), "--out", dir, "--dim", "1024", "--hidden", "4096",
                     "--layers", "4", "--heads", "16", "--kv-heads", "4", "--vocab", "4096" }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException("make_synthetic_model.py failed");
        return dir;
    }

    static void Forward(string model, int batch, int seq)
    {
        var loaded = ModelLoader.Load(model);
        using var llama = new Llama(loaded.Weights, CpuBackend.Instance);
        var tb = new TokenBatch(RandomPrompts(batch, seq, loaded.Config.VocabSize, 0));
        InRounds(model, $"forward {Name(model)} batch {batch} seq {seq}", () =>
        {
            var seconds = Time(() => { using var p = llama.Forward(tb, LogitRows.All); }, Iters(model));
            var torch = Torch("torch_forward.py", model, batch, seq, Iters(model));
            double gflops = LinearFlops(loaded.Config, batch * seq) / seconds.Best / 1e9;
            return Report("tokens/s", batch * seq, seconds, torch, "tokens_per_s", $"our linear layers: {gflops:F1} GFLOP/s (best run)");
        });
    }

    static void Attribution(string model, int batch, int seq)
    {
        var loaded = ModelLoader.Load(model);
        using var llama = new Llama(loaded.Weights, CpuBackend.Instance);
        var task = RandomPairs(batch, seq, loaded.Config.VocabSize);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = batch, Sites = [NodeSite.Resid, NodeSite.Attn, NodeSite.MlpOut, NodeSite.MlpAct] };
        InRounds(model, $"attribution (RelP, all sites) {Name(model)} batch {batch} seq {seq}", () =>
        {
            var seconds = Time(() => Attributor.Score(llama, task, options), Iters(model));
            var torch = Torch("torch_attribution.py", model, batch, seq, Iters(model), "--method", "relp");
            return Report("pairs/s", batch, seconds, torch, "pairs_per_s", "");
        });
    }

    const string OneBShape = "llama3.2-1b-shape";

    /// <summary>
    /// RelP attribution on the Llama-3.2-1B-shaped bf16 model (weights kept 16-bit on our side) against PyTorch in f32
    /// and in bf16, compared with the faster of the two; peak resident memory of both processes against the file size.
    /// Short prompts (seq 16, batch 8) as in the bundled tasks: tens of rows against large weights. On a loaded machine
    /// the three runs alternate back to back, round after round (--rounds, default 3), each round's ratio is against
    /// that round's faster PyTorch, and the headline is the median of the rounds' ratios. Ours runs in both CPU math
    /// modes: fp32 (bf16 weights widened in the products; the default) and bf16 (activations rounded to bf16, the
    /// AVX-512 BF16 micro-kernel where the CPU has it: PyTorch bf16's arithmetic), each with its own ratio line.
    /// </summary>
    static void AttributionAtScale(string model, int batch, int seq)
    {
        long fileBytes = new FileInfo(Path.Combine(model, "model.safetensors")).Length;
        var loaded = ModelLoader.Load(model);
        using var llama = new Llama(loaded.Weights, CpuBackend.Instance);
        var task = RandomPairs(batch, seq, loaded.Config.VocabSize);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = batch, Sites = [NodeSite.Resid, NodeSite.Attn, NodeSite.MlpOut, NodeSite.MlpAct] };
        int iters = _quick ? 1 : 2, rounds = _rounds ?? 3;
        // PyTorch scores the same sites (its default adds attn_z: one more gradient kept per layer)
        const string TorchSites = "resid,attn,mlp_out,mlp_act";
        Console.WriteLine($"attribution (RelP, all sites) {Name(model)} ({loaded.Config.Layers} layers, dim {loaded.Config.Dim}, hidden {loaded.Config.HiddenDim}, vocab {loaded.Config.VocabSize}, file {fileBytes / 1e9:F2} GB) batch {batch} seq {seq}; {rounds} rounds of ours (fp32 and bf16 math), PyTorch f32, PyTorch bf16 (1 and 2 intra-op threads) back to back, {iters} timed iterations each after one warm-up");
        using var llamaBf16 = new Llama(loaded.Weights, CpuBackend.Bf16Math);
        Console.WriteLine($"  ours in bf16 math: {(CpuBf16Library.Available ? "AVX-512 BF16 micro-kernel (native/cpu)" : "portable path (" + CpuBf16Library.WhyNot + ")")}");
        var ratios = new List<double>();
        var ratiosBf16 = new List<double>();
        var ratiosEvery = new List<double>();
        var cpuRatios = new List<double>();   // least PyTorch CPU seconds per batch / ours: what the load changes least
        var cpuRatiosBf16 = new List<double>();
        double torchF32Rss = 0, torchBf16Rss = 0;
        string? config = null;
        var faster = new List<string>();
        for (int r = 1; r <= rounds; r++)
        {
            Console.WriteLine($"  round {r}: uptime {Uptime()}");
            var cpu = new double[iters];
            var seconds = Time(() => Attributor.Score(llama, task, options), iters, cpu);
            double ours = batch / seconds.Median, oursCpu = Median(cpu);
            Console.WriteLine($"    NeuronTrace (CPU, {Environment.ProcessorCount} threads, bf16-resident weights, fp32 math): {ours,8:F3} pairs/s median ({batch / seconds.Best:F3} best); {oursCpu:F2} CPU s per batch");
            var cpuBf16 = new double[iters];
            var secondsBf16 = Time(() => Attributor.Score(llamaBf16, task, options), iters, cpuBf16);
            double oursBf16 = batch / secondsBf16.Median, oursBf16Cpu = Median(cpuBf16);
            Console.WriteLine($"    NeuronTrace (CPU, {Environment.ProcessorCount} threads, bf16-resident weights, bf16 math): {oursBf16,8:F3} pairs/s median ({batch / secondsBf16.Best:F3} best); {oursBf16Cpu:F2} CPU s per batch");
            // The same with every row computed, as PyTorch runs it: what leaving out the rows where no score can be non-zero
            // is worth (BackwardRows and the top layer's last rows, PairedForward.TopLayerRows; the pairs differ at the
            // middle position).
            var secondsEvery = Time(() => Attributor.Score(llamaBf16, task, options with { ComputeEveryRow = true }), iters);
            double oursEvery = batch / secondsEvery.Median;
            Console.WriteLine($"    NeuronTrace bf16 math, every row computed:                            {oursEvery,8:F3} pairs/s median ({batch / secondsEvery.Best:F3} best)");
            var f32 = Torch("torch_attribution.py", model, batch, seq, iters, "--method", "relp", "--dtype", "f32", "--warmup", "1", "--sites", TorchSites);
            var bf16x1 = Torch("torch_attribution.py", model, batch, seq, iters, "--method", "relp", "--dtype", "bf16", "--warmup", "1", "--sites", TorchSites);
            var bf16 = bf16x1;
            // PyTorch's bf16 products are oneDNN's (brgemm avx512_core_bf16), which run on torch's intra-op (OpenMP)
            // pool, one thread by default here (torch_llama.early_threads): also measured with both cores.
            var bf16x2 = Torch("torch_attribution.py", model, batch, seq, iters, "--method", "relp", "--dtype", "bf16", "--warmup", "1", "--torch-threads", "2", "--sites", TorchSites);
            if (bf16x2.GetProperty("pairs_per_s").GetDouble() > bf16.GetProperty("pairs_per_s").GetDouble()) bf16 = bf16x2;
            double rf32 = f32.GetProperty("pairs_per_s").GetDouble(), rbf16 = bf16.GetProperty("pairs_per_s").GetDouble();
            double cf32 = f32.GetProperty("cpu_seconds_per_iter").GetDouble(), cbf16 = bf16.GetProperty("cpu_seconds_per_iter").GetDouble();
            cpuRatios.Add(Math.Min(cf32, cbf16) / oursCpu);
            cpuRatiosBf16.Add(Math.Min(cf32, cbf16) / oursBf16Cpu);
            torchF32Rss = Math.Max(torchF32Rss, f32.GetProperty("peak_rss_mb").GetDouble() * 1e6);
            torchBf16Rss = Math.Max(torchBf16Rss, Math.Max(bf16x1.GetProperty("peak_rss_mb").GetDouble(), bf16x2.GetProperty("peak_rss_mb").GetDouble()) * 1e6);
            config ??= f32.GetProperty("config").ToString();
            Console.WriteLine($"    PyTorch f32:  {rf32,8:F3} pairs/s median ({f32.GetProperty("best_pairs_per_s").GetDouble():F3} best); {cf32:F2} CPU s per batch");
            Console.WriteLine($"    PyTorch bf16, 1 intra-op thread:  {bf16x1.GetProperty("pairs_per_s").GetDouble(),8:F3} pairs/s median; {bf16x1.GetProperty("cpu_seconds_per_iter").GetDouble():F2} CPU s per batch");
            Console.WriteLine($"    PyTorch bf16, 2 intra-op threads: {bf16x2.GetProperty("pairs_per_s").GetDouble(),8:F3} pairs/s median; {bf16x2.GetProperty("cpu_seconds_per_iter").GetDouble():F2} CPU s per batch");
            Console.WriteLine($"    PyTorch bf16 (the faster of the two): {rbf16,8:F3} pairs/s median ({bf16.GetProperty("best_pairs_per_s").GetDouble():F3} best); {cbf16:F2} CPU s per batch");
            faster.Add(rf32 >= rbf16 ? "f32" : "bf16");
            ratios.Add(ours / Math.Max(rf32, rbf16));
            ratiosBf16.Add(oursBf16 / Math.Max(rf32, rbf16));
            ratiosEvery.Add(oursEvery / Math.Max(rf32, rbf16));
            Console.WriteLine($"    ratio ours/faster PyTorch ({faster[^1]}): fp32 math {ratios[^1]:F2}x, bf16 math {ratiosBf16[^1]:F2}x (every row computed {ratiosEvery[^1]:F2}x); uptime after {Uptime()}");
        }
        double oursRss = PeakRssBytes();
        Console.WriteLine($"  PyTorch config: [{config}]");
        Console.WriteLine($"  faster PyTorch per round: {string.Join(", ", faster)}");
        Console.WriteLine($"  peak RSS: NeuronTrace {oursRss / 1e9:F2} GB = {oursRss / fileBytes:F2}x the file; PyTorch f32 {torchF32Rss / 1e9:F2} GB = {torchF32Rss / fileBytes:F2}x, bf16 {torchBf16Rss / 1e9:F2} GB = {torchBf16Rss / fileBytes:F2}x");
        static string List(List<double> xs) => string.Join(", ", xs.Select(x => x.ToString("F2") + "x"));
        Console.WriteLine($"  => ratio ours/faster PyTorch, fp32 math: median {Median(ratios.ToArray()):F2}x over {rounds} rounds ({List(ratios)})");
        Console.WriteLine($"  => ratio ours/faster PyTorch, bf16 math: median {Median(ratiosBf16.ToArray()):F2}x over {rounds} rounds ({List(ratiosBf16)})");
        Console.WriteLine($"  => ratio ours/faster PyTorch, bf16 math with every row computed: median {Median(ratiosEvery.ToArray()):F2}x ({List(ratiosEvery)})");
        Console.WriteLine($"  => CPU seconds per batch, PyTorch's least / ours: fp32 math median {Median(cpuRatios.ToArray()):F2}x ({List(cpuRatios)}), bf16 math median {Median(cpuRatiosBf16.ToArray()):F2}x ({List(cpuRatiosBf16)})");
    }

    static double Median(double[] xs)
    {
        var s = xs.Order().ToArray();
        return s.Length == 0 ? double.NaN : s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    internal static string UptimeLine() => Uptime();

    static string Uptime()
    {
        var psi = new ProcessStartInfo("uptime") { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string line = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return line;
    }

    /// <summary>This process's peak resident set (VmHWM), in bytes.</summary>
    static double PeakRssBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:")) return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return double.NaN;
    }

    /// <summary>The 1B-shaped model (or the same widths with fewer layers), written once into bench/results (git-ignored).</summary>
    static string EnsureOneBShape(int? layers)
    {
        string dir = Path.Combine(Root, "bench", "results", layers is { } l ? $"{OneBShape}-{l}l" : OneBShape);
        if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        Console.Error.WriteLine($"writing the {OneBShape} model to {dir} (once)");
        var psi = new ProcessStartInfo("/usr/bin/python3") { WorkingDirectory = Root };
        foreach (var a in new[] { Path.Combine(Root, "bench", "make_synthetic_model.py"), "--out", dir, "--preset", OneBShape }) psi.ArgumentList.Add(a);
        if (layers is { } n) { psi.ArgumentList.Add("--layers"); psi.ArgumentList.Add(n.ToString()); }
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException("make_synthetic_model.py failed");
        return dir;
    }

    static void Sweep(string model, int batch, int seq, int masks)
    {
        var loaded = ModelLoader.Load(model);
        using var llama = new Llama(loaded.Weights, CpuBackend.Instance);
        var task = RandomPairs(batch, seq, loaded.Config.VocabSize);
        var means = SiteMeans.Compute(llama, task.Pairs.Select(p => p.PatchIds!).ToList(), [NodeSite.MlpAct]);
        var eval = new SiteMeanAblation(llama, task, NodeSite.MlpAct, means, Metric.CleanMinusPatch, seq) { MasksPerForward = masks };
        var rng = new Random(1);
        var maskList = Enumerable.Range(0, masks).Select(_ => Enumerable.Range(0, loaded.Config.Layers * seq * loaded.Config.HiddenDim).Select(_ => rng.NextDouble() < 0.5).ToArray()).ToList();
        InRounds(model, $"sweep (mean-ablated forwards, {masks} masks) {Name(model)} batch {batch} seq {seq}", () =>
        {
            var seconds = Time(() => eval.Evaluate(maskList), Iters(model));
            var torch = Torch("torch_sweep.py", model, batch, seq, Iters(model), "--masks", masks.ToString(), "--masks-per-forward", masks.ToString());
            return Report("prompt-forwards/s", batch * masks, seconds, torch, "prompt_forwards_per_s", "");
        });
    }

    /// <summary>Runs one comparison in rounds and prints the median over rounds of the ratio of medians.</summary>
    static void InRounds(string model, string what, Func<double> round)
    {
        int rounds = _rounds ?? (_quick || !model.EndsWith(".bin") ? 1 : 5);
        Console.WriteLine(what);
        var ratios = new List<double>();
        for (int r = 0; r < rounds; r++) ratios.Add(round());
        ratios.Sort();
        double median = rounds % 2 == 1 ? ratios[rounds / 2] : (ratios[rounds / 2 - 1] + ratios[rounds / 2]) / 2;
        if (rounds > 1)
            Console.WriteLine($"  => median over {rounds} rounds: {median:F2}x (rounds: {string.Join(", ", ratios.Select(x => x.ToString("F2") + "x"))})");
    }

    /// <summary>
    /// Prints both sides as median (best) of their timed runs, and the ratio of medians — the steadier statistic on a
    /// shared machine — beside the ratio of bests; returns the ratio of medians. <paramref name="work"/> is the units one
    /// timed run does; <paramref name="torchKey"/> the PyTorch script's median rate (its best is "best_" + key).
    /// </summary>
    static double Report(string unit, double work, (double Median, double Best) seconds, JsonElement torch, string torchKey, string extra)
    {
        string config = torch.TryGetProperty("config", out var c) ? c.ToString() : "";
        double oursMedian = work / seconds.Median, oursBest = work / seconds.Best;
        double theirsMedian = torch.GetProperty(torchKey).GetDouble(), theirsBest = torch.GetProperty("best_" + torchKey).GetDouble();
        Console.WriteLine($"  NeuronTrace (CPU, {Environment.ProcessorCount} threads): {oursMedian,12:F1} {unit} median ({oursBest:F1} best)");
        Console.WriteLine($"  PyTorch:                          {theirsMedian,12:F1} {unit} median ({theirsBest:F1} best)   [{config}]");
        Console.WriteLine($"  ratio ours/PyTorch: {oursMedian / theirsMedian:F2}x of medians, {oursBest / theirsBest:F2}x of bests   {extra}");
        return oursMedian / theirsMedian;
    }

    static int Iters(string model) => _quick ? 2 : model.EndsWith(".bin") ? 40 : 3;

    /// <summary>Median and best of <paramref name="iters"/> runs after one warm-up, in seconds.</summary>
    /// <param name="cpuSeconds">When given (length <paramref name="iters"/>), receives each timed run's process CPU seconds.</param>
    static (double Median, double Best) Time(Action a, int iters, double[]? cpuSeconds = null)
    {
        a();
        var seconds = new double[iters];
        for (int i = 0; i < iters; i++)
        {
            var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            var w = Stopwatch.StartNew();
            a();
            seconds[i] = w.Elapsed.TotalSeconds;
            if (cpuSeconds is not null) cpuSeconds[i] = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
        }
        Array.Sort(seconds);
        double median = iters % 2 == 1 ? seconds[iters / 2] : (seconds[iters / 2 - 1] + seconds[iters / 2]) / 2;
        return (median, seconds[0]);
    }

    static JsonElement Torch(string script, string model, int batch, int seq, int iters, params string[] extra)
    {
        var psi = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = Root };
        foreach (var a in new[] { Path.Combine(Root, "bench", script), "--model", model, "--batch", batch.ToString(), "--seq", seq.ToString(), "--iters", iters.ToString() }.Concat(extra))
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{script} failed: {stderr.Trim().Split('\n').LastOrDefault()}");
        var line = stdout.Split('\n').Last(l => l.TrimStart().StartsWith('{'));
        return JsonDocument.Parse(line).RootElement;
    }

    static string EnsureSynthetic()
    {
        string dir = Path.Combine(Root, "bench", "results", "synthetic-1024");
        if (File.Exists(Path.Combine(dir, "model.safetensors"))) return dir;
        Console.Error.WriteLine($"writing the synthetic model to {dir} (once)");
        var psi = new ProcessStartInfo("/usr/bin/python3") { WorkingDirectory = Root };
        foreach (var a in new[] { Path.Combine(Root, "bench", "make_synthetic_model.py"), "--out", dir }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException("make_synthetic_model.py failed");
        return dir;
    }

    static List<int[]> RandomPrompts(int batch, int seq, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, seq).Select(t => t == 0 ? 1 : rng.Next(3, vocab)).ToArray()).ToList();
    }

    static PromptTask RandomPairs(int batch, int seq, int vocab)
    {
        var clean = RandomPrompts(batch, seq, vocab, 0);
        var rng = new Random(2);
        var pairs = clean.Select((c, i) =>
        {
            var p = (int[])c.Clone();
            p[seq / 2] = (p[seq / 2] + 1) % (vocab - 3) + 3;
            return new PromptPair(i + 1, c, p, rng.Next(3, vocab), rng.Next(3, vocab));
        }).Where(p => p.CleanAnswer != p.PatchAnswer).ToList();
        return new PromptTask("random", pairs);
    }

    static double LinearFlops(LlamaConfig c, long rows) =>
        2.0 * rows * (c.Layers * ((double)c.Dim * c.Dim * 2 + 2.0 * c.KvDim * c.Dim + 3.0 * c.Dim * c.HiddenDim) + (double)c.VocabSize * c.Dim);

    static string Name(string model) => Path.GetFileName(model.TrimEnd('/'));

    static string FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "NeuronTrace.sln"))) return d.FullName;
        return Directory.GetCurrentDirectory();
    }
}
