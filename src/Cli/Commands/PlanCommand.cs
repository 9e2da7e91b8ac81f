using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>plan</c>: the predicted peak memory of an attribution run, from the model's shape alone (no weights read).</summary>
internal static class PlanCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device(layerSplit: true);
        var tokens = CommonOptions.Int("--tokens", "Prompt length in tokens (at most the model's context).", 0, 1, 1 << 24);
        tokens.Required = true;
        var batch = CommonOptions.Int("--batch", "Prompt pairs per forward/backward.", 32, 1, 4096);
        var method = CommonOptions.Choice("--method", "atp, ig, ig-inputs or relp.", CommonOptions.MethodChoices, () => AttributionMethod.RelP);
        var sites = TaskOptions.Sites();
        var baseline = CommonOptions.Choice("--baseline", "patch (a second forward is held) or zero/mean.",
            [("patch", Baseline.Patch), ("zero", Baseline.Zero), ("mean", Baseline.Mean)], () => Baseline.Patch);
        var memory = CommonOptions.OptionalInt("--device-memory",
            "GiB of free memory to plan against instead of asking the device (e.g. 79 for an 80 GB H100), so a GPU run is planned on a machine without one.", 1, 1 << 20);
        var sae = SaeOptions.Sae();
        var cmd = new Command("plan", "Predict the peak memory of an attribution run and what dominates it, without loading the weights.")
        {
            model, device, tokens, batch, method, sites, baseline, memory, sae,
        };
        cmd.SetAction(r =>
        {
            int t = r.GetValue(tokens), b = r.GetValue(batch);
            var m = r.GetValue(method);
            var siteList = r.GetValue(sites)!;
            bool patch = r.GetValue(baseline) == Baseline.Patch;
            bool cpu = CommonOptions.IsCpu(r.GetValue(device)!);
            var config = ModelShape.Read(r.GetValue(model));
            // As trace and attribute count them: from their configs alone, no SAE weight read.
            long saeBytes = SaeOptions.PlannedBytes(r.GetValue(sae));
            if (t > config.MaxSeqLen) throw new UsageException($"--tokens must be 1 .. {config.MaxSeqLen} (the model's context)");
            if (CudaBackends.Ordinals(r.GetValue(device)!) is { Length: > 1 } gpus)
            {
                if (saeBytes > 0) throw new UsageException($"--sae runs on one device; a model split over GPUs (--device {r.GetValue(device)}) is traced without SAEs");
                if (gpus.Length > config.Layers) throw new UsageException($"--device {r.GetValue(device)}: {gpus.Length} GPUs for a model of {config.Layers} layers; each GPU needs a layer");
                foreach (var (part, n) in MemoryPlan.ForSplitAttribution(config, gpus.Length, b, t, siteList, m, patch).Zip(gpus))
                    Console.WriteLine($"cuda:{n}: " + part.Describe());
                Console.WriteLine("  available: not queried for cuda (the plan is per device; compare each with its card's memory)");
                return 0;
            }
            var plan = MemoryPlan.ForAttribution(config, b, t, siteList, m, patch, weightCopies: cpu ? 2 : 1, saeBytes: saeBytes);
            Console.WriteLine(plan.Describe());
            // A GPU run's scores come back to the host (per position, all layers): trace and attribute refuse when they do not fit there.
            if (!cpu)
            {
                Console.WriteLine($"  {"host memory for the scores",-32} {MemoryPlan.Gib(MemoryPlan.HostScoreBytes(config, t, siteList)),12} ({MemoryPlan.Gib(MemoryPlan.AvailableCpuBytes())} available on this machine)");
                // The SAEs' features are scored on the host beside a GPU run, so their weights are host memory too.
                if (saeBytes > 0) Console.WriteLine($"  {"host memory for the SAE weights",-32} {MemoryPlan.Gib(saeBytes),12}");
            }
            string where = "available on the cpu";
            long available;
            if (r.GetValue(memory) is int gib) (available, where) = ((long)gib << 30, $"given by --device-memory for {r.GetValue(device)}");
            else if (cpu) available = MemoryPlan.AvailableCpuBytes();
            else if (CudaBackends.FreeBytes(r.GetValue(device)!, out string whyNot) is long free) (available, where) = (free, $"free on {r.GetValue(device)}");
            else
            {
                Console.WriteLine($"  free memory on {r.GetValue(device)}: not known ({whyNot})");
                return 0;
            }
            Console.WriteLine($"  {where,-32} {MemoryPlan.Gib(available),12}");
            // What trace and attribute would do: run as asked, lower the batch, checkpoint the layers, or refuse.
            var fit = MemoryPlan.FitAttribution(config, b, t, siteList, m, patch, cpu, available, cpu && r.GetValue(memory) is null ? "available" : where, saeBytes: saeBytes);
            if (fit.Refusal is { } refusal) Console.WriteLine($"does not fit: {refusal}");
            else if (fit.Note is { } note)
            {
                Console.WriteLine($"fits with a change: {note}");
                if (fit.Checkpoint) Console.WriteLine(MemoryPlan.ForAttribution(config, fit.Batch, t, siteList, m, patch, weightCopies: cpu ? 2 : 1, checkpoint: true, saeBytes: saeBytes).Describe());
            }
            else Console.WriteLine("fits");
            return 0;
        });
        return cmd;
    }
}
