using System.Diagnostics;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Bench;

/// <summary>
/// The trace's k-sweep (top-k and random-control circuits and their complements over log-spaced k, AtP scores, every
/// site asked for) timed on the plain mean-ablated path and on the exact shortcuts (issue 18), in circuits (masks)
/// evaluated per second, beside PyTorch running masked forwards with 8 masks batched (torch_sweep.py: its work does
/// not depend on which units a mask keeps, so its masks need not be ours, and a share of the sweep's mask count gives
/// its rate). The machine is shared, so each round runs the three back to back and the ratios are taken within a
/// round; the summary is the median over rounds of each ratio. Both paths' scores are compared (largest difference).
/// </summary>
static class KSweepBench
{
    /// <summary>Timed runs of torch_sweep.py per thread count and round (its best is taken).</summary>
    public const int TorchIters = 3;

    public static void Run(string model, string name, int batch, int seq, int kPoints, IReadOnlyList<NodeSite> sites, int rounds, int torchMasks, bool floorCheck,
        Func<string, int, int, int, int, string[], double> torchMasksPerSecond)
    {
        var loaded = ModelLoader.Load(model);
        using var llama = new Llama(loaded.Weights, CpuBackend.Instance);
        var task = RandomPairs(batch, seq, loaded.Config.VocabSize);
        var scores = Attributor.Score(llama, task, new AttributionOptions { Method = AttributionMethod.AtP, Sites = sites });
        var means = SiteMeans.Compute(llama, task.Pairs.Select(p => p.PatchIds!).ToList(), sites);
        var c = loaded.Config;
        Console.WriteLine($"k-sweep {name} (dim {c.Dim}, hidden {c.HiddenDim}, {c.Layers} layers, vocab {c.VocabSize}) batch {task.Count} seq {seq}, " +
                          $"{kPoints} k points, sites {string.Join(",", sites.Select(s => s.Name()))}, {rounds} rounds; uptime: {Uptime()}");
        // Warm-up (JIT, pools) on both paths, so neither pays it inside the timed sweeps.
        var warm = new NodeRanking(scores, sites[0]);
        CircuitSweep.Run(llama, scores, sites[0], "atp", task, means, [0, 1, warm.Count], path: SweepPath.Plain);
        CircuitSweep.Run(llama, scores, sites[0], "atp", task, means, [0, 1, warm.Count], path: SweepPath.Shortcuts);
        var ratios = new List<(double FastPlain, double FastTorch, double PlainTorch)>();
        const int per = 8;
        torchMasks = Math.Max(per, torchMasks / per * per);
        for (int round = 1; round <= rounds; round++)
        {
            double plainSeconds = 0, fastSeconds = 0, worst = 0;
            int masks = 0;
            foreach (var site in sites)
            {
                var ranking = new NodeRanking(scores, site);
                var ks = CircuitSweep.LogSpacedK(ranking.Count, kPoints);
                var w = Stopwatch.StartNew();
                var plain = CircuitSweep.Run(llama, scores, site, "atp", task, means, ks, path: SweepPath.Plain);
                double tp = w.Elapsed.TotalSeconds;
                w.Restart();
                string plan = "";
                var fast = CircuitSweep.Run(llama, scores, site, "atp", task, means, ks, path: SweepPath.Shortcuts, planLog: s => plan = s);
                double tf = w.Elapsed.TotalSeconds;
                int m = 2 + 4 * ks.Length;
                double siteWorst = Worst(plain, fast);
                worst = Math.Max(worst, siteWorst);
                // The rounding floor: the plain path itself, its masks batched differently (5 per forward, not 8).
                string floor = round == 1 && floorCheck ? $", plain(8) − plain(5) {Worst(plain, CircuitSweep.Run(llama, scores, site, "atp", task, means, ks, masksPerForward: 5, path: SweepPath.Plain)):E2}" : "";
                Console.WriteLine($"  round {round} {site.Name(),-8} {m,4} masks: plain {m / tp,8:F2} circuits/s, shortcuts {m / tf,8:F2} circuits/s ({tp / tf:F2}x); max |plain − shortcuts| {siteWorst:E2}{floor}");
                if (round == 1) Console.WriteLine($"           {plan}");
                plainSeconds += tp; fastSeconds += tf; masks += m;
            }
            // PyTorch at its best: the faster of 1 and 2 OpenBLAS threads, each its best of TorchIters timed runs after a warm-up.
            double torch = new[] { 1, 2 }.Max(threads => torchMasksPerSecond("torch_sweep.py", batch, seq, torchMasks, per,
                ["--masks", torchMasks.ToString(), "--masks-per-forward", per.ToString(), "--threads", threads.ToString()]));
            double plainRate = masks / plainSeconds, fastRate = masks / fastSeconds;
            ratios.Add((fastRate / plainRate, fastRate / torch, plainRate / torch));
            Console.WriteLine($"  round {round} all sites ({masks} masks): plain {plainRate:F2}, shortcuts {fastRate:F2}, PyTorch batched ({per} masks/forward, {torchMasks} masks timed, best of {TorchIters} runs and of 1/2 threads) {torch:F2} circuits/s");
            Console.WriteLine($"  round {round} => shortcuts / plain {fastRate / plainRate:F2}x, shortcuts / PyTorch {fastRate / torch:F2}x, plain / PyTorch {plainRate / torch:F2}x; " +
                              $"max |plain − shortcuts| score {worst:E2}; uptime: {Uptime()}");
        }
        Console.WriteLine($"  median of {rounds} rounds: shortcuts / plain {Median(ratios.Select(r => r.FastPlain)):F2}x, shortcuts / PyTorch {Median(ratios.Select(r => r.FastTorch)):F2}x, " +
                          $"plain / PyTorch {Median(ratios.Select(r => r.PlainTorch)):F2}x; uptime: {Uptime()}");
    }

    /// <summary>
    /// <c>bench ksweep-ledger [--layers L] [--batch B] [--seq T] [--kpoints N] [--site s] [--math bf16|tf32|fp32]</c>: one k-sweep (top-k and
    /// random circuits and their complements, masks over all T positions) on llama3-8b shapes, run by
    /// <see cref="CudaBackend"/> on the <see cref="RecordingDeviceRuntime"/> (executes nothing: a ledger, not a GPU
    /// timing), plain path and shortcuts, each after a warm-up sweep: uploads, bytes up, host syncs, downloads per circuit.
    /// </summary>
    public static int Ledger(string[] args)
    {
        string Opt(string name, string fallback) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback; }
        int Int(string name, int fallback, int min, int max) =>
            int.TryParse(Opt(name, fallback.ToString()), out int v) && v >= min && v <= max ? v : throw new ArgumentException($"{name}: expected an integer {min}..{max}");
        var config = GpuPlan.Shapes["llama3-8b"] with { Layers = Int("--layers", 32, 1, 32) };
        int batch = Int("--batch", 8, 1, 64), seq = Int("--seq", 16, 2, 256), kPoints = Int("--kpoints", 8, 2, 24);
        var site = NodeSites.ParseList(Opt("--site", "mlp_act")).Single();
        var math = GpuPlan.Precision(args);
        var device = new RecordingDeviceRuntime();
        using var backend = new CudaBackend(device, ownsDevice: false, math);
        using var llama = Llama.WithUninitializedWeights(config, backend);
        var task = RandomPairs(batch, seq, config.VocabSize);
        var means = SiteMeans.Compute(llama, task.Pairs.Select(p => p.PatchIds!).ToList(), [site]);
        var grid = new NodeGrid(config.Layers, seq, site.Width(config));
        var rng = new Random(1);
        var scores = new float[grid.Count];
        for (int i = 0; i < scores.Length; i++) scores[i] = rng.NextSingle();
        var ranking = new NodeRanking(scores, grid);
        var ks = CircuitSweep.LogSpacedK(ranking.Count, kPoints);
        var circuits = ks.SelectMany(k => new[] { ranking.TopK(k), ranking.Random(k, CircuitSweep.RandomControlSeed(0, k)) }).ToList();
        int masks = 2 + 2 * circuits.Count;
        Console.WriteLine($"ksweep-ledger: llama3-8b shapes ({config.Layers} layers, {math} products), site {site.Name()}, {task.Count} prompts x {seq} tokens, " +
                          $"{ks.Length} k points -> {masks} masks (circuits and complements), 8 masks per forward, {grid.Count:N0} nodes");
        Console.WriteLine("Nothing here ran on a GPU: the recording device runtime counts copies and launches, it executes nothing.");
        // The shortcuts with the keep-k products off (threshold 0: what the CUDA backend ran before they were wired in) and on.
        foreach (var (path, sparse, label) in new (SweepPath, double?, string)[] { (SweepPath.Plain, null, "plain"), (SweepPath.Shortcuts, 0.0, "no keep-k"), (SweepPath.Shortcuts, 0.125, "keep-k 1/8"), (SweepPath.Shortcuts, null, "shortcuts") })
        {
            string plan = "";
            var eval = new Faithfulness(new SiteMeanAblation(llama, task, site, means, Metric.EvaluationDefault(task), seq)
                { MasksPerForward = 8, Path = path, RankingOrder = ranking.Order, PlanLog = s => plan = s, SparseFraction = sparse });
            eval.Score(circuits);
            device.Reset();
            eval.Score(circuits);
            double flops = device.Ops.Values.Sum(v => v.Flops), bytes = device.Ops.Values.Sum(v => v.Bytes), roofline = device.Ops.Values.Sum(v => v.RooflineSeconds);
            Console.WriteLine($"  {label,-9}: per sweep {device.Uploads} uploads ({device.BytesToDevice / 1e6:F2} MB), {device.HostSyncs} host syncs, " +
                              $"{device.Downloads} downloads ({device.BytesToHost / 1e6:F2} MB), {device.Launches} launches; per circuit " +
                              $"{(double)device.Uploads / masks:F2} uploads ({device.BytesToDevice / 1e6 / masks:F3} MB), {(double)device.HostSyncs / masks:F3} syncs, " +
                              $"{device.BytesToHost / 1e6 / masks:F3} MB down");
            Console.WriteLine($"             per circuit {(double)device.Launches / masks:F1} launches, {flops / 1e9 / masks:F1} GFLOP, {bytes / 1e9 / masks:F3} GB moved; " +
                              $"modelled H100 time per circuit: roofline {roofline * 1e3 / masks:F3} ms, with launches, syncs and downloads {GpuPlan.ModelledSeconds(device) * 1e3 / masks:F3} ms");
            if (plan.Length > 0) Console.WriteLine($"             {plan}");
        }
        return 0;
    }

    static double Worst(IReadOnlyList<SweepPoint> a, IReadOnlyList<SweepPoint> b) =>
        a.Zip(b).Max(p => new[] { p.First.Faithfulness - p.Second.Faithfulness, p.First.Completeness - p.Second.Completeness,
            p.First.RandomFaithfulness - p.Second.RandomFaithfulness, p.First.RandomCompleteness - p.Second.RandomCompleteness }.Max(Math.Abs));

    static double Median(IEnumerable<double> xs)
    {
        var a = xs.Order().ToArray();
        return a.Length % 2 == 1 ? a[a.Length / 2] : (a[a.Length / 2 - 1] + a[a.Length / 2]) / 2;
    }

    static string Uptime()
    {
        try
        {
            var psi = new ProcessStartInfo("uptime") { RedirectStandardOutput = true };
            using var p = Process.Start(psi)!;
            string s = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return s;
        }
        catch (System.ComponentModel.Win32Exception) { return "load " + File.ReadAllText("/proc/loadavg").Trim(); }
    }

    static PromptTask RandomPairs(int batch, int seq, int vocab)
    {
        var rng = new Random(0);
        var pairs = new List<PromptPair>();
        for (int i = 0; i < batch; i++)
        {
            var c = Enumerable.Range(0, seq).Select(t => t == 0 ? 1 : rng.Next(3, vocab)).ToArray();
            var p = (int[])c.Clone();
            p[seq / 2] = (p[seq / 2] + 1) % (vocab - 3) + 3;
            int a = rng.Next(3, vocab), b = rng.Next(3, vocab);
            if (a != b) pairs.Add(new PromptPair(i + 1, c, p, a, b));
        }
        return new PromptTask("random", pairs);
    }
}
