using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Sae;

/// <summary>
/// Mean SAE features and mean SAE error at one (site, layer) over some prompts, per position from the end
/// (docs/method.md §5: the ablation values, averaged over the batch only).
/// </summary>
internal sealed class SaeSiteMeans
{
    SaeSiteMeans(int positions, int features, int dModel)
    {
        Positions = positions;
        Features = new float[positions * features];
        Error = new float[positions * dModel];
    }

    public int Positions { get; }
    /// <summary>[positions · F].</summary>
    public float[] Features { get; }
    /// <summary>[positions · d].</summary>
    public float[] Error { get; }

    public static SaeSiteMeans Compute(Llama model, SparseAutoencoder sae, NodeSite site, int layer, IReadOnlyList<int[]> prompts, int batchSize = 64)
    {
        int positions = prompts.Max(p => p.Length), F = sae.Features, d = sae.DModel;
        var fSum = new double[positions * F];
        var eSum = new double[positions * d];
        var counts = new int[positions];
        var f = new float[F];
        var xh = new double[d];
        for (int start = 0; start < prompts.Count; start += batchSize)
        {
            var batch = new TokenBatch(prompts.Skip(start).Take(batchSize).ToList());
            using var pass = model.Forward(batch, LogitRows.None);
            var x = pass.HostSite(site, layer);
            for (int b = 0; b < batch.Size; b++)
                for (int p = 0; p < batch.Lengths[b]; p++)
                {
                    counts[p]++;
                    var xr = x.AsSpan(batch.RowFromEnd(b, p) * d, d);
                    sae.Encode(xr, f);
                    sae.Decode(f, xh);
                    for (int i = 0; i < F; i++) fSum[p * F + i] += f[i];
                    for (int j = 0; j < d; j++) eSum[p * d + j] += xr[j] - xh[j];
                }
        }
        var m = new SaeSiteMeans(positions, F, d);
        for (int p = 0; p < positions; p++)
        {
            if (counts[p] == 0) continue;
            for (int i = 0; i < F; i++) m.Features[p * F + i] = (float)(fSum[p * F + i] / counts[p]);
            for (int j = 0; j < d; j++) m.Error[p * d + j] = (float)(eSum[p * d + j] / counts[p]);
        }
        return m;
    }
}

/// <summary>How ablation treats the SAE error nodes (docs/method.md §5.7, the reference code's <c>handle_errors</c>).</summary>
internal enum SaeErrorHandling
{
    /// <summary>The error node is a unit like a feature: kept if its mask entry is set, else mean-ablated.</summary>
    Default,
    /// <summary>Errors are always mean-ablated.</summary>
    Remove,
    /// <summary>Errors are never ablated.</summary>
    Keep,
}

/// <summary>
/// SAE circuits of one (site, layer): the task's clean prompts run with SAE nodes mean-ablated by keep-masks
/// (docs/method.md §5, error nodes "default": the error node is a unit, kept if selected). Inside the forward, at every
/// real row the site value x — which upstream edits may already have changed — is re-encoded and replaced by
/// <code>  x ← dec(f') + e',   f'_i = keep_i ? f_i : mean_f[p, i],   e' = keep_err ? e : mean_e[p],   f = enc(x), e = x − dec(f)</code>
/// in double, rounded once to float (so a full keep-mask reproduces x exactly). A mask has <see cref="SaeScores.NodeCount"/>
/// entries in the order p·(F+1) + i (i = F: the error node); positions at or beyond the mask's are fully ablated.
/// </summary>
internal sealed class SaeMeanAblation : CircuitAblation
{
    readonly SparseAutoencoder _sae;
    readonly NodeSite _site;
    readonly int _layer;
    readonly SaeSiteMeans _means;
    readonly int _positions;

    public SaeMeanAblation(Llama model, PromptTask task, SparseAutoencoder sae, NodeSite site, int layer, SaeSiteMeans means,
        Metric metric, int nodePositions) : base(model, task, metric)
    {
        _sae = sae; _site = site; _layer = layer; _means = means; _positions = nodePositions;
        if (site.Width(model.Config) != sae.DModel) throw new ArgumentException($"the SAE reads {sae.DModel}-wide vectors but site {site.Name()} is {site.Width(model.Config)} wide");
        if (means.Positions < task.Pairs.Max(p => p.CleanIds.Length))
            throw new ArgumentException("the SAE means do not cover every position of the evaluation prompts");
    }

    public SaeErrorHandling ErrorHandling { get; init; } = SaeErrorHandling.Default;
    int NodesPerPosition => _sae.Features + 1;
    /// <summary>The masks' layout: one layer, the mask's positions, F features + the error node.</summary>
    public NodeGrid Grid => new(1, _positions, NodesPerPosition);
    public override int NodeCount => Grid.Count;

    protected override void AddChunk(IReadOnlyList<bool[]> masks, IReadOnlyList<PromptPair> examples, double[] sums)
    {
        int B = examples.Count, R = masks.Count;
        var batch = ReplicatedBatch(examples, R);
        using var plan = new InterventionPlan();
        plan.SetTransform(_site, _layer, value => Replace(value, batch, masks, B));
        AddMetricPerReplica(batch, plan, examples, sums);
    }

    void Replace(Tensor value, TokenBatch batch, IReadOnlyList<bool[]> masks, int promptsPerMask)
    {
        var be = Model.Backend;
        int d = _sae.DModel, F = _sae.Features, T = batch.SeqLen;
        var x = new float[value.Length];
        be.Download(value, x);
        Parallel.For(0, batch.Size, () => (f: new float[F], fa: new float[F], xh: new double[d], xa: new double[d]), (s, _, buf) =>
        {
            var mask = masks[s / promptsPerMask];
            int len = batch.Lengths[s];
            for (int p = 0; p < len; p++)
            {
                int row = batch.RowFromEnd(s, p);
                var xr = x.AsSpan(row * d, d);
                _sae.Encode(xr, buf.f);
                _sae.Decode(buf.f, buf.xh);
                bool inMask = p < _positions;
                int at = Grid.Flat(0, p, 0);
                bool changed = false;
                for (int i = 0; i < F; i++)
                {
                    bool keep = inMask && mask[at + i];
                    buf.fa[i] = keep ? buf.f[i] : _means.Features[p * F + i];
                    changed |= !keep;
                }
                // dec(f') with f' = f reuses dec(f).
                if (changed) _sae.Decode(buf.fa, buf.xa); else buf.xh.AsSpan().CopyTo(buf.xa);
                bool keepErr = ErrorHandling switch
                {
                    SaeErrorHandling.Keep => true,
                    SaeErrorHandling.Remove => false,
                    _ => inMask && mask[at + F],
                };
                for (int j = 0; j < d; j++)
                {
                    double e = keepErr ? xr[j] - buf.xh[j] : _means.Error[p * d + j];
                    xr[j] = (float)(buf.xa[j] + e);
                }
            }
            return buf;
        }, _ => { });
        using var upload = be.Upload(x, value.Shape);
        be.Copy(upload, value);
    }
}

/// <summary>One k of an SAE sweep.</summary>
public sealed record SaeSweepPoint(int K, double Faithfulness, double Completeness, int TotalNodes);

/// <summary>Top-k SAE circuits (features and error nodes ranked together by |score|) evaluated by mean ablation.</summary>
internal static class SaeCircuitSweep
{
    /// <summary>SAE nodes (p·(F+1)+i) by descending |score|, ties by index: the <see cref="NodeRanking"/> of the flat scores.</summary>
    public static NodeRanking Ranking(SaeScores scores) => new(scores.Flat(), new NodeGrid(1, scores.Positions, scores.NodesPerPosition));

    public static IReadOnlyList<SaeSweepPoint> Run(Llama model, SaeScores scores, SparseAutoencoder sae, PromptTask evalTask, SaeSiteMeans means,
        IReadOnlyList<int> ks)
    {
        var metric = Metric.EvaluationDefault(evalTask);
        var evaluator = new Faithfulness(new SaeMeanAblation(model, evalTask, sae, scores.Site, scores.Layer, means, metric, scores.Positions));
        var ranking = Ranking(scores);
        var s = evaluator.Score(ks.Select(ranking.TopK).ToList());
        return ks.Select((k, j) => new SaeSweepPoint(k, s[j].Faithfulness, s[j].Completeness, ranking.Count)).ToList();
    }
}
