using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>plan</c>: the predicted peak memory of an attribution run, from the model's shape alone (no weights read).</summary>
public static class PlanCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var tokens = new Option<int>("--tokens") { Description = "Prompt length in tokens (1 .. the model's context).", Required = true };
        var batch = new Option<int>("--batch") { Description = "Prompt pairs per forward/backward (1 .. 65536).", DefaultValueFactory = _ => 32 };
        var method = new Option<string>("--method") { Description = "atp, ig, ig-inputs or relp.", DefaultValueFactory = _ => "relp" };
        var sites = TaskOptions.Sites();
        var baseline = new Option<string>("--baseline") { Description = "patch (a second forward is held) or zero/mean.", DefaultValueFactory = _ => "patch" };
        var cmd = new Command("plan", "Predict the peak memory of an attribution run and what dominates it, without loading the weights.")
        {
            model, device, tokens, batch, method, sites, baseline,
        };
        cmd.SetAction(r =>
        {
            int t = r.GetValue(tokens), b = r.GetValue(batch);
            if (b is < 1 or > 65536) throw new UsageException("--batch must be 1 .. 65536");
            var m = MethodNames.Parse(r.GetValue(method)!);
            var siteList = NodeSites.ParseList(r.GetValue(sites)!);
            bool patch = r.GetValue(baseline) switch
            {
                "patch" => true, "zero" or "mean" => false,
                var x => throw new UsageException($"unknown --baseline \"{x}\" (patch, zero or mean)"),
            };
            bool cpu = r.GetValue(device) switch
            {
                "cpu" => true, "cuda" => false,
                var x => throw new UsageException($"unknown --device \"{x}\" (cpu or cuda)"),
            };
            var config = ModelShape.Read(r.GetValue(model));
            if (t < 1 || t > config.MaxSeqLen) throw new UsageException($"--tokens must be 1 .. {config.MaxSeqLen} (the model's context)");
            MemoryPlan Plan(int n) => MemoryPlan.ForAttribution(config, n, t, siteList, m, patch, weightCopies: cpu ? 2 : 1);
            var plan = Plan(b);
            Console.WriteLine(plan.Describe());
            if (!cpu)
            {
                Console.WriteLine("  available: not queried for cuda (the plan is per device; compare with the card's memory)");
                return 0;
            }
            long available = MemoryPlan.AvailableCpuBytes();
            int fits = MemoryPlan.LargestFittingBatch(Plan, Math.Max(b, 1), available);
            Console.WriteLine($"  available on the cpu             {MemoryPlan.Gib(available),12}");
            Console.WriteLine(plan.Refusal(available, fits) is { } refusal ? $"does not fit: {refusal}" : "fits");
            return 0;
        });
        return cmd;
    }
}
