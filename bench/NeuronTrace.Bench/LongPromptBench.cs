using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Bench;

/// <summary>
/// <c>bench long-prompt [--lengths 256,512,...] [--torch-max 1024] [--torch-efficient-max 4096]</c>: RelP attribution
/// (all sites, patch baseline, batch 1) on a random synthetic model (dim 256, 8 heads, 4 layers, hidden 688, vocab 512)
/// on the CPU, one fresh process per prompt length and mode (stored activations, and activation checkpointing) so each
/// peak RSS (VmHWM) is that run's own; the memory plan's prediction beside each. PyTorch (bench/torch_attribution.py)
/// on the same work when installed, each run its own process and its peak RSS from its own getrusage, twice: eager
/// attention (it materialises the pattern and autograd keeps it; up to --torch-max) and the strongest memory-efficient
/// attention the installed torch has (up to --torch-efficient-max): torch.nn.functional.scaled_dot_product_attention
/// where it exists (2.0+), else chunked attention under torch.utils.checkpoint, the SDPA stand-in (1.13 here has no
/// SDPA), labelled as such. Writes bench/results/long-prompt/{results.json, memory.svg, time.svg}.
/// </summary>
static class LongPromptBench
{
    static readonly LlamaConfig Shape = new()
    {
        Dim = 256, HiddenDim = 688, Layers = 4, Heads = 8, KvHeads = 8, VocabSize = 512, MaxSeqLen = 8192,
        RopeLayout = RopeLayout.Interleaved, TiedEmbeddings = false,
    };

    public static int Run(string root, string[] args)
    {
        int at = Array.IndexOf(args, "--lengths");
        int[] lengths = at >= 0 && at + 1 < args.Length
            ? args[at + 1].Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray()
            : [256, 512, 1024, 2048, 4096];
        int tm = Array.IndexOf(args, "--torch-max");
        // Eager PyTorch holds the [B, H, T, T] pattern per layer with its graph and is slow on this shared machine: capped.
        int torchMax = tm >= 0 && tm + 1 < args.Length ? int.Parse(args[tm + 1], CultureInfo.InvariantCulture) : 1024;
        int te = Array.IndexOf(args, "--torch-efficient-max");
        int efficientMax = te >= 0 && te + 1 < args.Length ? int.Parse(args[te + 1], CultureInfo.InvariantCulture) : 4096;
        bool torchThere = TorchAvailable();
        string efficient = torchThere && TorchHasSdpa() ? "sdpa" : "chunked";
        string efficientName = efficient == "sdpa" ? "PyTorch SDPA" : "PyTorch chunked attention (SDPA stand-in)";
        if (lengths.Any(t => t is < 2 or > 8192)) throw new ArgumentException("--lengths: each length must be 2 .. 8192");
        string modelDir = Path.Combine(Path.GetTempPath(), "neurontrace-long-prompt-model");
        if (!File.Exists(Path.Combine(modelDir, "config.json"))) HfFolderWriter.Write(RandomWeights(Shape, 7), modelDir, null);
        string outDir = Path.Combine(root, "bench", "results", "long-prompt");
        Directory.CreateDirectory(outDir);
        Console.WriteLine($"long prompts: RelP, all sites, batch 1, synthetic dim {Shape.Dim} × {Shape.Layers} layers, {Shape.Heads} heads; load {Load()}");
        Console.WriteLine($"PyTorch: eager = eager attention (the pattern kept for the backward); {efficient} = " + (efficient == "sdpa"
            ? "torch.nn.functional.scaled_dot_product_attention"
            : "chunked attention, SDPA stand-in (torch 1.13 has no SDPA): blocks of 256 queries, each under torch.utils.checkpoint"));
        Console.WriteLine($"{"T",6} {"ours s",9} {"ours RSS",10} {"plan",10} {"plan/RSS",9} {"ckpt s",9} {"ckpt RSS",10} {"ckpt plan",10} {"eager s",9} {"eager RSS",10} {efficient + " s",10} {efficient + " RSS",12}");
        var rows = new List<Dictionary<string, object?>>();
        foreach (int t in lengths)
        {
            var ours = Child(root, modelDir, t, checkpoint: false);
            var ckpt = Child(root, modelDir, t, checkpoint: true);
            var torch = torchThere && t <= torchMax ? Torch(root, modelDir, t, "eager") : null;
            var lean = torchThere && t <= efficientMax ? Torch(root, modelDir, t, efficient) : null;
            double rss = ours.GetProperty("peak_rss_mb").GetDouble(), plan = ours.GetProperty("plan_mb").GetDouble();
            double crss = ckpt.GetProperty("peak_rss_mb").GetDouble(), cplan = ckpt.GetProperty("plan_mb").GetDouble(), cs = ckpt.GetProperty("seconds").GetDouble();
            double? ts = torch?.GetProperty("seconds_per_iter").GetDouble(), trss = torch?.GetProperty("peak_rss_mb").GetDouble();
            double? es = lean?.GetProperty("seconds_per_iter").GetDouble(), erss = lean?.GetProperty("peak_rss_mb").GetDouble();
            rows.Add(new()
            {
                ["T"] = t, ["seconds"] = ours.GetProperty("seconds").GetDouble(), ["peak_rss_mb"] = rss, ["plan_mb"] = plan,
                ["plan_dominant"] = ours.GetProperty("plan_dominant").GetString(),
                ["checkpoint_seconds"] = cs, ["checkpoint_peak_rss_mb"] = crss, ["checkpoint_plan_mb"] = cplan,
                ["torch_eager_seconds"] = ts, ["torch_eager_peak_rss_mb"] = trss,
                [$"torch_{efficient}_seconds"] = es, [$"torch_{efficient}_peak_rss_mb"] = erss,
                ["load"] = Load(),
            });
            Console.WriteLine($"{t,6} {ours.GetProperty("seconds").GetDouble(),9:F2} {rss,8:F0}MB {plan,8:F0}MB {plan / rss,9:F2} " +
                              $"{cs,9:F2} {crss,8:F0}MB {cplan,8:F0}MB " +
                              $"{Seconds(ts),9} {Mb(trss),10} {Seconds(es),10} {Mb(erss),12}");
        }
        if (rows.Count >= 2)
        {
            var (a, b) = (rows[^2], rows[^1]);
            double ratio = (double)b["peak_rss_mb"]! / (double)a["peak_rss_mb"]!, lenRatio = (int)b["T"]! / (double)(int)a["T"]!;
            // Activations grow with T; weights and runtime do not: the growth above the T-independent part is the test.
            Console.WriteLine($"peak RSS T={a["T"]}: {a["peak_rss_mb"]:F0} MB, T={b["T"]}: {b["peak_rss_mb"]:F0} MB; ratio {ratio:F2} for a {lenRatio:F1}× longer prompt " +
                              $"(quadratic would be ~{lenRatio * lenRatio:F1}× on the activations)");
            double cratio = (double)b["checkpoint_peak_rss_mb"]! / (double)a["checkpoint_peak_rss_mb"]!;
            Console.WriteLine($"checkpointed: T={a["T"]}: {a["checkpoint_peak_rss_mb"]:F0} MB, T={b["T"]}: {b["checkpoint_peak_rss_mb"]:F0} MB; ratio {cratio:F2}; " +
                              $"at T={b["T"]} {(double)b["checkpoint_peak_rss_mb"]! / (double)b["peak_rss_mb"]!:F2}× the stored run's peak, {(double)b["checkpoint_seconds"]! / (double)b["seconds"]!:F2}× its time");
        }
        // The plan beside the measurement at the two longest lengths: the "within 20%" check of the memory plan.
        foreach (var r in rows.TakeLast(2))
        {
            double rss = (double)r["peak_rss_mb"]!, plan = (double)r["plan_mb"]!, crss = (double)r["checkpoint_peak_rss_mb"]!, cplan = (double)r["checkpoint_plan_mb"]!;
            Console.WriteLine($"plan vs measured, T={r["T"]}: stored {plan:F0} MB planned / {rss:F0} MB peak RSS = {plan / rss:F2}; checkpointed {cplan:F0} / {crss:F0} = {cplan / crss:F2}; " +
                              $"within 20%: {(Math.Abs(plan / rss - 1) <= 0.2 && Math.Abs(cplan / crss - 1) <= 0.2 ? "yes" : "NO")}");
        }
        if (!torchThere) Console.WriteLine("PyTorch: /usr/bin/python3 has no torch here, its columns are empty.");
        else if (efficient == "chunked") Console.WriteLine("PyTorch SDPA: torch.nn.functional.scaled_dot_product_attention is not in this torch (2.0+): chunked attention stands in for it.");
        File.WriteAllText(Path.Combine(outDir, "results.json"), JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
        PlotAll(outDir, rows, efficient, efficientName);
        Console.WriteLine($"wrote {outDir}");
        return 0;
    }

    /// <summary><c>bench long-prompt-one MODEL T [checkpoint]</c>: one attribution in this process; one JSON line.</summary>
    public static int One(string modelDir, int t, bool checkpoint = false)
    {
        var loaded = NeuronTrace.Formats.ModelLoader.Load(modelDir);
        var c = loaded.Config;
        var rng = new Random(t);
        var clean = Enumerable.Range(0, t).Select(i => i == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
        var patch = (int[])clean.Clone();
        patch[t / 2] = (patch[t / 2] + 1 - 3) % (c.VocabSize - 3) + 3;
        var task = new PromptTask("long", [new PromptPair(1, clean, patch, 5, 9)]);
        var plan = MemoryPlan.ForAttribution(c, 1, t, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, checkpoint: checkpoint);
        using var llama = new Llama(loaded.Weights, CpuBackend.Instance);
        var watch = Stopwatch.StartNew();
        var scores = Attributor.Score(llama, task, new AttributionOptions { Method = AttributionMethod.RelP, Sites = NodeSites.All, BatchSize = 1, CheckpointLayers = checkpoint }, null);
        double seconds = watch.Elapsed.TotalSeconds;
        Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["T"] = t, ["seconds"] = seconds, ["peak_rss_mb"] = PeakRssMb(), ["plan_mb"] = plan.TotalBytes / 1048576.0, ["plan_dominant"] = plan.Dominant,
        }));
        return 0;
    }

    static double PeakRssMb()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0;
        throw new InvalidOperationException("no VmHWM in /proc/self/status");
    }

    static JsonElement Child(string root, string modelDir, int t, bool checkpoint)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        if (!Path.GetFileNameWithoutExtension(Environment.ProcessPath!).StartsWith("NeuronTrace.Bench", StringComparison.Ordinal))
            psi.ArgumentList.Add(typeof(LongPromptBench).Assembly.Location);   // run as `dotnet NeuronTrace.Bench.dll`
        foreach (var a in new[] { "long-prompt-one", modelDir, t.ToString(CultureInfo.InvariantCulture) }) psi.ArgumentList.Add(a);
        if (checkpoint) psi.ArgumentList.Add("checkpoint");
        return RunJson(psi, $"long-prompt-one {t}")!.Value;
    }

    static bool TorchAvailable()
    {
        var psi = new ProcessStartInfo("/usr/bin/python3", "-c \"import torch\"") { RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.ExitCode == 0;
    }

    static bool TorchHasSdpa()
    {
        var psi = new ProcessStartInfo("/usr/bin/python3", "-c \"import sys, torch.nn.functional as F; sys.exit(0 if hasattr(F, 'scaled_dot_product_attention') else 1)\"") { RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        p.WaitForExit();
        return p.ExitCode == 0;
    }

    static string Seconds(double? s) => s is null ? "-" : s.Value.ToString("F2", CultureInfo.InvariantCulture);
    static string Mb(double? mb) => mb is null ? "-" : $"{mb:F0}MB";

    static JsonElement? Torch(string root, string modelDir, int t, string attention)
    {
        var psi = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root };
        foreach (var a in new[] { Path.Combine(root, "bench", "torch_attribution.py"), "--model", modelDir, "--batch", "1", "--seq", t.ToString(CultureInfo.InvariantCulture),
                     "--iters", "1", "--warmup", "0", "--method", "relp", "--attention", attention })
            psi.ArgumentList.Add(a);
        try { return RunJson(psi, $"torch_attribution.py --seq {t} --attention {attention}"); }
        catch (InvalidOperationException e) { Console.Error.WriteLine($"  PyTorch {attention} at T={t}: {e.Message}"); return null; }
    }

    static JsonElement? RunJson(ProcessStartInfo psi, string what)
    {
        using var p = Process.Start(psi)!;
        var errTask = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"{what} failed: {errTask.Result.Trim().Split('\n').LastOrDefault()}");
        var line = stdout.Split('\n').Last(l => l.TrimStart().StartsWith('{'));
        return JsonDocument.Parse(line).RootElement.Clone();
    }

    static void PlotAll(string dir, List<Dictionary<string, object?>> rows, string efficient, string efficientName)
    {
        double[] x = rows.Select(r => (double)(int)r["T"]!).ToArray();
        double?[] Col(string key) => rows.Select(r => (double?)r[key]).ToArray();
        Plot(Path.Combine(dir, "memory.svg"), "peak memory vs prompt length (RelP, all sites, batch 1, CPU)", "peak RSS (MB)", x,
            [("NeuronTrace measured", Col("peak_rss_mb")), ("NeuronTrace plan", Col("plan_mb")),
             ("checkpointed measured", Col("checkpoint_peak_rss_mb")), ("checkpointed plan", Col("checkpoint_plan_mb")),
             ("PyTorch eager", Col("torch_eager_peak_rss_mb")), (efficientName, Col($"torch_{efficient}_peak_rss_mb"))]);
        Plot(Path.Combine(dir, "time.svg"), "attribution time vs prompt length (RelP, all sites, batch 1, CPU)", "seconds", x,
            [("NeuronTrace", Col("seconds")), ("checkpointed", Col("checkpoint_seconds")), ("PyTorch eager", Col("torch_eager_seconds")),
             (efficientName, Col($"torch_{efficient}_seconds"))]);
    }

    static void Plot(string path, string title, string yLabel, double[] x, (string Name, double?[] Y)[] series)
    {
        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        for (int i = 0; i < series.Length; i++)
        {
            var keep = Enumerable.Range(0, x.Length).Where(j => series[i].Y[j] is not null).ToArray();
            if (keep.Length == 0) continue;
            var s = plot.Add.Scatter(keep.Select(j => x[j]).ToArray(), keep.Select(j => series[i].Y[j]!.Value).ToArray(), palette.GetColor(i));
            s.LegendText = series[i].Name;
        }
        plot.Title(title);
        plot.XLabel("prompt length T (tokens)");
        plot.YLabel(yLabel);
        plot.ShowLegend(ScottPlot.Alignment.UpperLeft);
        plot.SaveSvg(path, 900, 600);
    }

    static string Load() => File.ReadAllText("/proc/loadavg").Split(' ')[0];

    /// <summary>normal(0, 0.02) weights, norms 1: the synthetic model's random weights.</summary>
    static LlamaWeights RandomWeights(LlamaConfig c, int seed)
    {
        var rng = new Random(seed);
        float[] W(long n) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(0.02 * Gauss(rng)); return a; }
        float[] Ones(int n) { var a = new float[n]; Array.Fill(a, 1f); return a; }
        return new LlamaWeights
        {
            Config = c, TokenEmbedding = W((long)c.VocabSize * c.Dim), FinalNorm = Ones(c.Dim), Classifier = W((long)c.VocabSize * c.Dim),
            Layers = Enumerable.Range(0, c.Layers).Select(_ => new LayerWeights
            {
                AttnNorm = Ones(c.Dim), FfnNorm = Ones(c.Dim), Wq = W((long)c.Dim * c.Dim), Wk = W((long)c.KvDim * c.Dim), Wv = W((long)c.KvDim * c.Dim),
                Wo = W((long)c.Dim * c.Dim), W1 = W((long)c.HiddenDim * c.Dim), W2 = W((long)c.Dim * c.HiddenDim), W3 = W((long)c.HiddenDim * c.Dim),
            }).ToArray(),
        };
    }

    static double Gauss(Random r) => Math.Sqrt(-2 * Math.Log(1 - r.NextDouble())) * Math.Cos(2 * Math.PI * r.NextDouble());
}
