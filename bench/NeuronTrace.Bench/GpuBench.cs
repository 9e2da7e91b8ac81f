using System.Diagnostics;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Bench;

/// <summary>
/// <c>gpu-bench (--shape llama3-8b [--layers L] | MODEL) [--batch N] [--seq T] [--passes P] [--math bf16|tf32|fp32]</c>:
/// the GPU attribution benchmark. One RelP attribution task (all sites, one batch of N pairs of T tokens, scores read
/// back at its end) timed P times after warm-up: median and best; then one more pass with every op's range timed by
/// CUDA events on the stream (no host waits between ops), printed per op with its declared GFLOP and bytes, achieved
/// TFLOP/s and GB/s and the roofline (H100: 989 TFLOP/s bf16, 3.35 TB/s); the host's share of the pass, launch, sync
/// and copy counts per pass and the device memory high-water mark. Last, one JSON line (what gpu-all.sh puts beside
/// PyTorch's). With --shape the weights are random bf16 made in this process: no 16 GB file to write or read.
/// </summary>
static class GpuBench
{
    public static int Run(string[] args)
    {
        string? shape = GpuPlan.Option(args, "--shape");
        string? model = null;
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i].StartsWith("--")) i++;   // every option takes a value
            else model ??= args[i];
        }
        if ((shape is null) == (model is null)) throw new ArgumentException("gpu-bench: give a model path or --shape llama3-8b (one of them)");
        int batch = GpuPlan.IntOption(args, "--batch", 8, 1, 256), seq = GpuPlan.IntOption(args, "--seq", 64, 2, 8192);
        int passes = GpuPlan.IntOption(args, "--passes", 10, 1, 1000);
        var precision = (GpuPlan.Option(args, "--math") ?? "bf16") switch
        {
            "bf16" => GemmPrecision.Bf16, "tf32" => GemmPrecision.Tf32, "fp32" => GemmPrecision.Fp32,
            var m => throw new ArgumentException($"--math '{(m.Length <= 40 ? m : m[..40] + "...")}': expected bf16, tf32 or fp32"),
        };

        // The GPU first: a machine without one fails in a second, not after making 16 GB of weights.
        using var cuda = CudaBackend.TryCreate(out string why, precision) ?? throw new InvalidOperationException("gpu-bench: no GPU: " + why);
        var w = Stopwatch.StartNew();
        LlamaWeights weights;
        string name;
        if (shape is not null)
        {
            var config = GpuPlan.Shape(shape);
            config = config with { Layers = GpuPlan.IntOption(args, "--layers", config.Layers, 1, 256) };
            weights = RandomWeights.Bf16(config, seed: 0);
            name = $"{shape} ({config.Layers} layers, random bf16 weights)";
        }
        else
        {
            weights = ModelLoader.Load(model!).Weights;
            name = Path.GetFileName(model!.TrimEnd('/'));
        }
        Console.WriteLine($"gpu-bench: weights ready in {w.Elapsed.TotalSeconds:F1} s");

        var device = cuda.Device as CudaDevice ?? (cuda.Device as GraphReplayRuntime)?.Inner as CudaDevice
            ?? throw new InvalidOperationException("gpu-bench: the backend's device is not a CudaDevice");
        w.Restart();
        using var llama = new Llama(weights, cuda);
        Console.WriteLine($"gpu-bench: uploaded in {w.Elapsed.TotalSeconds:F1} s; {device}");
        var c = weights.Config;
        var task = RandomTask(c, batch, seq);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = batch };

        bool graphs = cuda.Device is GraphReplayRuntime;
        for (int i = 0; i < (graphs ? 3 : 1); i++) Attributor.Score(llama, task, options);   // warm-up (with graphs: seen, captured, replayed)
        var times = new List<double>();
        long launches0 = device.Launches, syncs0 = device.HostSyncs, down0 = device.Downloads, pinned0 = device.PinnedDownloads, copyStream0 = device.CopyStreamDownloads, up0 = device.Uploads;
        long toHost0 = device.BytesToHost, toDevice0 = device.BytesToDevice, graphs0 = device.GraphLaunches;
        device.MemoryPool.ResetPeak();
        for (int i = 0; i < passes; i++)
        {
            w.Restart();
            Attributor.Score(llama, task, options);   // ends with the score readout: the host has the scores
            times.Add(w.Elapsed.TotalMilliseconds);
        }
        times.Sort();
        double median = times[times.Count / 2], best = times[0];
        Console.WriteLine($"attribution pass ({name}, RelP, batch {batch} x {seq}, all {options.Sites.Count} sites, {precision}, graphs {(graphs ? "on" : "off")}), {passes} passes with the score readout: median {median:F1} ms, best {best:F1} ms, {batch * 1e3 / median:F2} pairs/s");
        Console.WriteLine($"per pass: {(device.Launches - launches0) / (double)passes:F0} launches ({(device.GraphLaunches - graphs0) / (double)passes:F0} graph launches), {(device.HostSyncs - syncs0) / (double)passes:F1} host syncs, "
            + $"{(device.Downloads - down0) / (double)passes:F1} downloads ({(device.PinnedDownloads - pinned0) / (double)passes:F1} pinned, {(device.CopyStreamDownloads - copyStream0) / (double)passes:F1} of them on the copy stream, {(device.BytesToHost - toHost0) / 1e6 / passes:F1} MB), "
            + $"{(device.Uploads - up0) / (double)passes:F1} uploads ({(device.BytesToDevice - toDevice0) / 1e6 / passes:F2} MB); device memory high-water mark {device.MemoryPool.PeakUsedBytes / 1e9:F2} GB");

        if (graphs) Console.WriteLine("op table: skipped with graphs on (the ops inside a graph launch have no ranges of their own); run with NEURONTRACE_CUDA_GRAPHS unset for it");
        else PrintEventTable(device, () => Attributor.Score(llama, task, options), median);

        Console.WriteLine($"{{\"bench\": \"neurontrace\", \"model\": \"{name}\", \"device\": \"{device.Name}\", \"math\": \"{precision.ToString().ToLowerInvariant()}\", \"graphs\": {(graphs ? "true" : "false")}, \"batch\": {batch}, \"seq\": {seq}, \"passes\": {passes}, \"median_ms\": {median:F2}, \"best_ms\": {best:F2}, \"pairs_per_s\": {batch * 1e3 / median:F2}, \"peak_device_gb\": {device.MemoryPool.PeakUsedBytes / 1e9:F2}}}");
        return 0;
    }

    /// <summary>One pass with every range event-timed: the ops by GPU time, with the roofline of their declared work.</summary>
    static void PrintEventTable(CudaDevice device, Action pass, double medianMs)
    {
        device.ReadRangeTimes();   // forget anything timed before
        device.TimeRanges = true;
        var w = Stopwatch.StartNew();
        pass();
        double wallMs = w.Elapsed.TotalMilliseconds;
        // The per-layer ranges (Llama's "layer N forward") hold the ops; what is left of them is time between ops: one row.
        var times = device.ReadRangeTimes()
            .GroupBy(kv => kv.Key.StartsWith("layer ", StringComparison.Ordinal) ? "(in layers, between ops)" : kv.Key)
            .ToDictionary(g => g.Key, g => g.Aggregate(default(RangeTime), (a, kv) => new RangeTime(
                a.Calls + kv.Value.Calls, a.InclusiveMs + kv.Value.InclusiveMs, a.ExclusiveMs + kv.Value.ExclusiveMs, a.Flops + kv.Value.Flops, a.Bytes + kv.Value.Bytes)));
        device.TimeRanges = false;
        double gpuMs = times.Where(kv => kv.Key != "(in layers, between ops)").Sum(kv => kv.Value.ExclusiveMs);
        Console.WriteLine($"op table (one pass, CUDA events around every op on the stream, no host waits between ops): {wallMs:F1} ms wall (median untimed {medianMs:F1} ms), in ops {gpuMs:F1} ms, the rest (host gaps, launch latency) {Math.Max(0, wallMs - gpuMs):F1} ms");
        Console.WriteLine($"{"op",-26} {"calls",6} {"GPU ms",9} {"% pass",7} {"GFLOP",9} {"GB",8} {"TFLOP/s",8} {"GB/s",7} {"roof ms",8} {"% roof",7}");
        foreach (var (op, t) in times.OrderByDescending(kv => kv.Value.ExclusiveMs))
        {
            double roofMs = 1e3 * Math.Max(t.Flops / RecordingDeviceRuntime.H100Bf16Flops, t.Bytes / RecordingDeviceRuntime.H100Bytes);
            double s = Math.Max(t.ExclusiveMs, 1e-9) / 1e3;
            Console.WriteLine($"{op,-26} {t.Calls,6} {t.ExclusiveMs,9:F3} {100 * t.ExclusiveMs / Math.Max(gpuMs, 1e-9),6:F1}% {t.Flops / 1e9,9:F1} {t.Bytes / 1e9,8:F3} {t.Flops / s / 1e12,8:F1} {t.Bytes / s / 1e9,7:F0} {roofMs,8:F3} {100 * roofMs / Math.Max(t.ExclusiveMs, 1e-9),6:F1}%");
        }
    }

    /// <summary>N pairs of T random tokens (BOS first), the patch prompt one token changed mid-prompt; answers 5 and 7.</summary>
    public static PromptTask RandomTask(LlamaConfig c, int batch, int seq)
    {
        var rng = new Random(0);
        var pairs = Enumerable.Range(0, batch).Select(i =>
        {
            var clean = Enumerable.Range(0, seq).Select(t => t == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[seq / 2] = (patch[seq / 2] + 1) % (c.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 5, 7);
        }).ToList();
        return new PromptTask("random", pairs);
    }
}
