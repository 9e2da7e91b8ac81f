using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Model;

/// <summary>The points where <see cref="Llama.ForwardLayer"/> lets the sweep compute a product itself; each returns true when it filled its output.</summary>
internal interface ILayerShortcuts
{
    /// <summary>Before Q/K/V: true when it skipped them and the attention (Z filled or, if nothing reads it, not).</summary>
    bool Attention(LayerState s);
    /// <summary>Before Q/K/V's product: true when it filled Q, K and V (before RoPE, which then runs as usual).</summary>
    bool QkvProjection(LayerState s);
    /// <summary>Before W_o (after the attn_z edit): true when it filled AttnOut itself.</summary>
    bool OutputProjection(LayerState s);
    /// <summary>Before gate/up: true when it filled MlpOut (the whole MLP skipped; the mlp_out edit still applies).</summary>
    bool Mlp(LayerState s);
    /// <summary>Before W_down: true when it filled MlpOut from Act.</summary>
    bool DownProjection(LayerState s);
}

internal sealed partial class MeanAblationSweep
{
    /// <summary>
    /// One layer's shortcut for the sweep's site (see <see cref="LayerRun"/>). Where the site is a product's output only
    /// that product changes; what can not be saved: attn_z has no keep-k product (a kept z dimension needs its head's
    /// whole attention), mlp_out/resid keep-k still run gate and up in full (every kept output column reads every neuron),
    /// and attn keep-k still runs Q/K/V and the attention. <paramref name="partial"/> and <paramref name="input"/> are the
    /// layer's site and input row splits (MeanAblationSweep.Rows.cs), null where they do not pay.
    /// </summary>
    sealed class LayerHooks(MeanAblationSweep sweep, int layer, LayerRun run, IReadOnlyList<bool[]> masks, TokenBatch batch, int[]? meanRow,
        LayerAblation ablation, PartialRows? partial = null, PartialRows? input = null, PartialRows? kept = null) : ILayerShortcuts
    {
        IBackend Be => sweep._model.LayerBackend(layer);
        DeviceWeights.DeviceLayer W => sweep._model.Weights.Layers[layer];
        // The top layer: the metric reads only the last row of each prompt, and above the attention every op is per row,
        // so W_o and the MLP run on those rows alone (the other rows of the layer's output are never read).
        bool Top => layer == sweep._model.Config.Layers - 1;

        public bool Attention(LayerState s)
        {
            if (run != LayerRun.Constant) return false;
            // attn: attn_out is its means, so neither the attention nor W_o runs (z stays unwritten; nothing reads it).
            if (sweep._site == NodeSite.Attn) return true;
            if (sweep._site != NodeSite.AttnZ) return false;
            // attn_z: z is its means; the ablation writes them into every real row, W_o then runs as usual.
            Be.Fill(s.Z, 0f);
            return true;
        }

        public bool QkvProjection(LayerState s)
        {
            if (Top)
            {
                // Past the attention only the last rows are read, so Q is needed there alone; K and V on every row they may change.
                sweep.RunPartialQkv(layer, s, input, ablation.Ops, lastQueries: ablation.Rows.LastRows, masks.Count * sweep._prompts.Count);
                return true;
            }
            if (input is null) return false;
            sweep.RunPartialQkv(layer, s, input, ablation.Ops);
            return true;
        }

        public bool OutputProjection(LayerState s)
        {
            if (sweep._site == NodeSite.Attn && run == LayerRun.Constant) { Be.Fill(s.AttnOut, 0f); return true; }   // the ablation writes the means
            if (sweep._site == NodeSite.Attn && run == LayerRun.KeepK)
            {
                KeptOutputs(s.Z, W.Wo, s.AttnOut);
                return true;
            }
            if (!Top)
            {
                // attn_z's edit comes before W_o, so its clean rows are those of the site split.
                var split = sweep._site == NodeSite.AttnZ ? partial : input;
                if (split is null) return false;
                sweep.RunPartialOutputProjection(layer, s, split, ablation.Ops);
                return true;
            }
            using var z = Gathered(s.Z);
            using var o = Be.AllocateUninitialized(z.Rows, sweep._model.Config.Dim);
            Be.MatMul(z, W.Wo, o, false);
            Scatter(o, s.AttnOut);
            return true;
        }

        public bool Mlp(LayerState s)
        {
            if (run == LayerRun.Constant && sweep._site == NodeSite.MlpOut) { Be.Fill(s.MlpOut, 0f); return true; }
            if (run == LayerRun.KeepK && sweep._site == NodeSite.MlpAct)
            {
                sweep.RunSparseMlp(layer, s, masks, batch, meanRow!, lastOnly: Top);
                return true;
            }
            // mlp_out and resid: only the rows that keep a unit of the site read the MLP (KeptRowsAt).
            if (kept is not null && !Top)
            {
                if (run == LayerRun.KeepK) sweep.RunPartialKeptOutputsMlp(layer, s, kept, masks, batch, meanRow!, ablation.Ops);
                else sweep.RunPartialMlp(layer, s, kept, ablation);
                return true;
            }
            // mlp_out's and resid's edits come after the MLP, so its clean rows are those of the input split.
            var rows = sweep._site is NodeSite.MlpOut or NodeSite.Resid ? input : partial;
            if ((run == LayerRun.Dense || sweep._site == NodeSite.Attn) && !Top && rows is not null)
            {
                sweep.RunPartialMlp(layer, s, rows, ablation);
                return true;
            }
            if (!Top) return false;
            // The last rows' MLP, dense (mlp_out/resid keep-k are moot on so few rows); mlp_act's ablation on them here.
            var c = sweep._model.Config;
            using var x = Gathered(s.FfnNormed);
            int n = x.Rows;
            using var gate = Be.AllocateUninitialized(n, c.HiddenDim);
            using var up = Be.AllocateUninitialized(n, c.HiddenDim);
            using var act = Be.AllocateUninitialized(n, c.HiddenDim);
            Be.MatMul(x, W.W1, gate, false);
            Be.MatMul(x, W.W3, up, false);
            Be.SwiGlu(gate, up, act);
            if (sweep._site == NodeSite.MlpAct) ablation.ApplyLast(act);
            using var o = Be.AllocateUninitialized(n, c.Dim);
            Be.MatMul(act, W.W2, o, false);
            Scatter(o, s.MlpOut);
            return true;
        }

        public bool DownProjection(LayerState s)
        {
            if (run != LayerRun.KeepK || sweep._site is not (NodeSite.MlpOut or NodeSite.Resid)) return false;
            KeptOutputs(s.Act, W.W2, s.MlpOut);
            return true;
        }

        // The prompts' last rows of a layer tensor, from the backend's row table (rows are replica-major, B per mask).
        Tensor Gathered(Tensor full)
        {
            var t = Be.AllocateUninitialized(masks.Count * sweep._prompts.Count, full.Columns);
            ablation.Ops.GatherRows(full, ablation.Rows.LastRows, t);
            return t;
        }

        // Rows not written are zero (finite; never read).
        void Scatter(Tensor compact, Tensor full)
        {
            Be.Fill(full, 0f);
            ablation.Ops.ScatterAddRows(compact, ablation.Rows.LastRows, full);
        }

        // Only the output columns the masks keep; the site's ablation then writes the means into the others.
        void KeptOutputs(Tensor input, Tensor weight, Tensor output) =>
            ablation.Ops.KeptOutputs(input, weight, sweep.Groups(layer, masks, batch, meanRow!, weight.Rows, lastOnly: Top), output);
    }

    // One group per (mask, covered position): the rows of that position in the mask's replica share its kept set.
    // lastOnly: position 0 alone (the top layer, whose other rows nobody reads).
    // compactRows: the groups over those rows alone (row i of the product is compactRows[i]; other rows are left out).
    KeepKGroups Groups(int l, IReadOnlyList<bool[]> masks, TokenBatch batch, int[] meanRow, int units, bool lastOnly, int[]? compactRows = null)
    {
        int B = _prompts.Count, T = batch.SeqLen, P = _maskPositions, covered = lastOnly ? Math.Min(1, P) : Math.Min(_maxLen, P);
        int[]? place = null;
        if (compactRows is not null)
        {
            place = new int[batch.Rows];
            Array.Fill(place, -1);
            for (int i = 0; i < compactRows.Length; i++) place[compactRows[i]] = i;
            meanRow = compactRows.Select(r => meanRow[r]).ToArray();
        }
        var groupKept = new List<int> { 0 };
        var groupRows = new List<int> { 0 };
        var kept = new List<int>();
        var rows = new List<int>();
        for (int r = 0; r < masks.Count; r++)
            for (int p = 0; p < covered; p++)
            {
                var m = KeepBits(masks[r], l, p);
                for (int i = 0; i < m.Length; i++) if (m[i]) kept.Add(i);
                for (int b = 0; b < B; b++)
                {
                    if (_prompts[b].Length <= p) continue;
                    int row = (r * B + b) * T + _prompts[b].Length - 1 - p;
                    if (place is null) rows.Add(row);
                    else if (place[row] >= 0) rows.Add(place[row]);
                }
                groupKept.Add(kept.Count);
                groupRows.Add(rows.Count);
            }
        return KeepKGroups.Make(meanRow, _masks.MeanPositions, groupKept.ToArray(), kept.ToArray(), groupRows.ToArray(), rows.ToArray(), units);
    }

    void RunSparseMlp(int l, LayerState s, IReadOnlyList<bool[]> masks, TokenBatch batch, int[] meanRow, bool lastOnly)
    {
        var w = _model.Weights.Layers[l];
        var groups = Groups(l, masks, batch, meanRow, _model.Config.HiddenDim, lastOnly);
        Ops(_model.LayerBackend(l)).SparseMlp(s.FfnNormed, w.W1, w.W3, w.W2, _masks.KeepKMlp(l), _masks.Means(l), groups, s.MlpOut);
    }
}
