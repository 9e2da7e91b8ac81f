using NeuronTrace.Model;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Sharding;

/// <summary>
/// One shard of an attribution: the slice of the task's examples <see cref="ShardSlice.Range"/> gives, scored in
/// chunks of <see cref="ShardManifest.CheckpointItems"/> examples; after each chunk the fp64 sums and the manifest are
/// written (sums file first, manifest last, both atomically), so a shard killed at any moment resumes from its last
/// chunk and, adding the same chunks in the same order, ends with the same bytes as an uninterrupted run.
/// </summary>
internal static class AttributionShard
{
    /// <param name="model">The model on its backend.</param>
    /// <param name="task">The whole task; the shard scores only its slice.</param>
    /// <param name="identity">Command, model, task and options of the run (the shard fields are filled in here).</param>
    /// <param name="methods">Each method's name and options; the metric and baseline must already be fixed on the whole task.</param>
    /// <param name="slice">Which shard of how many: a contiguous slice of the task's examples.</param>
    /// <param name="dir">The shard folder: sums and manifest are written (and resumed from) here.</param>
    /// <param name="checkpointItems">Examples per checkpoint, at least 1 (a resumed shard keeps its first run's).</param>
    /// <param name="stop">Checked after each checkpoint: when set, returns the unfinished manifest (the pre-emption path).</param>
    /// <param name="progress">Progress per batch; null for none.</param>
    public static ShardManifest Run(Llama model, PromptTask task, IReadOnlyList<(string Name, AttributionOptions Options)> methods,
        ShardManifest identity, ShardSlice slice, string dir, int checkpointItems, CancellationToken stop = default,
        IProgress<WorkProgress>? progress = null)
    {
        if (checkpointItems < 1) throw new ArgumentException("a checkpoint needs at least one example");
        if (methods.Count == 0) throw new ArgumentException("no attribution method");
        var sites = methods[0].Options.Sites.Distinct().ToArray();
        if (methods.Any(m => !m.Options.Sites.Distinct().SequenceEqual(sites)))
            throw new ArgumentException("every method of a shard scores the same sites");
        if (methods.Any(m => m.Options.Baseline == Baseline.Mean))
            throw new ArgumentException("the mean baseline is a mean over the whole task, which a shard does not see; shard with the patch or zero baseline");
        var (first, end) = slice.Range(task.Count);
        var m = Identity(identity, model.Config, methods.Select(x => x.Name).ToArray(), sites, task, slice, first, end, checkpointItems);
        Directory.CreateDirectory(dir);
        // A write cut short by SIGKILL leaves its temporary file; the manifest never names one.
        foreach (var f in Directory.GetFiles(dir, ".*.tmp")) File.Delete(f);  // OutputFiles temporaries of an interrupted checkpoint

        var partial = new PartialScores(model.Config, m.Methods, sites, m.Positions);
        if (ShardManifest.TryRead(dir) is { } saved)
        {
            string? why = m.Disagreement(saved) ?? (saved.ShardIndex != slice.Index ? $"shard {saved.ShardIndex}/{saved.ShardCount}" : null);
            if (why is not null) throw new ArgumentException($"{dir} holds {saved.Describe(dir)} of another run ({why}); give a new folder");
            if (saved.Complete) return saved;
            partial = PartialScores.Load(dir, saved);
            m.Done = saved.Done;
            m.CheckpointItems = saved.CheckpointItems;
        }

        int count = end - first;
        while (m.Done < count)
        {
            int from = first + m.Done, to = Math.Min(end, from + m.CheckpointItems);
            var chunk = new PromptTask(task.Name, task.Pairs.Skip(from).Take(to - from).ToList());
            var atPosition = new int[m.Positions];
            foreach (var p in chunk.Pairs)
                for (int i = 0; i < p.CleanIds.Length; i++) atPosition[i]++;
            foreach (var (name, options) in methods)
                partial.AddMeans(name, Attributor.Score(model, chunk, options), atPosition);
            partial.AddCounts(chunk.Pairs.Select(p => p.CleanIds));
            m.Done = to - first;
            m.Complete = m.Done == count;
            Save(dir, m, partial);
            progress?.Report(new($"shard {slice}", m.Done, count));
            if (!m.Complete && stop.IsCancellationRequested) return m;
        }
        if (count == 0) { m.Complete = true; Save(dir, m, partial); }
        return m;
    }

    static ShardManifest Identity(ShardManifest id, LlamaConfig config, string[] methods, NodeSite[] sites, PromptTask task, ShardSlice slice,
        int first, int end, int checkpointItems) => new()
    {
        Kind = ShardManifest.AttributionKind, Command = id.Command, ModelPath = id.ModelPath, ModelSha256 = id.ModelSha256,
        TaskPath = id.TaskPath, TaskSha256 = id.TaskSha256, Options = id.Options,
        ShardIndex = slice.Index, ShardCount = slice.Count, Total = task.Count, First = first, End = end, CheckpointItems = checkpointItems,
        ModelConfig = config, Methods = methods, Sites = sites.Select(s => s.Name()).ToArray(),
        // Positions of the whole task, not of the slice: every shard has the same layout.
        Positions = task.Count == 0 ? 0 : task.Pairs.Max(p => p.CleanIds.Length),
    };

    /// <summary>Sums under a new name, then the manifest naming them (the commit), then the previous sums file goes.</summary>
    internal static void Save(string dir, ShardManifest m, PartialScores partial)
    {
        m.SumsFile = $"sums-{m.Done}.f64";
        m.Counts = partial.Counts.ToArray();
        partial.Write(Path.Combine(dir, m.SumsFile));
        m.Write(dir);
        foreach (var f in Directory.GetFiles(dir, "sums-*.f64"))
            if (Path.GetFileName(f) != m.SumsFile) File.Delete(f);
    }
}
