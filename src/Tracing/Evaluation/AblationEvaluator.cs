using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Evaluation;

/// <summary>
/// Runs the clean prompts of a task with one site mean-ablated by node masks: a node whose mask entry is true keeps the
/// value the (partly ablated) forward computes for it; every other node of the site, in every layer, is replaced by its
/// mean (docs/method.md §5). Many masks run in one batched forward: the prompts are repeated once per mask.
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
        task.RequireAnswersWithin(model.Config.VocabSize);
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
        // The means go to the backend once per call and are shared by every chunk's plan.
        var means = UploadMeans();
        try
        {
            for (int start = 0; start < keepMasks.Count; start += per)
            {
                var chunk = keepMasks.Skip(start).Take(per).ToList();
                var values = EvaluateChunk(chunk, means);
                values.CopyTo(result, start);
                masksDone?.Invoke(start + chunk.Count);
            }
        }
        finally
        {
            foreach (var m in means) m.Dispose();
        }
        return result;
    }

    Tensor[] UploadMeans()
    {
        var c = _model.Config;
        var means = new Tensor[c.Layers];
        for (int l = 0; l < c.Layers; l++) means[l] = _model.Backend.Upload(_means.Get(_site, l), _means.Positions, _width);
        return means;
    }

    // Prompts are repeated once per mask (replica r, example b); every layer of the site is mean-ablated on the device
    // from one bit per node and mask row. Rows: (r·B + b)·T + t, right-padded; position p from the end of example b
    // is t = len − 1 − p. A padding row keeps its value, a position the masks do not cover is ablated.
    double[] EvaluateChunk(List<bool[]> masks, Tensor[] means)
    {
        var c = _model.Config;
        var pairs = _task.Pairs;
        int B = pairs.Count, R = masks.Count;
        var batch = new TokenBatch(Enumerable.Range(0, R).SelectMany(_ => pairs.Select(p => p.CleanIds)).ToList());
        int T = batch.SeqLen, W = _width, P = _positions, words = AblationMask.WordsPerRow(W);
        var keepRow = new int[batch.Rows];
        var meanRow = new int[batch.Rows];
        Array.Fill(keepRow, -1);
        Array.Fill(meanRow, -1);
        for (int r = 0; r < R; r++)
            for (int b = 0; b < B; b++)
            {
                int len = pairs[b].CleanIds.Length;
                for (int p = 0; p < len; p++)
                {
                    int row = (r * B + b) * T + len - 1 - p;
                    meanRow[row] = p;
                    if (p < P) keepRow[row] = r * P + p;
                }
            }
        using var plan = new InterventionPlan();
        for (int l = 0; l < c.Layers; l++)
        {
            var bits = new uint[R * P * words];
            for (int r = 0; r < R; r++)
                for (int p = 0; p < P; p++)
                    AblationMask.PackRow(masks[r].AsSpan((l * P + p) * W, W), bits.AsSpan((r * P + p) * words, words));
            plan.SetMeanAblation(_site, l, new MeanAblation(means[l], bits, keepRow, meanRow));
        }
        using var pass = _model.Forward(batch, LogitRows.Last, plan);
        PromptForwards += batch.Size;
        var logits = pass.HostLogits();
        return _metric.MeanPerReplica(logits, c.VocabSize, pairs, R);
    }
}
