using System.Diagnostics;
using System.Globalization;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Bench;

/// <summary>
/// <c>gpu-long-prompt [--shape llama3-8b] [--layers L] [--lengths 8192,2048] [--batch 1] [--passes 2] [--record [--free-gib 79]]</c>:
/// the GPU long-prompt benchmark (issue 14). RelP attribution, all sites, patch baseline, one batch of N pairs per
/// length, on 8B-shaped random bf16 weights made in this process once for every length. Per length, as trace and
/// attribute do before loading: <see cref="MemoryPlan.FitAttribution"/> against the device's free memory chooses the
/// batch and activation checkpointing (printed with the plan); then one warm-up and P timed passes: median ms per
/// pass, the device pool's high-water mark beside the plan's total, and one JSON line for gpu-all.sh's comparison
/// with PyTorch SDPA. --record runs the same code on <see cref="RecordingDeviceRuntime"/> (address space only, nothing
/// executes: no GPU needed; its free memory is --free-gib) so the path and its peak are checked on a CPU.
/// </summary>
static class GpuLongPrompt
{
    public static int Run(string[] args)
    {
        var config = GpuPlan.Shape(GpuPlan.Option(args, "--shape") ?? "llama3-8b");
        config = config with { Layers = GpuPlan.IntOption(args, "--layers", config.Layers, 1, 256) };
        string lengthsText = GpuPlan.Option(args, "--lengths") ?? "8192";
        int[] lengths = lengthsText.Split(',').Select(s =>
            int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out int t) && t >= 2 && t <= config.MaxSeqLen ? t
                : throw new ArgumentException($"--lengths '{(lengthsText.Length <= 40 ? lengthsText : lengthsText[..40] + "...")}': each length must be an integer in [2, {config.MaxSeqLen}]")).ToArray();
        int batch = GpuPlan.IntOption(args, "--batch", 1, 1, 256), passes = GpuPlan.IntOption(args, "--passes", 2, 1, 100);
        bool record = args.Contains("--record");
        int freeGib = GpuPlan.IntOption(args, "--free-gib", 79, 1, 1 << 16);

        RecordingDeviceRuntime? recording = record ? new RecordingDeviceRuntime { FreeBytes = (long)freeGib << 30 } : null;
        using var backend = recording is not null ? new CudaBackend(recording, ownsDevice: false, GemmPrecision.Bf16)
            : CudaBackend.TryCreate(out string why, GemmPrecision.Bf16) ?? throw new InvalidOperationException("gpu-long-prompt: no GPU: " + why + " (--record runs it on the recording runtime)");
        var device = backend.Device;
        DeviceMemoryPool pool = recording?.Pool ?? (device as CudaDevice)?.MemoryPool
            ?? throw new InvalidOperationException("gpu-long-prompt: the backend's device is neither a CudaDevice nor the recording runtime (unset NEURONTRACE_CUDA_GRAPHS)");
        // Free memory before the weights go up: what trace and attribute compare the plan (weights included) with.
        long? free = device.FreeBytes;
        string where = $"free on {(record ? "the recording runtime (--free-gib)" : "cuda:0")}";
        var w = Stopwatch.StartNew();
        using var llama = record ? Llama.WithUninitializedWeights(config, backend) : new Llama(RandomWeights.Bf16(config, seed: 0), backend);
        long weightBytes = pool.UsedBytes;
        Console.WriteLine($"gpu-long-prompt: {config.Layers} layers of llama3-8b width, random bf16 weights ({weightBytes / 1e9:F2} GB on the device) ready in {w.Elapsed.TotalSeconds:F1} s; {device.Name}; "
            + $"{(free is long f ? $"{MemoryPlan.Gib(f)} free before the weights" : "free memory unknown")}");
        foreach (int t in lengths)
        {
            var fit = MemoryPlan.FitAttribution(config, batch, t, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, cpu: false, free, where);
            if (fit.Refusal is { } refusal)
            {
                Console.WriteLine($"T={t}: refused by the plan: {refusal}");
                Console.WriteLine($"{{\"bench\": \"neurontrace-long-prompt\", \"seq\": {t}, \"batch\": {batch}, \"refused\": true}}");
                continue;
            }
            var plan = MemoryPlan.ForAttribution(config, fit.Batch, t, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, weightCopies: 1, checkpoint: fit.Checkpoint);
            Console.WriteLine(plan.Describe());
            if (fit.Note is { } note) Console.WriteLine(note);
            var task = GpuBench.RandomTask(config, fit.Batch, t);
            var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = NodeSites.All, BatchSize = fit.Batch, CheckpointLayers = fit.Checkpoint };
            Attributor.Score(llama, task, options);   // warm-up: kernels loaded, pool blocks cut to this length's sizes
            pool.ResetPeak();
            var times = new List<double>();
            for (int i = 0; i < passes; i++)
            {
                w.Restart();
                Attributor.Score(llama, task, options);   // ends with the scores on the host
                times.Add(w.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            double median = times[times.Count / 2];
            long peak = pool.PeakUsedBytes;
            // The plan's weights item counts 4 bytes a parameter where the device holds bf16 matrices: compared without it too.
            long planNoWeights = plan.TotalBytes - plan.Items.Single(i => i.Item == "weights").Bytes;
            Console.WriteLine($"T={t}: RelP, all sites, batch {fit.Batch}, checkpointing {(fit.Checkpoint ? "on" : "off")}: median {median:F1} ms per pass over {passes} ({(record ? "recording runtime: nothing ran, times are host bookkeeping" : "measured")}); "
                + $"device high-water {peak / 1e9:F2} GB (weights {weightBytes / 1e9:F2} GB), plan {plan.TotalBytes / 1e9:F2} GB; without weights: measured {(peak - weightBytes) / 1e9:F2} GB, plan {planNoWeights / 1e9:F2} GB, plan/measured {planNoWeights / (double)Math.Max(1, peak - weightBytes):F2}");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{{\"bench\": \"neurontrace-long-prompt\", \"device\": \"{device.Name}\", \"seq\": {t}, \"batch\": {fit.Batch}, \"checkpoint\": {(fit.Checkpoint ? "true" : "false")}, \"passes\": {passes}, \"median_ms\": {median:F1}, \"best_ms\": {times[0]:F1}, \"peak_device_gb\": {peak / 1e9:F3}, \"weights_gb\": {weightBytes / 1e9:F3}, \"plan_gb\": {plan.TotalBytes / 1e9:F3}, \"recorded\": {(record ? "true" : "false")}}}"));
        }
        return 0;
    }
}
