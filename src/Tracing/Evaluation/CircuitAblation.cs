using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Evaluation;

/// <summary>
/// How a keep-mask ablates the model: the task's clean prompts run with every node outside the mask mean-ablated, and
/// the example-mean metric comes back per mask. Many masks run in one batched forward (the prompts repeated once per
/// mask, replica r = mask r). Subclasses say what a node is (<see cref="SiteMeanAblation"/>: a site's units in every
/// layer; the SAE's features and error nodes); <see cref="Faithfulness"/> turns the metrics into scores.
/// </summary>
public abstract class CircuitAblation
{
    protected CircuitAblation(Llama model, PromptTask task, Metric metric)
    {
        Model = model; Task = task; Metric = metric;
    }

    protected Llama Model { get; }
    protected PromptTask Task { get; }
    protected Metric Metric { get; }

    public int MasksPerForward { get; init; } = 8;
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

    /// <summary>The metric per mask, masks checked; by default <see cref="MasksPerForward"/> at a time in the given order.</summary>
    protected virtual double[] EvaluateMasks(IReadOnlyList<bool[]> keepMasks, Action<int>? masksDone)
    {
        var result = new double[keepMasks.Count];
        int per = Math.Max(1, MasksPerForward);
        using var sweep = BeginSweep();
        for (int start = 0; start < keepMasks.Count; start += per)
        {
            var chunk = keepMasks.Skip(start).Take(per).ToList();
            EvaluateChunk(chunk).CopyTo(result, start);
            masksDone?.Invoke(start + chunk.Count);
        }
        return result;
    }

    /// <summary>State shared by every chunk of one <see cref="Evaluate"/> call (e.g. means on the backend); disposed after it.</summary>
    protected virtual IDisposable? BeginSweep() => null;

    /// <summary>The metric per mask for masks that run in one forward.</summary>
    protected abstract double[] EvaluateChunk(IReadOnlyList<bool[]> masks);

    /// <summary>The clean prompts once per mask: row s is example s % B of replica s / B.</summary>
    protected TokenBatch ReplicatedBatch(int replicas) =>
        new(Enumerable.Range(0, replicas).SelectMany(_ => Task.Pairs.Select(p => p.CleanIds)).ToList());

    /// <summary>Runs the batch under the plan and reduces the last-position logits to the metric per replica.</summary>
    protected double[] MetricPerReplica(TokenBatch batch, InterventionPlan plan, int replicas)
    {
        using var pass = Model.Forward(batch, LogitRows.Last, plan);
        PromptForwards += batch.Size;
        return Metric.MeanPerReplica(pass.HostLogits(), Model.Config.VocabSize, Task.Pairs, replicas);
    }
}
