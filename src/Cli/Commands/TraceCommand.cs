using System.CommandLine;
using System.Globalization;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Sae;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>trace</c>: the main job, from a task to a run folder of scores, circuits, a k sweep and a plot.</summary>
internal static class TraceCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device(layerSplit: true);
        var task = TaskOptions.Task();
        var method = TaskOptions.Methods("Attribution method(s), comma-separated: relp, atp, ig, ig-inputs. Each gets its own sweep.");
        var sites = TaskOptions.Sites();
        var (output, force) = CommonOptions.Output("Run folder to create (default: runs/trace-TASK-TIME). Must not exist unless --force.",
            "Replace an existing run folder (only an empty folder or one written by trace).");
        var train = CommonOptions.OptionalInt("--train", "Examples used for attribution; the rest evaluate the circuits (default: the first half).", 1, int.MaxValue);
        var kPoints = CommonOptions.Int("--k-points", "Number of log-spaced k values from 1 to all nodes.", 24, 2, 1000);
        var steps = CommonOptions.IgSteps();
        var relpAttention = TaskOptions.RelPAttention();
        var target = new Option<double>("--target") { Description = "Faithfulness a reported circuit must reach, in (0, 1].", DefaultValueFactory = _ => 0.8 };
        target.Validators.Add(v =>
        {
            double x = v.GetValueOrDefault<double>();
            if (!(double.IsFinite(x) && x > 0 && x <= 1)) v.AddError($"--target {CommonOptions.Show(x)}: a faithfulness target must be in (0, 1]");
        });
        var masks = CommonOptions.MasksPerForward();
        var sweepPath = CommonOptions.SweepPathOption();
        var allLengths = new Option<bool>("--all-lengths") { Description = "Use every example. By default only the examples of the most common token length are kept, so each position from the end is the same token slot in every prompt (the reference evaluation's practice); with mixed lengths the per-position ablation means mix different tokens." };
        var sae = SaeOptions.Sae();
        var specialTokens = PromptOptions.SpecialTokens();
        var fromSummary = new Option<string?>("--from-summary") { Description = "Reproduce a run: take the model, task and every option that changes a number from its summary.json (the model and task must have the recorded sha256); only --out, --force and --device may be given beside it." };
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
            model, device, task, method, sites, output, force, train, kPoints, steps, relpAttention, target, masks, sweepPath, allLengths, seed, sae, specialTokens, fromSummary,
            shard, shardScores, checkpointEvery,
        };
        cmd.SetAction(r =>
        {
            string? summaryPath = r.GetValue(fromSummary);
            var saved = summaryPath is null ? null : SavedTraceSettings.Read(summaryPath);
            if (saved is not null && new Option[] { model, task, method, sites, train, kPoints, steps, relpAttention, target, masks, sweepPath, allLengths, seed, sae, specialTokens }
                    .FirstOrDefault(o => r.GetResult(o) is { Implicit: false }) is { } clash)
                throw new UsageException($"{clash.Name} cannot be given with --from-summary (the summary sets it)");
            var methods = r.GetValue(method)!;
            var siteList = r.GetValue(sites)!;
            var relpRules = r.GetValue(relpAttention)!;
            // Header and tokenizer only: the task is tokenised and the run planned before a weight byte is read.
            var described = CommonOptions.DescribeModel(saved?.Model ?? r.GetValue(model));
            // The SAEs are sized from their configs here and read after the plan.
            long saeBytes = SaeOptions.PlannedBytes(r.GetValue(sae));
            if (r.GetValue(sae) is { Length: > 0 } && CudaBackends.Ordinals(r.GetValue(device)!) is { Length: > 1 })
                throw new UsageException($"--sae runs on one device; a model split over GPUs (--device {r.GetValue(device)}) is traced without SAEs");
            string taskPath = saved?.Task ?? TaskOptions.TaskPath(r.GetValue(task));
            saved?.CheckUnchanged(summaryPath!, described.Path, taskPath);
            bool useAllLengths = saved?.AllLengths ?? r.GetValue(allLengths);
            var t = PromptTask.Load(taskPath, described.RequireTokenizer(), encoder: PromptOptions.Encoder(described, r.GetValue(specialTokens), taskPath), maxTokens: described.Config.MaxSeqLen);
            if (!useAllLengths) t = t.OfMostCommonLength();
            if (!t.IsPaired) throw new ModelFormatException(taskPath, "trace needs paired prompts (patch_prefix and patch_answer on every line)");
            var traceOptions = saved?.Options ?? new TraceOptions
            {
                Methods = methods, Sites = siteList, TrainExamples = r.GetValue(train), KPoints = r.GetValue(kPoints),
                IgSteps = r.GetValue(steps), RelPRules = relpRules,
                TargetFaithfulness = r.GetValue(target), MasksPerForward = r.GetValue(masks), Seed = r.GetValue(seed),
                SweepPath = r.GetValue(sweepPath),
            };
            // The plan chooses the attribution batch (or checkpoints the layers) to fit every method, or refuses, before the weights are read.
            AttributionFit Plan(TraceOptions o)
            {
                var fit = MemoryPlan.FitTask(described.Config, o.AttributionBatchSize, pinned: false, t.Count,
                    t.Pairs.Count == 0 ? 0 : t.Pairs.Max(p => p.CleanIds.Length), o.Sites, o.Methods, true, CommonOptions.IsCpu(r.GetValue(device)!),
                    CudaBackends.PlanAvailableBytes(r.GetValue(device)!), CudaBackends.PlanWhere(r.GetValue(device)!), o.IgSteps, saeBytes,
                    CudaBackends.PlanHostBytes(r.GetValue(device)!));
                if (fit.Refusal is { } refusal) throw new UsageException(refusal);
                if (fit.Note is { } note) Console.Error.WriteLine(note);
                return fit;
            }
            if (r.GetValue(shard) is { } shardText)
            {
                string shardDir = r.GetValue(output) ?? throw new UsageException("--shard needs --out (the shard folder)");
                int? every = r.GetValue(checkpointEvery);
                ShardRun.CheckedCheckpointEvery(every);
                if (r.GetValue(sae) is { Length: > 0 }) throw new UsageException("--sae cannot be sharded yet (trace the SAEs unsharded)");
                // An attribution shard is planned as the unsharded attribution is (a sweep shard runs no attribution).
                if (r.GetValue(shardScores) is null)
                {
                    var shardFit = Plan(traceOptions);
                    traceOptions = traceOptions with { AttributionBatchSize = shardFit.Batch, CheckpointLayers = traceOptions.CheckpointLayers || shardFit.Checkpoint };
                }
                var shardLoaded = CommonOptions.LoadModel(described);
                using var shardModel = TracedModel.Create(shardLoaded, CommonOptions.OpenModel(shardLoaded.Weights, r.GetValue(device)!));
                return ShardRun.Trace(shardModel, shardLoaded, t, taskPath, traceOptions, traceOptions.RelPRules.RelPAttentionName!, useAllLengths,
                    r.GetValue(specialTokens), shardText, r.GetValue(shardScores), shardDir, every);
            }
            if (r.GetValue(shardScores) is not null) throw new UsageException("--scores needs --shard (it runs one shard of a sharded sweep)");
            string outDir = r.GetValue(output) ?? Path.Combine("runs", $"trace-{t.Name}-{DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}");
            string CheckOut() => OutputPaths.CheckFolder(outDir, r.GetValue(force), "a NeuronTrace run folder", OutputPaths.IsRunFolder,
                [r.GetValue(model), described.Path, r.GetValue(task), taskPath, summaryPath]);
            string full = CheckOut();

            Console.Error.WriteLine($"model {described.Path} ({described.Format}), task {taskPath}: {t.Count} examples, methods {string.Join(",", traceOptions.Methods.Select(m => m.Name()))}, sites {string.Join(",", traceOptions.Sites.Select(s => s.Name()))}");
            var fit = Plan(traceOptions);
            traceOptions = traceOptions with { AttributionBatchSize = fit.Batch, CheckpointLayers = traceOptions.CheckpointLayers || fit.Checkpoint };
            var saes = SaeOptions.Load(r.GetValue(sae), described.Config);
            var loaded = CommonOptions.LoadModel(described);
            using var traced = TracedModel.Create(loaded, CommonOptions.OpenModel(loaded.Weights, r.GetValue(device)!));
            if (saes.Count > 0 && !traceOptions.Methods.Any(m => m is AttributionMethod.AtP or AttributionMethod.RelP))
                throw new UsageException("--sae needs --method atp or relp (SAE nodes are scored from the site gradient)");
            using var bar = new ProgressBar();
            var result = traced.Trace(t, traceOptions, bar);
            var saeCircuits = traced.TraceSaes(result, saes, traceOptions);

            // Everything is written into a hidden sibling folder first, then renamed: no partly written run folder.
            OutputPaths.WriteFolder(outDir, full, temp =>
            {
                TraceReport.Write(temp, result, loaded, taskPath, traceOptions, RunInfo.Provenance(r.GetValue(device)!, useAllLengths));
                if (saeCircuits.Count > 0) SaeTrace.Write(temp, saeCircuits, traceOptions.TargetFaithfulness);
                SweepPlot.SaveAll(temp, result.Sweep, t.Name);
            }, () => CheckOut());

            Console.WriteLine($"\n{t.Name}: {result.Train.Count} examples attributed (batch {traceOptions.AttributionBatchSize}{(traceOptions.CheckpointLayers ? ", checkpointed" : "")}: memory plan), {result.Eval.Count} evaluated; clean logit difference {result.CleanMetric:F3}; {result.Elapsed.TotalSeconds:F1} s");
            Console.WriteLine($"circuits reaching faithfulness {traceOptions.TargetFaithfulness:P0} (top-k by |score|; random = k random nodes):");
            Tables.Print(["site", "method", "nodes", "k", "fraction", "faithful", "complete", "random faithful"],
                result.Circuits.Select(c => (IReadOnlyList<string>)(c.AtTarget is { } p
                    ? [c.Site.Name(), c.Method.Name(), c.TotalNodes.ToString(), p.K.ToString(), $"{(double)p.K / c.TotalNodes:P2}", $"{p.Faithfulness:F3}", $"{p.Completeness:F3}", $"{p.RandomFaithfulness:F3}"]
                    : [c.Site.Name(), c.Method.Name(), c.TotalNodes.ToString(), "-", "not reached", "-", "-", "-"])));
            if (saeCircuits.Count > 0) SaeOptions.PrintBases(result, saeCircuits, traceOptions.TargetFaithfulness);
            Console.WriteLine($"\nwrote {outDir}/ (sweep.csv, sweep_SITE.png, summary.json, circuits/, scores/)");
            return 0;
        });
        return cmd;
    }
}
