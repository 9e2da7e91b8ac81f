using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Sae;

/// <summary>
/// Scores of the SAE nodes at one (site, layer): per position from the end (0 = last token), F feature nodes and one
/// error node. Example means over the examples that have the position, like <see cref="NodeScores"/>.
/// </summary>
public sealed class SaeScores(NodeSite site, int layer, int positions, int features)
{
    /// <summary>The site the SAE reads.</summary>
    public NodeSite Site { get; } = site;
    /// <summary>The layer the SAE reads.</summary>
    public int Layer { get; } = layer;
    /// <summary>Positions scored, counted from the end of the prompt.</summary>
    public int Positions { get; } = positions;
    /// <summary>The SAE's feature count F.</summary>
    public int Features { get; } = features;
    /// <summary>[positions · F], row p is position p from the end.</summary>
    public float[] FeatureScores { get; } = new float[positions * features];
    /// <summary>[positions]: the error node of each position.</summary>
    public float[] ErrorScores { get; } = new float[positions];

    /// <summary>Nodes per position: F features then the error node.</summary>
    public int NodesPerPosition => Features + 1;
    /// <summary>All nodes: positions × (F + 1).</summary>
    public int NodeCount => Positions * NodesPerPosition;

    /// <summary>All node scores in the flat node order p·(F+1) + i, where i = F is position p's error node.</summary>
    public float[] Flat()
    {
        var a = new float[NodeCount];
        for (int p = 0; p < Positions; p++)
        {
            Array.Copy(FeatureScores, p * Features, a, p * NodesPerPosition, Features);
            a[p * NodesPerPosition + Features] = ErrorScores[p];
        }
        return a;
    }
}

/// <summary>
/// Attribution to SAE features and error nodes at one site and layer, from the ordinary site gradient (no extra backward).
/// For a clean/patch pair with site values x_c, x_p and g_x = ∂m/∂x at the clean run (exact for AtP, RelP-rule for RelP):
/// <code>
///   f = enc(x), e = x − dec(f),   g_f = ∂m/∂f = s_out · W_Dᵀ g_x     (W_D = decoder.weight [d, F], see SparseAutoencoder)
///   feature score_i = (f_p,i − f_c,i) · g_f,i
///   error score     = Σ_d g_x,d (e_p − e_c)_d
/// </code>
/// Since dec is affine, Σ_i feature scores + error score = g_x · (x_p − x_c), the site's own AtP/RelP score sum at that
/// position (the chain-rule identity the tests check).
/// </summary>
internal static class SaeAttributor
{
    public static SaeScores Score(Llama model, PromptTask task, SparseAutoencoder sae, NodeSite site, int layer, AttributionOptions options,
        IProgress<WorkProgress>? progress = null)
    {
        if (!task.IsPaired) throw new ArgumentException($"{task.Name}: SAE attribution needs paired prompts (patch_prefix on every line)");
        var rules = options.Method switch
        {
            AttributionMethod.AtP => BackwardRules.Exact,
            AttributionMethod.RelP => options.RelPRules,
            _ => throw new ArgumentException($"SAE attribution supports AtP and RelP, not {options.Method}"),
        };
        var c = model.Config;
        int d = site.Width(c);
        if (d != sae.DModel) throw new ArgumentException($"the SAE reads {sae.DModel}-wide vectors but site {site.Name()} is {d} wide");
        if (layer < 0 || layer >= c.Layers) throw new ArgumentOutOfRangeException(nameof(layer));
        var metric = options.Metric ?? Metric.AttributionDefault(task);
        int positions = task.Pairs.Max(p => p.CleanIds.Length), F = sae.Features;
        var featSum = new double[positions * F];
        var errSum = new double[positions];
        var counts = new int[positions];
        var be = model.Backend;
        int batchSize = Math.Max(1, options.BatchSize);
        for (int start = 0; start < task.Count; start += batchSize)
        {
            var pairs = task.Pairs.Skip(start).Take(batchSize).ToList();
            var clean = new TokenBatch(pairs.Select(p => p.CleanIds).ToList());
            var patch = new TokenBatch(pairs.Select(p => p.PatchIds!).ToList());
            using var cleanPass = model.Forward(clean, LogitRows.Last);
            using var patchPass = model.Forward(patch, LogitRows.None);
            var logits = cleanPass.HostLogits();
            int v = c.VocabSize;
            var dl = new float[logits.Length];
            for (int b = 0; b < pairs.Count; b++) metric.Gradient(logits.AsSpan(b * v, v), pairs[b], dl.AsSpan(b * v, v));
            using var dLogits = be.Upload(dl, pairs.Count, v);
            using var grads = model.Backward(cleanPass, dLogits, rules, [site], lowestLayer: layer);
            var g = grads.Host(site, layer);
            var xc = cleanPass.HostSite(site, layer);
            var xp = patchPass.HostSite(site, layer);
            var fc = new float[F]; var fp = new float[F];
            var hc = new double[d]; var hp = new double[d];
            var gf = new double[F];
            for (int b = 0; b < pairs.Count; b++)
                for (int p = 0; p < clean.Lengths[b]; p++)
                {
                    counts[p]++;
                    int rc = clean.RowFromEnd(b, p), rp = patch.RowFromEnd(b, p);
                    var x1 = xc.AsSpan(rc * d, d); var x2 = xp.AsSpan(rp * d, d); var gx = g.AsSpan(rc * d, d);
                    sae.Encode(x1, fc); sae.Encode(x2, fp);
                    sae.Decode(fc, hc); sae.Decode(fp, hp);
                    sae.FeatureGradient(gx, gf);
                    for (int i = 0; i < F; i++) featSum[p * F + i] += (fp[i] - fc[i]) * gf[i];
                    double err = 0;
                    for (int j = 0; j < d; j++) err += gx[j] * ((x2[j] - hp[j]) - (x1[j] - hc[j]));
                    errSum[p] += err;
                }
            progress?.Report(new WorkProgress($"sae {site.Name()} L{layer}", start + pairs.Count, task.Count));
        }
        var result = new SaeScores(site, layer, positions, F);
        for (int p = 0; p < positions; p++)
        {
            if (counts[p] == 0) continue;
            for (int i = 0; i < F; i++) result.FeatureScores[p * F + i] = (float)(featSum[p * F + i] / counts[p]);
            result.ErrorScores[p] = (float)(errSum[p] / counts[p]);
        }
        return result;
    }
}
