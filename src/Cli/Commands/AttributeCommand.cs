using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Sae;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>attribute</c>: score every node of the chosen sites on a task and write the example-mean scores.</summary>
internal static class AttributeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device(layerSplit: true);
        var task = TaskOptions.Task();
        var method = CommonOptions.Choice("--method", "atp (attribution patching), ig (integrated gradients per site), ig-inputs (IG over input embeddings) or relp.",
            CommonOptions.MethodChoices, () => AttributionMethod.RelP);
        var sites = TaskOptions.Sites();
        var (output, force) = CommonOptions.Output("Output folder for scores.f32, scores.json and scores.csv. Must not exist unless --force.",
            "Replace an existing output folder (only an empty folder or a scores folder written by attribute, not a trace run's scores).", required: true);
        var steps = CommonOptions.IgSteps();
        var baseline = CommonOptions.Choice<Baseline?>("--baseline", "patch (default for paired tasks), zero (default for unpaired) or mean (the task's mean clean activation at each layer and position from the end). Scores are (baseline - clean) * gradient.",
            [("patch", Baseline.Patch), ("zero", Baseline.Zero), ("mean", Baseline.Mean)]);
        var relpAttention = TaskOptions.RelPAttention();
        var limit = CommonOptions.Int("--limit", "Use only the first N examples (0 = all).", 0, 0, int.MaxValue, "--limit must be 0 (all examples) or more");
        var batch = CommonOptions.Int("--batch", "Prompt pairs per forward/backward.", 32, 1, 4096);
        var metric = CommonOptions.Choice<MetricKind?>("--metric",
            "What is attributed, at the clean prompt's last position: logit-diff (logit(patch_answer) - logit(clean_answer); default for paired tasks), answer-logit (logit(clean_answer); default for unpaired tasks) or top-logits (the sum of the model's own top-k next-token logits, tokens fixed from the clean run; the case studies' metric).",
            [("logit-diff", MetricKind.LogitDiff), ("answer-logit", MetricKind.AnswerLogit), ("top-logits", MetricKind.TopLogits)]);
        var topLogitsK = CommonOptions.Int("--top-logits-k", "k of --metric top-logits.", 5, 1, 1000);
        var sae = SaeOptions.Sae();
        var specialTokens = PromptOptions.SpecialTokens();
        var shard = ShardRun.Shard();
        var checkpointEvery = ShardRun.CheckpointEvery();
        var cmd = new Command("attribute", "Score every node (site, layer, position from the end, unit) by attribution of a metric of the last-position logits (default: the task's logit difference).")
        {
            model, device, task, method, sites, output, force, steps, baseline, relpAttention, limit, batch, metric, topLogitsK, sae, specialTokens, shard, checkpointEvery,
        };
        cmd.SetAction(r =>
        {
            var m = r.GetValue(method);
            var siteList = r.GetValue(sites)!;
            Baseline? b = r.GetValue(baseline);
            var metricName = r.GetValue(metric);
            if (r.GetValue(sae) is { Length: > 0 } && (m is not (AttributionMethod.AtP or AttributionMethod.RelP) || b is not (null or Baseline.Patch)))
                throw new UsageException("--sae needs --method atp or relp with the patch baseline (SAE nodes are scored from the site gradient against the patch prompt)");
            // Header and tokenizer only: the task is tokenised and the run planned before a weight byte is read.
            var described = CommonOptions.DescribeModel(r.GetValue(model));
            // The SAEs are sized from their configs here and read after the plan.
            long saeBytes = SaeOptions.PlannedBytes(r.GetValue(sae));
            string taskPath = TaskOptions.TaskPath(r.GetValue(task));
            string dir = r.GetValue(output)!;
            string CheckOut()
            {
                string full = OutputPaths.CheckFolder(dir, r.GetValue(force), "a scores folder written by attribute", OutputPaths.IsScoresFolder,
                    [r.GetValue(model), described.Path, r.GetValue(task), taskPath]);
                // trace's RUN/scores/METHOD: replacing it would leave the run's circuits and sweep disagreeing with its scores.
                if (Path.GetFileName(Path.GetDirectoryName(full)) == "scores" && Path.GetDirectoryName(Path.GetDirectoryName(full)) is { } run && OutputPaths.IsRunFolder(run))
                    throw new UsageException($"{dir} is part of the trace run folder {run}; write the output elsewhere");
                return full;
            }
            string? shardText = r.GetValue(shard);
            var slice = shardText is null ? (Tracing.Sharding.ShardSlice?)null : ShardRun.ParseSlice(shardText);
            int every = ShardRun.CheckedCheckpointEvery(r.GetValue(checkpointEvery));
            if (slice is not null && r.GetValue(sae) is { Length: > 0 }) throw new UsageException("--sae cannot be sharded yet (run the SAE attribution unsharded)");
            string fullDir = slice is null ? CheckOut() : ShardRun.CheckShardFolder(dir);
            var t = PromptTask.Load(taskPath, described.RequireTokenizer(), encoder: PromptOptions.Encoder(described, r.GetValue(specialTokens), taskPath), maxTokens: described.Config.MaxSeqLen).Take(r.GetValue(limit));
            // The plan chooses the batch (or keeps a --batch given, checkpointing the layers where that is what fits it) or refuses, before the weights are read.
            var fit = Tracing.Pipeline.MemoryPlan.FitTask(described.Config, r.GetValue(batch), r.GetResult(batch) is { Implicit: false }, t.Count,
                t.Pairs.Count == 0 ? 0 : t.Pairs.Max(p => p.CleanIds.Length), siteList, [m],
                (b ?? (t.Pairs.All(p => p.PatchIds is not null) ? Baseline.Patch : Baseline.Zero)) == Baseline.Patch,
                CommonOptions.IsCpu(r.GetValue(device)!), CudaBackends.PlanAvailableBytes(r.GetValue(device)!), CudaBackends.PlanWhere(r.GetValue(device)!),
                r.GetValue(steps), saeBytes, CudaBackends.PlanHostBytes(r.GetValue(device)!));
            if (fit.Refusal is { } refusal) throw new UsageException(refusal);
            if (fit.Note is { } note) Console.Error.WriteLine(note);
            int batchSize = fit.Batch;
            var saes = SaeOptions.Load(r.GetValue(sae), described.Config);
            var loaded = CommonOptions.LoadModel(described);
            using var traced = TracedModel.Create(loaded, CommonOptions.OpenModel(loaded.Weights, r.GetValue(device)!));
            var watch = System.Diagnostics.Stopwatch.StartNew();
            Metric chosen = metricName switch
            {
                MetricKind.LogitDiff when t.Pairs.Any(p => p.PatchAnswer is null) =>
                    throw new UsageException("--metric logit-diff needs patch_answer on every line of the task"),
                MetricKind.LogitDiff => Metric.TowardsPatch,
                MetricKind.AnswerLogit => Metric.AnswerLogit,
                MetricKind.TopLogits => traced.TopLogitsMetric(t, r.GetValue(topLogitsK), batchSize),
                _ => Metric.AttributionDefault(t),
            };
            var attribution = new AttributionOptions
            {
                Method = m, Sites = siteList, IgSteps = r.GetValue(steps), Baseline = b, Metric = chosen,
                RelPRules = r.GetValue(relpAttention)!, BatchSize = batchSize, CheckpointLayers = fit.Checkpoint,
            };
            if (slice is { } sl)
            {
                return ShardRun.Attribute(traced, loaded, t, taskPath, attribution, attribution.RelPRules.RelPAttentionName!, r.GetValue(specialTokens), r.GetValue(limit), r.GetValue(topLogitsK), sl, fullDir, dir, every);
            }
            using var bar = new ProgressBar();
            var scores = traced.Attribute(t, m, siteList, attribution, bar);
            var saeScores = saes.Select(x => (Name: SaeTrace.Name(x), Scores: traced.AttributeSae(t, x, attribution))).ToList();
            OutputPaths.WriteFolder(dir, fullDir, temp =>
            {
                scores.Save(temp, m.Name(), chosen.Name, t.Count);
                foreach (var (name, s) in saeScores) SaeScoresCsv.Write(Path.Combine(temp, $"sae_{name}.csv"), s);
            }, () => CheckOut());
            string chosenBatch = r.GetResult(batch) is { Implicit: false } ? "" : $" (batch {batchSize}{(fit.Checkpoint ? ", checkpointed" : "")}: memory plan)";
            Console.WriteLine($"{t.Count} examples, {m.Name()}{chosenBatch}, {watch.Elapsed.TotalSeconds:F2} s; wrote {Path.Combine(dir, "scores.csv")}");
            Tables.PrintTopNodes(scores, siteList, 10);
            foreach (var (name, s) in saeScores)
                Console.WriteLine($"sae {name} ({s.Site.Name()} L{s.Layer}): {s.NodeCount} nodes; wrote {Path.Combine(dir, $"sae_{name}.csv")}");
            return 0;
        });
        return cmd;
    }

    enum MetricKind { LogitDiff, AnswerLogit, TopLogits }
}
