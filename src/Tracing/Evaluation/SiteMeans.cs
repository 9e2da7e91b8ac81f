using NeuronTrace.Model;

namespace NeuronTrace.Tracing.Evaluation;

/// <summary>
/// Mean activation of every node of some sites over a set of prompts, per layer and position from the end
/// (docs/method.md §5: the ablation values, averaged over the batch only, position by position).
/// </summary>
internal sealed class SiteMeans
{
    readonly Dictionary<(NodeSite, int), float[]> _means = new();

    SiteMeans(LlamaConfig config, int positions) { Config = config; Positions = positions; }

    public LlamaConfig Config { get; }
    public int Positions { get; }

    /// <summary>[positions · width] means; row p is position p from the end.</summary>
    public float[] Get(NodeSite site, int layer) => _means[(site, layer)];

    public static SiteMeans Compute(Llama model, IReadOnlyList<int[]> prompts, IReadOnlyList<NodeSite> sites, int batchSize = 64)
    {
        if (prompts.Count == 0) throw new ArgumentException("site means need at least one prompt");
        var c = model.Config;
        int positions = prompts.Max(p => p.Length);
        var result = new SiteMeans(c, positions);
        var sums = new Dictionary<(NodeSite, int), double[]>();
        foreach (var s in sites)
            for (int l = 0; l < c.Layers; l++) sums[(s, l)] = new double[positions * s.Width(c)];
        var counts = new int[positions];
        for (int start = 0; start < prompts.Count; start += batchSize)
        {
            var batch = new TokenBatch(prompts.Skip(start).Take(batchSize).ToList());
            using var pass = model.Forward(batch, LogitRows.None);
            for (int b = 0; b < batch.Size; b++)
                for (int p = 0; p < batch.Lengths[b]; p++) counts[p]++;
            foreach (var s in sites)
            {
                int w = s.Width(c);
                for (int l = 0; l < c.Layers; l++)
                {
                    var a = pass.HostSite(s, l);
                    var sum = sums[(s, l)];
                    for (int b = 0; b < batch.Size; b++)
                        for (int p = 0; p < batch.Lengths[b]; p++)
                        {
                            int row = batch.RowFromEnd(b, p);
                            for (int i = 0; i < w; i++) sum[p * w + i] += a[row * w + i];
                        }
                }
            }
        }
        foreach (var (key, sum) in sums)
        {
            int w = key.Item1.Width(c);
            var m = new float[sum.Length];
            for (int p = 0; p < positions; p++)
                for (int i = 0; i < w; i++) m[p * w + i] = counts[p] == 0 ? 0f : (float)(sum[p * w + i] / counts[p]);
            result._means[key] = m;
        }
        return result;
    }
}
