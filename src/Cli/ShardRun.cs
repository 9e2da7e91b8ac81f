using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Sharding;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli;

/// <summary>
/// The <c>--shard I/N</c> side of <c>attribute</c> and <c>trace</c>: the options, the shard folder, the manifest's
/// identity, SIGTERM as "checkpoint and stop", and the line each outcome prints.
/// </summary>
internal static class ShardRun
{
    public const int StoppedExitCode = 143; // 128 + SIGTERM: the scheduler sees the shard as not finished

    public static Option<string?> Shard() => new("--shard")
    {
        Description = "Run shard I of N (0-based, e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT): a contiguous slice of the examples (of the circuits, with trace --scores). --out is then a shard folder of fp64 partial sums and shard.json; re-running the same command resumes it; `neurontrace merge` joins the shards.",
    };

    /// <summary>Checkpoint intervals when --checkpoint-every is not given: examples of an attribution shard, circuits of a sweep shard.</summary>
    public const int DefaultCheckpointExamples = 128, DefaultCheckpointCircuits = 4;

    public static Option<int?> CheckpointEvery() => new("--checkpoint-every")
    {
        Description = $"With --shard: examples per checkpoint of the partial sums (default {DefaultCheckpointExamples}), or with --scores circuits per checkpoint of a sweep shard (default {DefaultCheckpointCircuits}); 1..1000000.",
    };

    /// <summary>The checked interval, or <paramref name="byDefault"/> when the option was not given.</summary>
    public static int CheckedCheckpointEvery(int? n, int byDefault = DefaultCheckpointExamples) =>
        n is null ? byDefault : n is >= 1 and <= 1_000_000 ? n.Value : throw new UsageException($"--checkpoint-every {n}: must be in 1..1000000");

    public static ShardSlice ParseSlice(string text)
    {
        try { return ShardSlice.Parse(text); }
        catch (ArgumentException e) { throw new UsageException("--shard: " + e.Message); }
    }

    /// <summary>A shard folder may be new, empty, or a shard folder (resumed); anything else is refused.</summary>
    public static string CheckShardFolder(string dir)
    {
        string full = Path.GetFullPath(OutputPaths.NotEmpty(dir));
        if (File.Exists(full)) throw new UsageException($"--out {dir} is a file; a shard writes a folder");
        if (Directory.Exists(full) && Directory.EnumerateFileSystemEntries(full).Any() && !File.Exists(Path.Combine(full, ShardManifest.FileName)))
            throw new UsageException($"--out {dir} exists and is not a shard folder (no {ShardManifest.FileName}); give a new folder");
        return full;
    }

    /// <summary>
    /// Cancels the token on SIGTERM (Slurm's pre-emption signal, <c>--signal</c>) instead of dying mid-write: the shard
    /// writes its checkpoint and exits <see cref="StoppedExitCode"/> (the command-wide handler stands aside meanwhile).
    /// </summary>
    public sealed class StopSignal : IDisposable
    {
        readonly CancellationTokenSource _cts = new();
        readonly PosixSignalRegistration _term;
        readonly IDisposable _deferred;
        public StopSignal()
        {
            _deferred = Interruption.DeferTerm();
            _term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; _cts.Cancel(); });
        }
        public CancellationToken Token => _cts.Token;
        public void Dispose() { _term.Dispose(); _deferred.Dispose(); _cts.Dispose(); }
    }

    /// <summary>The line a finished or stopped shard prints, and its exit code.</summary>
    public static int Report(ShardManifest m, string dir, string items)
    {
        if (m.Complete)
        {
            Console.WriteLine($"shard {m.ShardIndex}/{m.ShardCount}: {items} {m.First}..{m.End - 1} of {m.Total} done; wrote {dir}");
            return 0;
        }
        Console.Error.WriteLine($"neurontrace: shard {m.ShardIndex}/{m.ShardCount} stopped by SIGTERM after {m.Done} of {m.End - m.First} {items}; checkpoint in {dir}; run the same command again to continue");
        return StoppedExitCode;
    }

    /// <summary>
    /// <c>trace --shard</c>: without <paramref name="scoresDir"/> an attribution shard of the training examples (every
    /// method); with it a sweep shard of the circuits ranked by that merged attribution.
    /// </summary>
    public static int Trace(TracedModel model, LoadedModel loaded, PromptTask task, string taskPath, TraceOptions o, string relpAttention, bool allLengths,
        bool specialTokens, string shardText, string? scoresDir, string dir, int? checkpointEvery)
    {
        var slice = ParseSlice(shardText);
        string full = CheckShardFolder(dir);
        TraceJob.Validate(task, o);
        var identity = ShardIdentity.Of("trace", loaded, taskPath, ShardIdentity.TraceOptionsText(o, relpAttention, allLengths, specialTokens));
        if (scoresDir is null)
        {
            var (train, _) = TracedModel.Split(task, o.TrainExamples);
            var metric = Metric.AttributionDefault(train);
            var methods = o.Methods.Select(m => (m.Name(), new AttributionOptions
            {
                Method = m, Sites = o.Sites, IgSteps = o.IgSteps, RelPRules = o.RelPRules, Baseline = Baseline.Patch, Metric = metric,
                BatchSize = o.AttributionBatchSize, CheckpointLayers = o.CheckpointLayers,   // the memory plan's (TraceCommand)
            })).ToList();
            using var stop = new StopSignal();
            var m = model.AttributeShard(train, methods, identity, slice, full, CheckedCheckpointEvery(checkpointEvery), new ProgressBar(), stop.Token);
            return Report(m, dir, "examples");
        }
        var scores = ReadMergedScores(scoresDir, identity);
        identity.ScoresDir = Path.GetFullPath(scoresDir);
        identity.ScoresSha256 = scores.Sha256;
        using var sweepStop = new StopSignal();
        var done = model.SweepShard(task, o, scores.ByMethod, identity, slice, full,
            CheckedCheckpointEvery(checkpointEvery, DefaultCheckpointCircuits), new ProgressBar(), sweepStop.Token);
        return Report(done, dir, "circuits");
    }

    /// <summary><c>--scores</c>: the merged attribution, checked to be this run's; a folder that is not is a usage error.</summary>
    static (IReadOnlyDictionary<AttributionMethod, NodeScores> ByMethod, string Sha256) ReadMergedScores(string dir, ShardManifest identity)
    {
        try { return ShardIdentity.ReadMergedScores(dir, identity); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
    }

    /// <summary><c>attribute --shard</c>: the baseline is fixed on the whole task first (a slice could decide otherwise).</summary>
    public static int Attribute(TracedModel model, LoadedModel loaded, PromptTask task, string taskPath, AttributionOptions o, string relpAttention,
        bool specialTokens, int limit, int topLogitsK, ShardSlice slice, string full, string shown, int checkpointEvery)
    {
        var baseline = o.Baseline ?? (task.IsPaired ? Baseline.Patch : Baseline.Zero);
        var identity = ShardIdentity.Of("attribute", loaded, taskPath, new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["method"] = o.Method.Name(), ["sites"] = string.Join(",", o.Sites.Select(s => s.Name())),
            ["steps"] = o.IgSteps.ToString(CultureInfo.InvariantCulture), ["baseline"] = baseline.ToString().ToLowerInvariant(),
            ["metric"] = o.Metric!.Name, ["relp_attention"] = relpAttention, ["limit"] = limit.ToString(CultureInfo.InvariantCulture),
            ["top_logits_k"] = topLogitsK.ToString(CultureInfo.InvariantCulture), ["special_tokens"] = specialTokens ? "true" : "false",
        });
        using var stop = new StopSignal();
        var m = model.AttributeShard(task, [(o.Method.Name(), o with { Baseline = baseline })], identity, slice, full, checkpointEvery,
            new ProgressBar(), stop.Token);
        return Report(m, shown, "examples");
    }
}
