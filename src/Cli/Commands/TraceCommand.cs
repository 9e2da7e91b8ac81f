using System.CommandLine;
using System.Globalization;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>trace</c>: the main job, from a task to a run folder of scores, circuits, a k sweep and a plot.</summary>
public static class TraceCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var task = TaskOptions.Task();
        var method = new Option<string>("--method") { Description = "Attribution method(s), comma-separated: relp, atp, ig, ig-inputs. Each gets its own sweep.", DefaultValueFactory = _ => "relp" };
        var sites = TaskOptions.Sites();
        var output = new Option<string?>("--out", "-o") { Description = "Run folder to create (default: runs/trace-TASK-TIME). Must not exist unless --force." };
        var force = new Option<bool>("--force") { Description = "Replace an existing run folder (only an empty folder or one written by trace)." };
        var train = new Option<int?>("--train") { Description = "Examples used for attribution; the rest evaluate the circuits (default: the first half)." };
        var kPoints = new Option<int>("--k-points") { Description = "Number of log-spaced k values from 1 to all nodes.", DefaultValueFactory = _ => 24 };
        var steps = new Option<int>("--steps") { Description = "IG steps.", DefaultValueFactory = _ => 10 };
        var relpAttention = TaskOptions.RelPAttention();
        var target = new Option<double>("--target") { Description = "Faithfulness a reported circuit must reach.", DefaultValueFactory = _ => 0.8 };
        var masks = new Option<int>("--masks-per-forward") { Description = "Circuits evaluated per batched forward.", DefaultValueFactory = _ => 8 };
        var allLengths = new Option<bool>("--all-lengths") { Description = "Use every example. By default only the examples of the most common token length are kept, so each position from the end is the same token slot in every prompt (the reference evaluation's practice); with mixed lengths the per-position ablation means mix different tokens." };
        var shard = ShardRun.Shard();
        var shardScores = new Option<string?>("--scores") { Description = "With --shard: the merged attribution (`neurontrace merge` of the attribution shards); the shard then evaluates its slice of the sweep's circuits." };
        var checkpointEvery = ShardRun.CheckpointEvery();
        var seed = new Option<int>("--seed") { Description = "Seed of the random-circuit control (the same seed draws the same random nodes in every run).", DefaultValueFactory = _ => 0 };
        var cmd = new Command("trace", """
            Trace circuits on a task: score every node with the attribution method (default RelP), take the top-k nodes
            of each site as a circuit, and measure by mean ablation on held-out examples how much of the behaviour the
            circuit alone keeps (faithfulness: 1 = all of it) and how much is left when it is removed (completeness:
            0 = nothing), for k from 1 to all nodes, beside random circuits of the same size. The metric is the logit of
            the clean answer minus that of the counterfactual answer. Writes a run folder (scores/, circuits/,
            sweep.csv, summary.json, sweep_SITE.png) and prints the k each site needs to reach the target faithfulness.
            """)
        {
            model, device, task, method, sites, output, force, train, kPoints, steps, relpAttention, target, masks, allLengths, seed, shard, shardScores, checkpointEvery,
        };
        cmd.SetAction(r =>
        {
            var methods = MethodNames.ParseList(r.GetValue(method)!);
            var siteList = NodeSites.ParseList(r.GetValue(sites)!);
            if (r.GetValue(kPoints) < 2) throw new UsageException("--k-points must be at least 2");
            if (r.GetValue(steps) < 1) throw new UsageException("--steps must be at least 1");
            if (r.GetValue(masks) < 1) throw new UsageException("--masks-per-forward must be at least 1");
            if (r.GetValue(train) is < 1) throw new UsageException("--train must be at least 1");
            double targetValue = r.GetValue(target);
            if (!(double.IsFinite(targetValue) && targetValue > 0 && targetValue <= 1))
                throw new UsageException($"--target {targetValue.ToString(CultureInfo.InvariantCulture)}: a faithfulness target must be in (0, 1]");
            var relpRules = TaskOptions.RelPRules(r.GetValue(relpAttention)!);
            var loaded = CommonOptions.LoadModel(r.GetValue(model));
            string taskPath = TaskOptions.TaskPath(r.GetValue(task));
            var t = PromptTask.Load(taskPath, loaded.RequireTokenizer());
            if (!r.GetValue(allLengths)) t = t.OfMostCommonLength();
            if (!t.IsPaired) throw new ModelFormatException(taskPath, "trace needs paired prompts (patch_prefix and patch_answer on every line)");
            var traceOptions = new TraceOptions
            {
                Methods = methods, Sites = siteList, TrainExamples = r.GetValue(train), KPoints = r.GetValue(kPoints),
                IgSteps = r.GetValue(steps), RelPRules = relpRules,
                TargetFaithfulness = r.GetValue(target), MasksPerForward = r.GetValue(masks), Seed = r.GetValue(seed),
            };
            if (r.GetValue(shard) is { } shardText)
            {
                string shardDir = r.GetValue(output) ?? throw new UsageException("--shard needs --out (the shard folder)");
                int every = ShardRun.CheckedCheckpointEvery(r.GetValue(checkpointEvery));
                using var shardModel = new Llama(loaded.Weights, CommonOptions.OpenBackend(r.GetValue(device)!));
                return ShardRun.Trace(shardModel, loaded, t, taskPath, traceOptions, r.GetValue(relpAttention)!, r.GetValue(allLengths),
                    shardText, r.GetValue(shardScores), shardDir, every);
            }
            if (r.GetValue(shardScores) is not null) throw new UsageException("--scores needs --shard (it runs one shard of a sharded sweep)");
            string outDir = r.GetValue(output) ?? Path.Combine("runs", $"trace-{t.Name}-{DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}");
            string CheckOut() => OutputPaths.CheckFolder(outDir, r.GetValue(force), "a NeuronTrace run folder", OutputPaths.IsRunFolder,
                [r.GetValue(model), loaded.Path, r.GetValue(task), taskPath]);
            string full = CheckOut();

            Console.Error.WriteLine($"model {loaded.Path} ({loaded.Format}), task {taskPath}: {t.Count} examples, methods {string.Join(",", methods.Select(m => m.Name()))}, sites {string.Join(",", siteList.Select(s => s.Name()))}");
            using var llama = new Llama(loaded.Weights, CommonOptions.OpenBackend(r.GetValue(device)!));
            var result = TraceJob.Run(llama, t, traceOptions, new ProgressBar());

            // Everything is written into a hidden sibling folder first, then renamed: no partly written run folder.
            OutputPaths.WriteFolder(outDir, full, temp =>
            {
                TraceReport.Write(temp, result, loaded, taskPath);
                SweepPlot.SaveAll(temp, result.Sweep, t.Name);
            }, () => CheckOut());

            Console.WriteLine($"\n{t.Name}: {result.Train.Count} examples attributed, {result.Eval.Count} evaluated; clean logit difference {result.CleanMetric:F3}; {result.Elapsed.TotalSeconds:F1} s");
            Console.WriteLine($"circuits reaching faithfulness {r.GetValue(target):P0} (top-k by |score|; random = k random nodes):");
            Tables.Print(["site", "method", "nodes", "k", "fraction", "faithful", "complete", "random faithful"],
                result.Circuits.Select(c => (IReadOnlyList<string>)(c.AtTarget is { } p
                    ? [c.Site.Name(), c.Method.Name(), c.TotalNodes.ToString(), p.K.ToString(), $"{(double)p.K / c.TotalNodes:P2}", $"{p.Faithfulness:F3}", $"{p.Completeness:F3}", $"{p.RandomFaithfulness:F3}"]
                    : [c.Site.Name(), c.Method.Name(), c.TotalNodes.ToString(), "-", "not reached", "-", "-", "-"])));
            Console.WriteLine($"\nwrote {outDir}/ (sweep.csv, sweep_SITE.png, summary.json, circuits/, scores/)");
            return 0;
        });
        return cmd;
    }
}
