using NeuronTrace.Formats;
using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Sharding;

/// <summary>One circuit of a trace's k sweep: the top-k nodes of a site by a method (with its k-node random control).</summary>
internal sealed record SweepCircuit(AttributionMethod Method, NodeSite Site, int K);

/// <summary>
/// The evaluation side of a sharded trace: the sweep's circuits, in the unsharded order (method, site, k), are cut
/// into contiguous slices; a shard evaluates its slice with <see cref="CircuitSweep.Run"/> (each call also evaluates
/// the full and the empty circuit, the sweep's normalisers) and writes its points; the merge concatenates them.
/// A random control's nodes depend only on the seed and k, so it is the same in any shard.
/// Like <see cref="AttributionShard"/>, a shard checkpoints every <see cref="ShardManifest.CheckpointItems"/> circuits
/// (the points so far, then the manifest, both atomically) and a re-run resumes after the last checkpoint; the chunks
/// are fixed by the manifest, so a stopped or killed shard ends with the bytes of an uninterrupted one.
/// </summary>
internal static class SweepShard
{
    public const string PointsFile = "sweep-points.json";
    // k = 0 has an infinite threshold; named literals keep every double exact.
    static readonly JsonSerializerOptions Json = new() { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>Every circuit of the sweep <see cref="TraceJob.Run"/> would evaluate, in its order.</summary>
    public static IReadOnlyList<SweepCircuit> Circuits(IReadOnlyDictionary<AttributionMethod, NodeScores> scores, TraceOptions o)
    {
        var all = new List<SweepCircuit>();
        foreach (var method in o.Methods)
            foreach (var site in o.Sites)
                foreach (int k in CircuitSweep.LogSpacedK(new NodeRanking(scores[method], site).Count, o.KPoints))
                    all.Add(new SweepCircuit(method, site, k));
        return all;
    }

    /// <param name="model">The model on its backend.</param>
    /// <param name="task">The whole task, split into attribution and evaluation halves as <paramref name="o"/> says.</param>
    /// <param name="o">The trace's options (methods, sites, k points, seed, sweep path).</param>
    /// <param name="scores">The merged attribution the circuits are ranked by, per method.</param>
    /// <param name="identity">Command, model, task, options and scores of the run (the shard fields are filled in here).</param>
    /// <param name="slice">Which shard of how many: a contiguous slice of the sweep's circuits.</param>
    /// <param name="dir">The shard folder: points and manifest are written (and resumed from) here.</param>
    /// <param name="progress">Progress per batch of circuits; null for none.</param>
    /// <param name="checkpointCircuits">Circuits evaluated between checkpoints (a resumed shard keeps its first run's).</param>
    /// <param name="stop">Checked after each checkpoint: when set, returns the unfinished manifest (the pre-emption path).</param>
    public static ShardManifest Run(Llama model, PromptTask task, TraceOptions o, IReadOnlyDictionary<AttributionMethod, NodeScores> scores,
        ShardManifest identity, ShardSlice slice, string dir, IProgress<WorkProgress>? progress = null, int checkpointCircuits = int.MaxValue,
        CancellationToken stop = default)
    {
        if (checkpointCircuits < 1) throw new ArgumentException("a checkpoint needs at least one circuit");
        var circuits = Circuits(scores, o);
        var (first, end) = slice.Range(circuits.Count);
        var m = new ShardManifest
        {
            Kind = ShardManifest.SweepKind, Command = identity.Command, ModelPath = identity.ModelPath, ModelSha256 = identity.ModelSha256,
            TaskPath = identity.TaskPath, TaskSha256 = identity.TaskSha256, Options = identity.Options, ScoresDir = identity.ScoresDir,
            ScoresSha256 = identity.ScoresSha256, ShardIndex = slice.Index, ShardCount = slice.Count, Total = circuits.Count, First = first, End = end,
            Methods = o.Methods.Select(x => x.Name()).ToArray(), Sites = o.Sites.Select(x => x.Name()).ToArray(),
            CheckpointItems = checkpointCircuits,
        };
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(dir, ".*.tmp")) File.Delete(f);  // OutputFiles temporaries of an interrupted checkpoint
        var points = new List<SweepPoint>();
        if (ShardManifest.TryRead(dir) is { } saved)
        {
            string? why = m.Disagreement(saved) ?? (saved.ShardIndex != slice.Index ? $"shard {saved.ShardIndex}/{saved.ShardCount}" : null);
            if (why is not null) throw new ArgumentException($"{dir} holds {saved.Describe(dir)} of another run ({why}); give a new folder");
            if (saved.Complete) return saved;
            // The points file is written before the manifest: after a kill between the two it holds one chunk more.
            if (saved.Done > 0) points.AddRange(ReadPoints(dir, saved.Done, exact: false));
            m.Done = saved.Done;
            m.CheckpointItems = saved.CheckpointItems >= 1 ? saved.CheckpointItems : checkpointCircuits;
        }
        var (_, evalTask) = TraceJob.Split(task, o.TrainExamples);
        var means = TraceJob.AblationMeans(model, evalTask, o.Sites);
        int count = end - first;
        while (m.Done < count || !m.Complete)
        {
            int from = first + m.Done, to = (int)Math.Min(end, (long)from + m.CheckpointItems);
            foreach (var group in circuits.Skip(from).Take(to - from).GroupBy(c => (c.Method, c.Site)))
            {
                var (method, site) = group.Key;
                points.AddRange(CircuitSweep.Run(model, scores[method], site, method.Name(), evalTask, means, group.Select(c => c.K).ToArray(),
                    o.MasksPerForward, o.Seed, progress, o.SweepPath));
            }
            m.Done = to - first;
            m.Complete = m.Done == count;
            if (m.Complete) m.CleanMetric = TraceJob.MeanMetric(model, evalTask, Metric.EvaluationDefault(evalTask));
            OutputFiles.WriteText(Path.Combine(dir, PointsFile), JsonSerializer.Serialize(points.Select(SavedPoint.Of).ToList(), Json));
            m.Write(dir);
            if (!m.Complete && stop.IsCancellationRequested) return m;
        }
        return m;
    }

    /// <summary>The first <paramref name="count"/> saved points of a shard folder (all of them, and exactly that many, when <paramref name="exact"/>).</summary>
    static IEnumerable<SweepPoint> ReadPoints(string dir, int count, bool exact)
    {
        string path = Path.Combine(dir, PointsFile);
        List<SavedPoint>? saved;
        try { saved = JsonSerializer.Deserialize<List<SavedPoint>>(File.ReadAllText(path), Json); }
        catch (Exception e) when (e is JsonException or IOException) { throw new FormatException($"{path}: not a sweep points file ({e.Message.Split('\n')[0]})"); }
        if (saved is null || (exact ? saved.Count != count : saved.Count < count))
            throw new FormatException($"{path}: {saved?.Count ?? 0} points, but the manifest in {dir} counts {count} circuits");
        return saved.Take(count).Select(p => p.ToPoint(path));
    }

    /// <summary>The points of complete sweep shards in the unsharded order, and the clean metric (the same in each shard).</summary>
    public static (ShardManifest First, IReadOnlyList<SweepPoint> Points, double CleanMetric) Merge(IReadOnlyList<string> dirs)
    {
        var shards = ShardMerge.CheckComplete(dirs, ShardManifest.SweepKind);
        var points = new List<SweepPoint>();
        foreach (var (d, m) in shards) points.AddRange(ReadPoints(d, m.End - m.First, exact: true));
        return (shards[0].Manifest, points, shards[0].Manifest.CleanMetric ?? double.NaN);
    }

    /// <summary>A sweep point as JSON (doubles round-trip exactly).</summary>
    public sealed record SavedPoint(string Site, string Method, int K, float Threshold, double Faithfulness, double Completeness,
        double RandomFaithfulness, double RandomCompleteness, int TotalNodes)
    {
        public static SavedPoint Of(SweepPoint p) => new(p.Site.Name(), p.Method, p.K, p.Threshold, p.Faithfulness, p.Completeness,
            p.RandomFaithfulness, p.RandomCompleteness, p.TotalNodes);

        public SweepPoint ToPoint(string source) => new(
            NodeSites.TryParse(Site, out var s) ? s : throw new FormatException($"{source}: unknown site {ErrorText.Quote(Site)}"),
            Method, K, Threshold, Faithfulness, Completeness, RandomFaithfulness, RandomCompleteness, TotalNodes);
    }
}
