using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Commands;

/// <summary><c>attribute</c>: score every node of the chosen sites on a task and write the example-mean scores.</summary>
public static class AttributeCommand
{
    public static Command Create()
    {
        var model = CommonOptions.Model();
        var device = CommonOptions.Device();
        var task = TaskOptions.Task();
        var method = new Option<string>("--method") { Description = "atp (attribution patching), ig (integrated gradients per site), ig-inputs (IG over input embeddings) or relp.", DefaultValueFactory = _ => "relp" };
        var sites = TaskOptions.Sites();
        var output = new Option<string>("--out", "-o") { Description = "Output folder for scores.f32, scores.json and scores.csv. Must not exist unless --force.", Required = true };
        var force = new Option<bool>("--force") { Description = "Replace an existing output folder (only an empty folder or a scores folder written by attribute, not a trace run's scores)." };
        var steps = new Option<int>("--steps") { Description = "IG steps (alpha = k/N, k = 0..N-1).", DefaultValueFactory = _ => 10 };
        var baseline = new Option<string?>("--baseline") { Description = "patch (default for paired tasks), zero (default for unpaired) or mean (the task's mean clean activation at each layer and position from the end). Scores are (baseline - clean) * gradient." };
        var relpAttention = TaskOptions.RelPAttention();
        var limit = new Option<int>("--limit") { Description = "Use only the first N examples (0 = all).", DefaultValueFactory = _ => 0 };
        var batch = new Option<int>("--batch") { Description = "Prompt pairs per forward/backward.", DefaultValueFactory = _ => 32 };
        var metric = new Option<string?>("--metric")
        {
            Description = "What is attributed, at the clean prompt's last position: logit-diff (logit(patch_answer) - logit(clean_answer); default for paired tasks), answer-logit (logit(clean_answer); default for unpaired tasks) or top-logits (the sum of the model's own top-k next-token logits, tokens fixed from the clean run; the case studies' metric).",
        };
        var topLogitsK = new Option<int>("--top-logits-k") { Description = "k of --metric top-logits.", DefaultValueFactory = _ => 5 };
        var shard = ShardRun.Shard();
        var checkpointEvery = ShardRun.CheckpointEvery();
        var cmd = new Command("attribute", "Score every node (site, layer, position from the end, unit) by attribution of a metric of the last-position logits (default: the task's logit difference).")
        {
            model, device, task, method, sites, output, force, steps, baseline, relpAttention, limit, batch, metric, topLogitsK, shard, checkpointEvery,
        };
        cmd.SetAction(r =>
        {
            var m = MethodNames.Parse(r.GetValue(method)!);
            var siteList = NodeSites.ParseList(r.GetValue(sites)!);
            if (r.GetValue(steps) < 1) throw new UsageException("--steps must be at least 1");
            if (r.GetValue(batch) < 1) throw new UsageException("--batch must be at least 1");
            if (r.GetValue(limit) < 0) throw new UsageException("--limit must be 0 (all examples) or more");
            Baseline? b = r.GetValue(baseline) switch
            {
                null => null, "patch" => Baseline.Patch, "zero" => Baseline.Zero, "mean" => Baseline.Mean,
                var x => throw new UsageException($"unknown --baseline \"{x}\" (patch, zero or mean)"),
            };
            string? metricName = r.GetValue(metric);
            if (metricName is not (null or "logit-diff" or "answer-logit" or "top-logits"))
                throw new UsageException($"unknown --metric \"{metricName}\" (logit-diff, answer-logit or top-logits)");
            if (r.GetValue(topLogitsK) < 1) throw new UsageException("--top-logits-k must be at least 1");
            var loaded = CommonOptions.LoadModel(r.GetValue(model));
            string taskPath = TaskOptions.TaskPath(r.GetValue(task));
            string dir = r.GetValue(output)!;
            string CheckOut()
            {
                string full = OutputPaths.CheckFolder(dir, r.GetValue(force), "a scores folder written by attribute", OutputPaths.IsScoresFolder,
                    [r.GetValue(model), loaded.Path, r.GetValue(task), taskPath]);
                // trace's RUN/scores/METHOD: replacing it would leave the run's circuits and sweep disagreeing with its scores.
                if (Path.GetFileName(Path.GetDirectoryName(full)) == "scores" && Path.GetDirectoryName(Path.GetDirectoryName(full)) is { } run && OutputPaths.IsRunFolder(run))
                    throw new UsageException($"{dir} is part of the trace run folder {run}; write the output elsewhere");
                return full;
            }
            string? shardText = r.GetValue(shard);
            var slice = shardText is null ? (Tracing.Sharding.ShardSlice?)null : ShardRun.ParseSlice(shardText);
            int every = ShardRun.CheckedCheckpointEvery(r.GetValue(checkpointEvery));
            string fullDir = slice is null ? CheckOut() : ShardRun.CheckShardFolder(dir);
            var t = PromptTask.Load(taskPath, loaded.RequireTokenizer()).Take(r.GetValue(limit));
            using var llama = new Llama(loaded.Weights, CommonOptions.OpenBackend(r.GetValue(device)!));
            var watch = System.Diagnostics.Stopwatch.StartNew();
            Metric chosen = metricName switch
            {
                "logit-diff" when t.Pairs.Any(p => p.PatchAnswer is null) =>
                    throw new UsageException("--metric logit-diff needs patch_answer on every line of the task"),
                "logit-diff" => Metric.TowardsPatch,
                "answer-logit" => Metric.AnswerLogit,
                "top-logits" => Metric.SumOfTopKLogits(llama, t, r.GetValue(topLogitsK), r.GetValue(batch)),
                _ => Metric.AttributionDefault(t),
            };
            var attribution = new AttributionOptions
            {
                Method = m, Sites = siteList, IgSteps = r.GetValue(steps), Baseline = b, Metric = chosen,
                RelPRules = TaskOptions.RelPRules(r.GetValue(relpAttention)!), BatchSize = r.GetValue(batch),
            };
            if (slice is { } sl)
                return ShardRun.Attribute(llama, loaded, t, taskPath, attribution, r.GetValue(relpAttention)!, r.GetValue(limit), r.GetValue(topLogitsK), sl, fullDir, dir, every);
            var scores = Attributor.Score(llama, t, attribution, new ProgressBar());
            OutputPaths.WriteFolder(dir, fullDir, temp => scores.Save(temp, m.Name(), chosen.Name, t.Count), () => CheckOut());
            Console.WriteLine($"{t.Count} examples, {m.Name()}, {watch.Elapsed.TotalSeconds:F2} s; wrote {Path.Combine(dir, "scores.csv")}");
            Tables.PrintTopNodes(scores, siteList, 10);
            return 0;
        });
        return cmd;
    }
}
