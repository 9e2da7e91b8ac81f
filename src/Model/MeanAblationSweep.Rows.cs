using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// The clean row prefix of a dense layer (issue 18, "fewer rows recomputed"): attention is causal and every other op
/// of a block is per row, so a row at time t of a mask's replica keeps its clean value in layer l as long as the mask
/// ablates nothing at a time ≤ t in layers ≤ l. Such a layer's MLP then runs on the changed rows alone, the prefix rows
/// take the clean forward's MLP output (cached once per example batch); attention still runs on every row, as the
/// changed rows read the prefix rows' keys and values.
/// </summary>
internal sealed partial class MeanAblationSweep
{
    /// <summary>A dense layer runs its MLP on the changed rows alone when they are at most this fraction of the real rows.</summary>
    const double PartialRowsFraction = 0.9;

    /// <summary>Dense layer runs so far whose MLP ran on the changed rows alone, and the real rows they left to the clean MLP output.</summary>
    public (int LayerRuns, long PrefixRows, long RealRows) PartialRowsDone { get; private set; }

    Tensor[]? _cleanMlpOut;   // the clean forward's mlp_out per layer below the top, [B·T, dim] on LayerBackend(l)

    /// <summary>Per layer and example, the earliest time <paramref name="mask"/> ablates in that layer or below (the prompt's length if none).</summary>
    int[][] ChangedFrom(bool[] mask)
    {
        int L = _model.Config.Layers, B = _prompts.Count, P = _maskPositions;
        var from = new int[L][];
        for (int l = 0; l < L; l++)
        {
            from[l] = new int[B];
            for (int b = 0; b < B; b++)
            {
                int len = _prompts[b].Length, t = len;
                if (len > P) t = 0;   // position len − 1 ≥ P is ablated in every layer
                else
                    for (int p = len - 1; p >= 0; p--)
                        if (mask.AsSpan((l * P + p) * _width, _width).Contains(false)) { t = len - 1 - p; break; }
                from[l][b] = l == 0 ? t : Math.Min(t, from[l - 1][b]);
            }
        }
        return from;
    }

    /// <summary>One dense layer's row split: the changed rows (with their keep and mean rows) and the clean prefix rows (with their clean rows).</summary>
    internal sealed class PartialRows(Tensor changed, Tensor changedKeep, Tensor changedMean, Tensor prefix, Tensor prefixClean, int changedRows, int prefixRows) : IDisposable
    {
        public Tensor Changed { get; } = changed;
        public Tensor ChangedKeep { get; } = changedKeep;
        public Tensor ChangedMean { get; } = changedMean;
        public Tensor Prefix { get; } = prefix;
        public Tensor PrefixClean { get; } = prefixClean;
        public int ChangedRows { get; } = changedRows;
        public int PrefixRows { get; } = prefixRows;

        public void Dispose()
        {
            foreach (var t in new[] { Changed, ChangedKeep, ChangedMean, Prefix, PrefixClean }) t.Dispose();
        }
    }

    /// <summary>The row split of layer <paramref name="l"/> for the chunk's masks, or null when too few rows are clean to pay.</summary>
    PartialRows? PartialRowsAt(int l, IReadOnlyList<int[][]> changedFrom, TokenBatch batch, int[] keepRow, int[] meanRow)
    {
        if (_cleanMlpOut is null || l >= _model.Config.Layers - 1) return null;
        int B = _prompts.Count, T = batch.SeqLen, cleanRows = _clean.Rows;
        var changed = new List<int>();
        var prefix = new List<int>();
        for (int r = 0; r < changedFrom.Count; r++)
            for (int b = 0; b < B; b++)
            {
                int len = _prompts[b].Length, t0 = changedFrom[r][l][b], row0 = (r * B + b) * T;
                for (int t = 0; t < t0; t++) prefix.Add(row0 + t);
                for (int t = t0; t < len; t++) changed.Add(row0 + t);
            }
        if (changed.Count > PartialRowsFraction * (changed.Count + prefix.Count)) return null;
        var done = PartialRowsDone;
        PartialRowsDone = (done.LayerRuns + 1, done.PrefixRows + prefix.Count, done.RealRows + changed.Count + prefix.Count);
        var be = _model.LayerBackend(l);
        Tensor Up(IEnumerable<int> v) => SweepOps.UploadInts(be, v.DefaultIfEmpty(0).ToArray());
        return new PartialRows(Up(changed), Up(changed.Select(i => keepRow[i])), Up(changed.Select(i => meanRow[i])), Up(prefix),
            Up(prefix.Select(i => i % cleanRows)), changed.Count, prefix.Count);
    }

    /// <summary>
    /// The MLP of the changed rows, ablated at mlp_act on them, into <paramref name="s"/>.MlpOut; the prefix rows get the
    /// clean MlpOut, padding rows zero (the layer's other edits apply after, as usual).
    /// </summary>
    void RunPartialMlp(int l, LayerState s, PartialRows rows, LayerAblation ablation)
    {
        var c = _model.Config; var w = _model.Weights.Layers[l];
        var be = _model.LayerBackend(l);
        var ops = ablation.Ops;
        be.Fill(s.MlpOut, 0f);
        if (rows.ChangedRows > 0)
        {
            int n = rows.ChangedRows;
            using var x = be.AllocateUninitialized(n, c.Dim);
            ops.GatherRows(s.FfnNormed, rows.Changed, x);
            using var gate = be.AllocateUninitialized(n, c.HiddenDim);
            using var up = be.AllocateUninitialized(n, c.HiddenDim);
            using var act = be.AllocateUninitialized(n, c.HiddenDim);
            be.MatMulShared(x, [w.W1, w.W3], [gate, up]);
            be.SwiGlu(gate, up, act);
            if (_site == NodeSite.MlpAct) ops.MeanAblate(act, ablation.Means, ablation.Bits, ablation.FirstMaskRow, rows.ChangedKeep, rows.ChangedMean);
            using var o = be.AllocateUninitialized(n, c.Dim);
            be.MatMul(act, w.W2, o, false);
            ops.ScatterAddRows(o, rows.Changed, s.MlpOut);
        }
        if (rows.PrefixRows > 0)
        {
            using var clean = be.AllocateUninitialized(rows.PrefixRows, c.Dim);
            ops.GatherRows(_cleanMlpOut![l], rows.PrefixClean, clean);
            ops.ScatterAddRows(clean, rows.Prefix, s.MlpOut);
        }
    }
}
