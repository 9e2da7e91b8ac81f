using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Model;

/// <summary>How one layer of a planned forward runs (the site's units of that layer under the forward's masks).</summary>
internal enum LayerRun
{
    /// <summary>The plain masked layer.</summary>
    Dense,
    /// <summary>The site's keep-k product: the sparse MLP (mlp_act), or only the kept output columns of W_down (mlp_out,
    /// resid) or W_o (attn).</summary>
    KeepK,
    /// <summary>No unit of the site is kept at any real position, so the site is its means and what only feeds it is
    /// skipped: the MLP (mlp_out), the attention and W_o (attn), the attention (attn_z: W_o then reads the means), the layer and all below (resid).</summary>
    Constant,
}

/// <summary>What the sweep planner chose for one forward: its masks (indices into the sweep's list), the layer it starts
/// at, and per layer how it runs. Below the start layer every mask keeps everything (the clean residual is reused), or
/// with <paramref name="StartsFromMeans"/> (site resid) layer StartLayer − 1 is constant, so its output is the means.</summary>
internal sealed record SweepChunk(int[] Masks, int StartLayer, LayerRun[] Layers, bool StartsFromMeans = false);

/// <summary>
/// Exact shortcuts for a k-sweep that mean-ablates one site in every layer by keep-masks (issue 18,
/// docs/streaming-attention.md "sweep shortcuts"); the plain path is <see cref="InterventionPlan.SetMeanAblation"/>
/// over the whole forward. Each shortcut is exact up to rounding:
/// <list type="number">
/// <item>Shared prefix: layers below a mask's lowest ablated unit compute what the clean forward computes, so the clean
/// residual entering each layer is kept on the backend once per sweep and a forward starts at its masks' lowest changed
/// layer (the planner orders masks by that layer so a forward's masks share it).</item>
/// <item>Keep-k products (CPU, fp32 weights): a layer whose masks keep few units computes only what the kept units need
/// (<see cref="LayerRun.KeepK"/>; mlp_act: <see cref="SparseMlpOps.Apply"/>, mlp_out/resid/attn: <see cref="SparseMlpOps.KeptOutputs"/>).</item>
/// <item>Constant layers (any backend): a layer keeping no unit skips what only feeds the site (<see cref="LayerRun.Constant"/>);
/// for resid the forward starts above the highest such layer, from the means.</item>
/// <item>Means once per sweep: uploaded (and C, W_downᵀ built) at construction or first use, shared by every forward.</item>
/// </list>
/// Masks are laid out as the tracing grid: entry (layer · maskPositions + p) · width + unit, p the position from the end;
/// positions at or beyond maskPositions are ablated, padding rows keep their value (no real row reads them).
/// The per-layer hooks are in MeanAblationSweep.Layers.cs.
/// </summary>
internal sealed partial class MeanAblationSweep : IDisposable
{
    readonly Llama _model;
    readonly NodeSite _site;
    readonly IReadOnlyList<int[]> _prompts;
    readonly TokenBatch _clean;
    readonly float[][] _hostMeans;
    readonly Tensor[] _deviceMeans;
    readonly Tensor[] _cleanInputs;   // r_l of the clean prompts, [B·T, dim] per layer, on the backend
    readonly float[] _cleanLogits;
    readonly int _width, _maskPositions, _maxLen;

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
        // The clean inputs stay on the backend a forward from that layer starts on (where the layer below left its output):
        // a forward gathers its replicas from them (no upload per forward).
        _cleanInputs = pass.Layers.Select((s, l) =>
        {
            IBackend from = model.LayerBackend(l), to = model.InputBackend(l);
            if (!ReferenceEquals(from, to)) return LayerPlacement.Transfer(s.Input, from, to);
            var h = to.AllocateUninitialized(s.Input.Shape);
            to.Copy(s.Input, h);
            return h;
        }).ToArray();
        _cleanLogits = pass.HostLogits();
        _constants = new float[c.Layers][];
        _downT = new float[c.Layers][];
    }

    /// <summary>A layer runs its keep-k product when its masks keep at most this fraction of the units per row on average.</summary>
    public double SparseFraction { get; init; } = 0.125;

    /// <summary>Whether the keep-k products may be used: the CPU backend with fp32 weights, a site that has one (attn_z has none).</summary>
    public bool KeepK => SparseFraction > 0 && _model.Backend is CpuBackend && _site != NodeSite.AttnZ &&
                         _model.Weights.Layers[0] is { W1: CpuTensor, W2: CpuTensor, W3: CpuTensor, Wo: CpuTensor };

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
        // products, instead of being averaged with their complements into a dense layer.
        var kept = masks.Select(m => Count(m)).ToArray();
        var order = Enumerable.Range(0, masks.Count).OrderBy(i => first[i]).ThenBy(i => kept[i]).ThenBy(i => i).ToArray();
        var chunks = new List<SweepChunk>();
        int per = Math.Max(1, masksPerForward);
        for (int s = 0; s < order.Length; s += per)
        {
            var idx = order.Skip(s).Take(per).ToArray();
            int start = first[idx[0]];
            var layers = ChooseLayers(idx.Select(i => masks[i]).ToList(), start);
            // resid: the output of a constant layer is the means, so nothing below the highest one matters.
            int top = _site == NodeSite.Resid ? Array.LastIndexOf(layers, LayerRun.Constant) : -1;
            chunks.Add(top >= start ? new SweepChunk(idx, top + 1, layers, StartsFromMeans: true) : new SweepChunk(idx, start, layers));
        }
        return chunks;
    }

    LayerRun[] ChooseLayers(IReadOnlyList<bool[]> masks, int start)
    {
        var c = _model.Config;
        var runs = new LayerRun[c.Layers];
        int covered = Math.Min(_maxLen, _maskPositions);
        long realRows = masks.Count * (long)_clean.Lengths.Sum();
        var rowsAt = Enumerable.Range(0, covered).Select(p => _clean.Lengths.Count(n => n > p)).ToArray();
        bool keepK = KeepK;
        for (int l = start; l < c.Layers; l++)
        {
            long kept = 0;
            foreach (var m in masks)
                for (int p = 0; p < covered; p++)
                    kept += (long)rowsAt[p] * Count(m.AsSpan((l * _maskPositions + p) * _width, _width));
            // mlp_act keeping nothing is the keep-k MLP's C alone (CPU); on other backends it stays dense.
            runs[l] = kept == 0 && _site != NodeSite.MlpAct ? LayerRun.Constant
                : keepK && kept <= SparseFraction * realRows * _width ? LayerRun.KeepK : LayerRun.Dense;
        }
        return runs;
    }

    static int Count(ReadOnlySpan<bool> a) => a.Length - a.Count(false);

    /// <summary>Last-position logits [masks · B, vocab] (replica-major) of one planned forward.</summary>
    public float[] LastLogits(IReadOnlyList<bool[]> masks, SweepChunk chunk)
    {
        var c = _model.Config;
        int R = masks.Count, L = c.Layers;
        int start = chunk.StartLayer;
        if (chunk.StartsFromMeans)
        {
            if (_site != NodeSite.Resid || start < 1 || masks.Any(m => !KeepsNothing(m, start - 1)))
                throw new ArgumentException($"the chunk starts from the resid means of layer {start - 1}, but a mask keeps a unit there");
        }
        else start = Math.Min(start, masks.Min(FirstChangedLayer));   // a chunk never starts above a mask's change
        if (start == L && !chunk.StartsFromMeans) return Enumerable.Range(0, R).SelectMany(_ => _cleanLogits).ToArray();
        var be = _model.InputBackend(start);   // the means of layer start − 1 and the clean inputs of layer start live there
        var batch = new TokenBatch(Enumerable.Range(0, R).SelectMany(_ => _prompts).ToList());
        var (keepRow, meanRow) = RowTables(batch, R);
        var x = be.AllocateUninitialized(batch.Rows, c.Dim);
        if (chunk.StartsFromMeans) be.GatherRows(_deviceMeans[start - 1], meanRow.Select(m => Math.Max(m, 0)).ToArray(), x);   // padding rows: any row
        else
        {
            int cleanRows = _clean.Rows;   // the same prompts, so the same T: replica row i is clean row i mod B·T
            be.GatherRows(_cleanInputs[start], Enumerable.Range(0, batch.Rows).Select(i => i % cleanRows).ToArray(), x);
        }

        using var plan = new InterventionPlan();
        LayerState? previous = null;
        try
        {
            for (int l = start; l < L; l++)
            {
                var run = chunk.Layers[l];
                // The keep-k MLP writes mlp_out itself, its ablation folded in; every other layer is ablated as usual.
                MeanAblation? ablation = null;
                if (!(run == LayerRun.KeepK && _site == NodeSite.MlpAct))
                    plan.SetMeanAblation(_site, l, ablation = new MeanAblation(_deviceMeans[l], PackBits(masks, l), keepRow, meanRow));
                var hooks = run == LayerRun.Dense && l < L - 1 ? null : new LayerHooks(this, l, run, masks, batch, meanRow, ablation);
                var state = _model.ForwardLayer(l, previous?.Output ?? x, batch, plan, hooks);
                previous?.Dispose();
                previous = state;
            }
            return _model.LastLogits(previous?.Output ?? x, batch);
        }
        finally
        {
            previous?.Dispose();
            x.Dispose();
        }
    }

    bool KeepsNothing(bool[] mask, int layer) =>
        !mask.AsSpan(layer * _maskPositions * _width, Math.Min(_maxLen, _maskPositions) * _width).Contains(true);

    uint[] PackBits(IReadOnlyList<bool[]> masks, int l)
    {
        int P = _maskPositions, W = _width, words = AblationMask.WordsPerRow(W);
        var bits = new uint[masks.Count * P * words];
        for (int r = 0; r < masks.Count; r++)
            for (int p = 0; p < P; p++)
                AblationMask.PackRow(masks[r].AsSpan((l * P + p) * W, W), bits.AsSpan((r * P + p) * words, words));
        return bits;
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

    /// <summary>One line per sweep: what the planner chose.</summary>
    public string Describe(IReadOnlyList<SweepChunk> chunks)
    {
        int layers = _model.Config.Layers;
        if (chunks.Count == 0) return "sweep plan: no masks";
        int masks = chunks.Sum(ch => ch.Masks.Length);
        int layerRuns = chunks.Sum(ch => layers - ch.StartLayer);
        int Runs(LayerRun run) => chunks.Sum(ch => ch.Layers.Skip(ch.StartLayer).Count(x => x == run));
        var starts = string.Join(" ", chunks.GroupBy(ch => ch.StartLayer).OrderBy(g => g.Key).Select(g => $"L{g.Key}×{g.Count()}"));
        string keepK = _site switch { NodeSite.MlpAct => "MLP", NodeSite.Attn => "W_o columns", NodeSite.AttnZ => "product (none for attn_z)", _ => "W_down columns" };
        int fromMeans = chunks.Count(ch => ch.StartsFromMeans);
        return $"sweep plan ({_site.Name()}): {masks} masks in {chunks.Count} forwards of ≤{chunks.Max(ch => ch.Masks.Length)} masks; start layer (forwards) {starts}" +
               (fromMeans > 0 ? $" ({fromMeans} from the means of a constant resid layer)" : "") + "; " +
               $"{layerRuns} of {chunks.Count * layers} layer runs done, {Runs(LayerRun.KeepK)} with the keep-k {keepK}, " +
               $"{Runs(LayerRun.Constant)} constant, {Runs(LayerRun.Dense)} dense; top layer past its attention on the last rows only";
    }

    public void Dispose()
    {
        foreach (var m in _deviceMeans) m.Dispose();
        foreach (var t in _cleanInputs) t.Dispose();
    }
}
