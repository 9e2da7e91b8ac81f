using NeuronTrace.Formats;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Sharding;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace;

// Joining the shards of a sharded run into what the unsharded command computes: what `merge` runs. Internal like the
// shard methods (TracedModel.Shards.cs): shards are made by the CLI, so their folders are its format, not an API.
public sealed partial class TracedModel
{
    /// <summary>
    /// Joins the shards of one sharded run, after checking that they are one whole run (the manifests agree, every shard
    /// is finished, each item is covered exactly once; each refusal names the shard at fault). Attribution shards
    /// (<c>attribute --shard</c>, or the first stage of <c>trace --shard</c>) give their fp64 sums added in shard order;
    /// sweep shards (<c>trace --shard --scores</c>) give the sweep's points in the unsharded order, the circuits picked
    /// as <c>trace</c> picks them, and the model, task and merged attribution they name, each checked to be unchanged
    /// (SHA-256). Nothing is written: <see cref="MergedShards.Save"/> writes what the unsharded command writes.
    /// </summary>
    /// <param name="shardFolders">Every shard folder of one run, each once, in any order.</param>
    /// <returns>The merge; <see cref="MergedShards.Trace"/> is set for sweep shards.</returns>
    /// <exception cref="ArgumentException">No folder, shards of different runs or kinds, a shard missing, given twice or
    /// unfinished, or a model, task or merged attribution that changed since the shards ran.</exception>
    /// <exception cref="ModelFormatException">A manifest, a sums file or the task cannot be read.</exception>
    /// <exception cref="FormatException">A sweep manifest lacks a trace option.</exception>
    internal static MergedShards MergeShards(IReadOnlyList<string> shardFolders)
    {
        if (shardFolders.Count == 0) throw new ArgumentException("no shard folders given");
        if (ShardManifest.Read(shardFolders[0]).Kind != ShardManifest.SweepKind)
        {
            var (merged, sums) = ShardMerge.Attribution(shardFolders);
            return new MergedShards(merged, shardFolders.Count, sums, null, null);
        }

        var (first, points, clean) = Tracing.Sharding.SweepShard.Merge(shardFolders);
        var (o, allLengths, specialTokens) = ShardIdentity.TraceOptionsOf(first);
        var loaded = ModelLoader.Load(first.ModelPath);
        if (ShardManifest.Sha256Of(loaded.Path) != first.ModelSha256) throw new ArgumentException($"{first.ModelPath} changed since the shards ran (SHA-256 differs)");
        var identity = ShardIdentity.Of("trace", loaded, first.TaskPath, first.Options);
        if (identity.TaskSha256 != first.TaskSha256) throw new ArgumentException($"{first.TaskPath} changed since the shards ran (SHA-256 differs)");
        var scores = ShardIdentity.ReadMergedScores(first.ScoresDir!, identity);
        if (scores.Sha256 != first.ScoresSha256) throw new ArgumentException($"{first.ScoresDir}: the merged attribution changed since the sweep shards ranked it");
        // Read as `trace --shard` read it (the model's encoder and context limit), so the most-common-length filter keeps the same examples.
        var task = PromptTask.Load(first.TaskPath, loaded.RequireTokenizer(), encoder: PromptEncoder.ForModel(loaded, specialTokens), maxTokens: loaded.Config.MaxSeqLen);
        if (!allLengths) task = task.OfMostCommonLength();
        var (train, eval) = TraceJob.Split(task, o.TrainExamples);
        var circuits = new List<CircuitSummary>();
        foreach (var method in o.Methods)
            foreach (var site in o.Sites)
                circuits.Add(TraceJob.Summarize(scores.ByMethod[method], new NodeRanking(scores.ByMethod[method], site), site, method,
                    points.Where(p => p.Site == site && p.Method == method.Name()), o.TargetFaithfulness));
        var result = new TraceResult(train, eval, scores.ByMethod, points, circuits, clean, TimeSpan.Zero);
        return new MergedShards(first, shardFolders.Count, null, result, (loaded, task.Name));
    }
}

/// <summary>The merge of a sharded run (<see cref="TracedModel.MergeShards"/>): what the unsharded command computes, not yet written.</summary>
internal sealed class MergedShards
{
    readonly PartialScores? _sums;
    readonly (LoadedModel Model, string TaskName)? _sweep;

    internal MergedShards(ShardManifest manifest, int shards, PartialScores? sums, TraceResult? trace, (LoadedModel, string)? sweep)
    {
        Manifest = manifest; Shards = shards; _sums = sums; Trace = trace; _sweep = sweep;
    }

    /// <summary>The merged attribution's manifest (one shard of one, every example), or a sweep's shard 0 manifest.</summary>
    public ShardManifest Manifest { get; }

    /// <summary>How many shard folders were joined.</summary>
    public int Shards { get; }

    /// <summary>The whole trace for sweep shards (its elapsed time zero: the shards' times are theirs); null for attribution shards.</summary>
    public TraceResult? Trace { get; }

    /// <summary>The task's name (the sweep plots' titles); null for attribution shards.</summary>
    public string? TaskName => _sweep?.TaskName;

    /// <summary>
    /// Writes the merge into <paramref name="folder"/> (an existing, empty folder; the CLI's temporary one): for shards of
    /// <c>attribute</c> the scores folder it writes, for attribution shards of <c>trace</c> each method's scores under
    /// <c>scores/METHOD</c>, both beside the merged sums and manifest that sweep shards rank (<c>trace --shard --scores</c>);
    /// for sweep shards the run folder's report (<c>sweep.csv</c>, <c>summary.json</c>, <c>circuits/</c>, <c>scores/</c>).
    /// </summary>
    /// <param name="folder">The folder to fill.</param>
    public void Save(string folder)
    {
        if (Trace is not null)
        {
            var (model, _) = _sweep!.Value;
            TraceReport.Write(folder, Trace, model, Manifest.TaskPath);
            return;
        }
        var m = Manifest;
        if (m.Command == "attribute")
            _sums!.Means(m.Methods[0]).Save(folder, m.Methods[0], m.Options["metric"], m.Total);
        else
            foreach (var method in m.Methods)
                _sums!.Means(method).Save(Path.Combine(folder, "scores", method), method, "logit(patch) - logit(clean)", m.Total);
        ShardMerge.SaveMerged(folder, m, _sums!);
    }
}
