using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Sharding;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace;

// One shard of a job split over processes (Slurm array tasks): what `attribute --shard` and `trace --shard` run.
public sealed partial class TracedModel
{
    /// <summary>
    /// One shard of an attribution: the slice of the task's examples that <paramref name="slice"/> names is attributed by
    /// every method and its fp64 partial score sums are checkpointed into <paramref name="dir"/> every
    /// <paramref name="checkpointExamples"/> examples with a manifest (<c>shard.json</c>); an unfinished shard folder of the
    /// same run is resumed. <c>merge</c> (or <see cref="PartialScores"/>) joins the shards into the unsharded means.
    /// </summary>
    /// <param name="task">The whole task (every shard gets the same one).</param>
    /// <param name="methods">Each method's name and options; metric and baseline fixed on the whole task, not the mean baseline.</param>
    /// <param name="identity">Command, model, task and options of the run, recorded in the manifest and checked on resume.</param>
    /// <param name="slice">Which shard of how many.</param>
    /// <param name="dir">The shard folder.</param>
    /// <param name="checkpointExamples">Examples between checkpoints, at least 1.</param>
    /// <param name="progress">Progress per batch.</param>
    /// <param name="stop">Checked after each checkpoint: when set, the unfinished manifest is returned (pre-emption), nothing thrown.</param>
    /// <returns>The manifest; <see cref="ShardManifest.Complete"/> says whether the shard finished.</returns>
    /// <exception cref="ArgumentException">No method, methods of different sites, the mean baseline, or a folder of another run.</exception>
    internal ShardManifest AttributeShard(PromptTask task, IReadOnlyList<(string Name, AttributionOptions Options)> methods, ShardManifest identity,
        ShardSlice slice, string dir, int checkpointExamples, IProgress<WorkProgress>? progress = null, CancellationToken stop = default) =>
        AttributionShard.Run(Llama, task, methods, identity, slice, dir, checkpointExamples, stop, progress);

    /// <summary>
    /// One shard of a trace's sweep: the circuits <c>trace</c> would evaluate (every method, site and k, with the random
    /// control) ranked by the merged attribution <paramref name="scores"/>, of which this shard evaluates its slice on the
    /// evaluation examples, checkpointing every <paramref name="checkpointCircuits"/> circuits into <paramref name="dir"/>.
    /// </summary>
    /// <param name="task">The whole task (split as <paramref name="options"/> says).</param>
    /// <param name="options">The trace's options.</param>
    /// <param name="scores">The merged attribution of the training examples, per method.</param>
    /// <param name="identity">Command, model, task, options and scores of the run, recorded in the manifest.</param>
    /// <param name="slice">Which shard of how many.</param>
    /// <param name="dir">The shard folder.</param>
    /// <param name="checkpointCircuits">Circuits between checkpoints, at least 1 (a resumed shard keeps its first run's).</param>
    /// <param name="progress">Progress per batch of circuits.</param>
    /// <param name="stop">Checked after each checkpoint: when set, the unfinished manifest is returned (pre-emption), nothing thrown.</param>
    /// <exception cref="ArgumentException">A checkpoint of no circuits, or a folder of another run.</exception>
    internal ShardManifest SweepShard(PromptTask task, TraceOptions options, IReadOnlyDictionary<AttributionMethod, NodeScores> scores, ShardManifest identity,
        ShardSlice slice, string dir, int checkpointCircuits, IProgress<WorkProgress>? progress = null, CancellationToken stop = default) =>
        Tracing.Sharding.SweepShard.Run(Llama, task, options, scores, identity, slice, dir, progress, checkpointCircuits, stop);
}
