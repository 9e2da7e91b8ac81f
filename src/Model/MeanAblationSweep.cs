using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Model;

/// <summary>What the sweep planner chose for one forward: its masks (indices into the sweep's list), the layer it starts
/// at (below it every mask keeps everything, so the clean residual is reused), and per layer whether the MLP ran sparse.</summary>
public sealed record SweepChunk(int[] Masks, int StartLayer, bool[] SparseLayers);

/// <summary>
/// Exact shortcuts for a k-sweep that mean-ablates one site in every layer by keep-masks (issue 18,
/// docs/streaming-attention.md "sweep shortcuts"); the plain path is <see cref="InterventionPlan.SetMeanAblation"/>
/// over the whole forward. Three shortcuts, each exact up to rounding:
/// <list type="number">
/// <item>Shared prefix: layers below a mask's lowest ablated unit compute what the clean forward computes, so the clean
/// residual entering each layer is cached once per sweep and a forward starts at its masks' lowest changed layer (the
/// planner orders masks by that layer so a forward's masks share it).</item>
/// <item>Keep-k MLP (site mlp_act, CPU): a layer whose masks keep few neurons runs <see cref="SparseMlpOps"/>,
/// out = C + Σ_{i∈K} W_down[:, i]·(act_i − mean_i), C = W_down·mean per position computed once per sweep.</item>
/// <item>Means once per sweep: uploaded (and C, W_downᵀ built) at construction, shared by every forward.</item>
/// </list>
/// Masks are laid out as the tracing grid: entry (layer · maskPositions + p) · width + unit, p the position from the end;
/// positions at or beyond maskPositions are ablated, padding rows keep their value (no real row reads them).
/// </summary>
public sealed class MeanAblationSweep : IDisposable
{
    readonly Llama _model;
    readonly NodeSite _site;
    readonly IReadOnlyList<int[]> _prompts;
    readonly TokenBatch _clean;
    readonly float[][] _hostMeans;
    readonly Tensor[] _deviceMeans;
    readonly float[][] _cleanInputs;   // r_l of the clean prompts, [B·T, dim] per layer
    readonly float[] _cleanLogits;
    readonly int _width, _maskPositions, _maxLen;
    readonly float[]?[] _constants, _downT;   // per layer, built on the first sparse use

    /// <param name="means">Per layer the site's means, [meanPositions, width], row p = position p from the end.</param>
    public MeanAblationSweep(Llama model, IReadOnlyList<int[]> prompts, NodeSite site, IReadOnlyList<float[]> means, int meanPositions, int maskPositions)
    {
        var c = model.Config;
        _model = model; _site = site; _prompts = prompts; _maskPositions = maskPositions;
        _width = site.Width(c);
        _clean = new TokenBatch(prompts);
        _maxLen = _clean.Lengths.Max();
        if (means.Count != c.Layers) throw new ArgumentException($"{means.Count} layers of means for a {c.Layers}-layer model");
        if (meanPositions < _maxLen) throw new ArgumentException("the means do not cover every position of the evaluation prompts");
        _hostMeans = means.ToArray();
        _deviceMeans = means.Select((m, l) => model.LayerBackend(l).Upload(m, meanPositions, _width)).ToArray();
        using var pass = model.Forward(_clean, LogitRows.Last);
        _cleanInputs = pass.Layers.Select((s, l) => { var h = new float[s.Input.Length]; model.LayerBackend(l).Download(s.Input, h); return h; }).ToArray();
        _cleanLogits = pass.HostLogits();
        _constants = new float[c.Layers][];
        _downT = new float[c.Layers][];
    }

    /// <summary>A layer runs the sparse MLP when its masks keep at most this fraction of the neurons per row on average.</summary>
    public double SparseFraction { get; init; } = 0.125;
    /// <summary>Whether the keep-k MLP may be used (mlp_act on the CPU backend); false: the prefix shortcut only.</summary>
    public bool SparseMlp => _site == NodeSite.MlpAct && _model.Backend is CpuBackend && SparseFraction > 0;

    /// <summary>The lowest layer where <paramref name="mask"/> ablates a unit at a position the prompts have (layers if none).</summary>
    public int FirstChangedLayer(bool[] mask)
    {
        var c = _model.Config;
        if (mask.Length != c.Layers * _maskPositions * _width) throw new ArgumentException($"a keep-mask has {mask.Length} entries, expected {c.Layers * _maskPositions * _width}");
        if (_maxLen > _maskPositions) return 0;   // uncovered positions are ablated in every layer
        for (int l = 0; l < c.Layers; l++)
            if (mask.AsSpan(l * _maskPositions * _width, _maxLen * _width).Contains(false)) return l;
        return c.Layers;
    }

    /// <summary>The planner: masks ordered by first changed layer and kept units, cut into forwards of at most <paramref name="masksPerForward"/>.</summary>
    public IReadOnlyList<SweepChunk> Plan(IReadOnlyList<bool[]> masks, int masksPerForward)
    {
        var first = masks.Select(FirstChangedLayer).ToArray();
        // Then by kept units, so the few-kept masks (top-k and random circuits) share forwards and can run the keep-k
        // MLP, instead of being averaged with their complements into a dense layer.
        var kept = masks.Select(m => Count(m)).ToArray();
        var order = Enumerable.Range(0, masks.Count).OrderBy(i => first[i]).ThenBy(i => kept[i]).ThenBy(i => i).ToArray();
        var chunks = new List<SweepChunk>();
        int per = Math.Max(1, masksPerForward);
        for (int s = 0; s < order.Length; s += per)
        {
            var idx = order.Skip(s).Take(per).ToArray();
            chunks.Add(new SweepChunk(idx, first[idx[0]], ChooseSparse(idx.Select(i => masks[i]).ToList(), first[idx[0]])));
        }
        return chunks;
    }

    bool[] ChooseSparse(IReadOnlyList<bool[]> masks, int start)
    {
        var c = _model.Config;
        var sparse = new bool[c.Layers];
        if (!SparseMlp) return sparse;
        int covered = Math.Min(_maxLen, _maskPositions);
        long realRows = masks.Count * (long)_clean.Lengths.Sum();
        for (int l = start; l < c.Layers; l++)
        {
            long kept = 0;
            foreach (var m in masks)
                for (int p = 0; p < covered; p++)
                {
                    int rowsAtP = _clean.Lengths.Count(n => n > p);
                    kept += (long)rowsAtP * Count(m.AsSpan((l * _maskPositions + p) * _width, _width));
                }
            sparse[l] = kept <= SparseFraction * realRows * _width;
        }
        return sparse;
    }

    static int Count(ReadOnlySpan<bool> a) => a.Length - a.Count(false);

    /// <summary>Last-position logits [masks · B, vocab] (replica-major) of one planned forward.</summary>
    public float[] LastLogits(IReadOnlyList<bool[]> masks, SweepChunk chunk)
    {
        var c = _model.Config;
        int R = masks.Count, B = _prompts.Count, L = c.Layers;
        int start = Math.Min(chunk.StartLayer, masks.Min(FirstChangedLayer));   // a chunk never starts above a mask's change
        if (start == L) return Enumerable.Range(0, R).SelectMany(_ => _cleanLogits).ToArray();
        var batch = new TokenBatch(Enumerable.Range(0, R).SelectMany(_ => _prompts).ToList());
        int T = batch.SeqLen, d = c.Dim, P = _maskPositions, W = _width, words = AblationMask.WordsPerRow(W);
        var clean = _cleanInputs[start];
        var x0 = new float[(long)R * clean.Length];
        for (int r = 0; r < R; r++) clean.CopyTo(x0, (long)r * clean.Length);
        var (keepRow, meanRow) = RowTables(batch, R);

        using var plan = new InterventionPlan();
        var x = _model.InputBackend(start).Upload(x0, batch.Rows, d);
        LayerState? previous = null;
        try
        {
            for (int l = start; l < L; l++)
            {
                Func<LayerState, bool>? mlp = null;
                if (chunk.SparseLayers[l]) mlp = s => { RunSparseMlp(l, s, masks, batch, meanRow); return true; };
                else
                {
                    var bits = new uint[R * P * words];
                    for (int r = 0; r < R; r++)
                        for (int p = 0; p < P; p++)
                            AblationMask.PackRow(masks[r].AsSpan((l * P + p) * W, W), bits.AsSpan((r * P + p) * words, words));
                    plan.SetMeanAblation(_site, l, new MeanAblation(_deviceMeans[l], bits, keepRow, meanRow));
                }
                var state = _model.ForwardLayer(l, previous?.Output ?? x, batch, plan, mlp);
                previous?.Dispose();
                previous = state;
            }
            return _model.LastLogits(previous!.Output, batch);
        }
        finally
        {
            previous?.Dispose();
            x.Dispose();
        }
    }

    // Rows (r·B + b)·T + t, right-padded; position p from the end of example b is t = len − 1 − p. A padding row has
    // mean row −1 (kept), a position the masks do not cover has keep row −1 (ablated).
    (int[] KeepRow, int[] MeanRow) RowTables(TokenBatch batch, int replicas)
    {
        int B = _prompts.Count, T = batch.SeqLen, P = _maskPositions;
        var keepRow = new int[batch.Rows];
        var meanRow = new int[batch.Rows];
        Array.Fill(keepRow, -1);
        Array.Fill(meanRow, -1);
        for (int r = 0; r < replicas; r++)
            for (int b = 0; b < B; b++)
            {
                int len = _prompts[b].Length;
                for (int p = 0; p < len; p++)
                {
                    int row = (r * B + b) * T + len - 1 - p;
                    meanRow[row] = p;
                    if (p < P) keepRow[row] = r * P + p;
                }
            }
        return (keepRow, meanRow);
    }

    // One group per (mask, covered position): the rows of that position in the mask's replica share its kept set.
    void RunSparseMlp(int l, LayerState s, IReadOnlyList<bool[]> masks, TokenBatch batch, int[] meanRow)
    {
        var c = _model.Config; var w = _model.Weights.Layers[l];
        int H = c.HiddenDim, d = c.Dim, B = _prompts.Count, T = batch.SeqLen, P = _maskPositions;
        var down = ((CpuTensor)w.W2).Data;
        var constants = _constants[l] ??= SparseMlpOps.Constants(down, _hostMeans[l], d, H);
        var downT = _downT[l] ??= SparseMlpOps.Transpose(down, d, H);
        int covered = Math.Min(_maxLen, P);
        var groupKept = new List<int> { 0 };
        var groupRows = new List<int> { 0 };
        var kept = new List<int>();
        var rows = new List<int>();
        for (int r = 0; r < masks.Count; r++)
            for (int p = 0; p < covered; p++)
            {
                var m = masks[r].AsSpan((l * P + p) * _width, _width);
                for (int i = 0; i < m.Length; i++) if (m[i]) kept.Add(i);
                for (int b = 0; b < B; b++)
                    if (_prompts[b].Length > p) rows.Add((r * B + b) * T + _prompts[b].Length - 1 - p);
                groupKept.Add(kept.Count);
                groupRows.Add(rows.Count);
            }
        SparseMlpOps.Apply(((CpuTensor)s.FfnNormed).Data, ((CpuTensor)w.W1).Data, ((CpuTensor)w.W3).Data, downT, constants, _hostMeans[l],
            batch.Rows, d, H, meanRow, groupKept.ToArray(), kept.ToArray(), groupRows.ToArray(), rows.ToArray(), ((CpuTensor)s.MlpOut).Data);
    }

    /// <summary>One line per sweep: what the planner chose.</summary>
    public static string Describe(IReadOnlyList<SweepChunk> chunks, int layers)
    {
        if (chunks.Count == 0) return "sweep plan: no masks";
        int masks = chunks.Sum(ch => ch.Masks.Length);
        int layerRuns = chunks.Sum(ch => layers - ch.StartLayer);
        int sparse = chunks.Sum(ch => ch.SparseLayers.Count(x => x));
        var starts = string.Join(" ", chunks.GroupBy(ch => ch.StartLayer).OrderBy(g => g.Key).Select(g => $"L{g.Key}×{g.Count()}"));
        return $"sweep plan: {masks} masks in {chunks.Count} forwards of ≤{chunks.Max(ch => ch.Masks.Length)} masks; start layer (forwards) {starts}; " +
               $"{layerRuns} of {chunks.Count * layers} layer runs done, {sparse} with the keep-k MLP, {layerRuns - sparse} dense";
    }

    public void Dispose()
    {
        foreach (var m in _deviceMeans) m.Dispose();
    }
}
