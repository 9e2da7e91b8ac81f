using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Evaluation;

/// <summary>
/// How a keep-mask ablates the model: the task's clean prompts run with every node outside the mask mean-ablated, and
/// the example-mean metric comes back per mask. Many masks run in one batched forward (the prompts repeated once per
/// mask, replica r = mask r), over at most <see cref="ExamplesPerForward"/> examples at a time, so a forward's memory is
/// bounded by masks × examples per forward, not by the task (issue 15: a 1,145-example evaluation held every example of
/// 8 masks in one forward, 11.8 GB). Subclasses say what a node is (<see cref="SiteMeanAblation"/>: a site's units in every
/// layer; the SAE's features and error nodes); <see cref="Faithfulness"/> turns the metrics into scores.
/// </summary>
internal abstract class CircuitAblation
{
    protected CircuitAblation(Llama model, PromptTask task, Metric metric)
    {
        Model = model; Task = task; Metric = metric;
    }

    protected Llama Model { get; }
    protected PromptTask Task { get; }
    protected Metric Metric { get; }

    public int MasksPerForward { get; init; } = 8;
    /// <summary>Examples per forward (each repeated once per mask); the metric sums run on over the task's example batches.</summary>
    public int ExamplesPerForward { get; init; } = 32;
    /// <summary>Prompt rows run so far (each mask costs one per example).</summary>
    public long PromptForwards { get; protected set; }
    /// <summary>Entries of a keep-mask.</summary>
    public abstract int NodeCount { get; }

    /// <summary>The mean metric over the task's examples for each keep-mask.</summary>
    public double[] Evaluate(IReadOnlyList<bool[]> keepMasks, Action<int>? masksDone = null)
    {
        foreach (var m in keepMasks)
            if (m.Length != NodeCount) throw new ArgumentException($"a keep-mask has {m.Length} entries, expected {NodeCount}");
        return EvaluateMasks(keepMasks, masksDone);
    }

    /// <summary>
    /// The metric per mask, masks checked; by default <see cref="MasksPerForward"/> at a time in the given order, for each
    /// of the task's example batches in order (each mask's sum runs on across the batches, so the example mean is the one
    /// a single forward over every example gives, added in the same order). Batches outside, mask chunks inside: one
    /// batch's few shapes repeat while it runs, which the CPU tensor pool keeps; cycling every batch per chunk evicted them.
    /// </summary>
    protected virtual double[] EvaluateMasks(IReadOnlyList<bool[]> keepMasks, Action<int>? masksDone)
    {
        var sums = new double[keepMasks.Count];
        int per = Math.Max(1, MasksPerForward);
        var batches = ExampleBatches().ToList();
        using var sweep = BeginSweep();
        for (int e = 0; e < batches.Count; e++)
            for (int start = 0; start < keepMasks.Count; start += per)
            {
                var chunk = keepMasks.Skip(start).Take(per).ToList();
                var chunkSums = sums.AsSpan(start, chunk.Count).ToArray();
                AddChunk(chunk, batches[e], chunkSums);
                chunkSums.CopyTo(sums, start);
                masksDone?.Invoke((int)(((long)e * keepMasks.Count + start + chunk.Count) / batches.Count));
            }
        return sums.Select(x => x / Task.Count).ToArray();
    }

    /// <summary>The task's examples in runs of at most <see cref="ExamplesPerForward"/>, in order.</summary>
    protected IEnumerable<IReadOnlyList<PromptPair>> ExampleBatches()
    {
        int per = Math.Max(1, ExamplesPerForward);
        for (int start = 0; start < Task.Count; start += per)
            yield return Task.Pairs.Skip(start).Take(per).ToList();
    }

    /// <summary>State shared by every chunk of one <see cref="Evaluate"/> call (e.g. means on the backend); disposed after it.</summary>
    protected virtual IDisposable? BeginSweep() => null;

    /// <summary>Adds each mask's metric over <paramref name="examples"/> (in order) to <paramref name="sums"/>, in one forward.</summary>
    protected abstract void AddChunk(IReadOnlyList<bool[]> masks, IReadOnlyList<PromptPair> examples, double[] sums);

    /// <summary>The examples' clean prompts once per mask: row s is example s % B of replica s / B.</summary>
    protected static TokenBatch ReplicatedBatch(IReadOnlyList<PromptPair> examples, int replicas) =>
        new(Enumerable.Range(0, replicas).SelectMany(_ => examples.Select(p => p.CleanIds)).ToList());

    /// <summary>Runs the batch under the plan and adds the last-position metric per replica into <paramref name="sums"/>.</summary>
    protected void AddMetricPerReplica(TokenBatch batch, InterventionPlan plan, IReadOnlyList<PromptPair> examples, double[] sums)
    {
        using var pass = Model.Forward(batch, LogitRows.Last, plan);
        PromptForwards += batch.Size;
        Metric.AddPerReplica(pass.HostLogits(), Model.Config.VocabSize, examples, sums);
    }
}
