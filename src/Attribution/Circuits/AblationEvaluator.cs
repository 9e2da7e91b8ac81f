using NeuronTrace.Attribution.Metrics;
using NeuronTrace.Attribution.Tasks;
using NeuronTrace.Model;

namespace NeuronTrace.Attribution.Circuits;

/// <summary>
/// Runs the clean prompts of a task with one site mean-ablated by node masks: a node whose mask entry is true keeps the
/// value the (partly ablated) forward computes for it; every other node of the site, in every layer, is replaced by its
/// mean (method.md §5). Many masks run in one batched forward: the prompts are repeated once per mask.
/// </summary>
public sealed class AblationEvaluator
{
    readonly Llama _model;
    readonly PromptTask _task;
    readonly NodeSite _site;
    readonly SiteMeans _means;
    readonly Metric _metric;
    readonly int _positions;
    readonly int _width;

    /// <param name="nodePositions">The positions-from-end the masks cover (the ranking's); later positions count as not in the mask.</param>
    public AblationEvaluator(Llama model, PromptTask task, NodeSite site, SiteMeans means, Metric metric, int nodePositions)
    {
        _model = model; _task = task; _site = site; _means = means; _metric = metric; _positions = nodePositions;
        _width = site.Width(model.Config);
        if (means.Positions < task.Pairs.Max(p => p.CleanIds.Length))
            throw new ArgumentException("the means do not cover every position of the evaluation prompts");
    }

    public int MasksPerForward { get; init; } = 8;
    public long PromptForwards { get; private set; }

    /// <summary>The mean metric over the task's examples for each keep-mask.</summary>
    public double[] Evaluate(IReadOnlyList<bool[]> keepMasks, Action<int>? masksDone = null)
    {
        var result = new double[keepMasks.Count];
        int per = Math.Max(1, MasksPerForward);
        for (int start = 0; start < keepMasks.Count; start += per)
        {
            var chunk = keepMasks.Skip(start).Take(per).ToList();
            var values = EvaluateChunk(chunk);
            values.CopyTo(result, start);
            masksDone?.Invoke(start + chunk.Count);
        }
        return result;
    }

    double[] EvaluateChunk(List<bool[]> masks)
    {
        var c = _model.Config; var be = _model.Backend;
        var pairs = _task.Pairs;
        int B = pairs.Count, R = masks.Count;
        var batch = new TokenBatch(Enumerable.Range(0, R).SelectMany(_ => pairs.Select(p => p.CleanIds)).ToList());
        int T = batch.SeqLen, W = _width;
        using var plan = new InterventionPlan();
        for (int l = 0; l < c.Layers; l++)
        {
            var scale = new float[batch.Rows * W];
            var offset = new float[batch.Rows * W];
            Array.Fill(scale, 1f);
            var mean = _means.Get(_site, l);
            for (int r = 0; r < R; r++)
            {
                var mask = masks[r];
                for (int b = 0; b < B; b++)
                {
                    int len = pairs[b].CleanIds.Length;
                    for (int p = 0; p < len; p++)
                    {
                        int row = (r * B + b) * T + len - 1 - p;
                        int maskBase = (l * _positions + p) * W;
                        for (int i = 0; i < W; i++)
                        {
                            bool keep = p < _positions && mask[maskBase + i];
                            if (keep) continue;
                            scale[row * W + i] = 0f;
                            offset[row * W + i] = mean[p * W + i];
                        }
                    }
                }
            }
            plan.Set(_site, l, be.Upload(scale, batch.Rows, W), be.Upload(offset, batch.Rows, W));
        }
        using var pass = _model.Forward(batch, LogitRows.Last, plan);
        PromptForwards += batch.Size;
        var logits = pass.HostLogits();
        return _metric.MeanPerReplica(logits, c.VocabSize, pairs, R);
    }
}
