using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// The clean row prefix of a layer (issue 18, "fewer rows recomputed"): attention is causal and every other op of a
/// block is per row, so a row at time t of a mask's replica keeps its clean value as long as the mask ablates nothing
/// at a time ≤ t below that point. Two splits per layer l: the input split (nothing ablated at times ≤ t in layers
/// below l: r_l's row is clean), under which Q/K/V run on the changed rows alone (any layer run) and so do W_o (every
/// site but attn_z) and, for mlp_out and resid, the MLP; and the site split (nothing ablated at times ≤ t in layers
/// ≤ l), under which the MLP of the other sites and attn_z's W_o do. Prefix rows take the clean forward's values
/// (Q/K/V before RoPE, attn_out, mlp_out: cached once per example batch); attention still runs on every row, as the
/// changed rows read the prefix rows' keys and values. At a forward's start layer (not from the means) every input row
/// is clean, so there Q/K/V, W_o and the mlp_out/resid MLP are gathered, not computed.
/// </summary>
internal sealed partial class MeanAblationSweep
{
    /// <summary>A product runs on the changed rows alone when they are at most this fraction of the real rows.</summary>
    const double PartialRowsFraction = 0.9;

    /// <summary>Layer runs so far (dense; attn: any) whose MLP ran on the changed rows alone, and the real rows they left to the clean MLP output.</summary>
    public (int LayerRuns, long PrefixRows, long RealRows) PartialRowsDone { get; private set; }

    /// <summary>mlp_act: changed rows so far whose activations came from the clean forward (only W_down ran for them).</summary>
    public long CleanActRowsDone { get; private set; }

    /// <summary>Layer runs so far whose Q/K/V ran on the changed rows alone, and the real rows they left to the clean Q/K/V.</summary>
    public (int LayerRuns, long PrefixRows, long RealRows) InputRowsDone { get; private set; }

    Tensor[]? _cleanMlpOut;   // the clean forward's mlp_out per layer below the top, [B·T, dim] on LayerBackend(l)
    (Tensor Q, Tensor K, Tensor V)[]? _cleanQkv;   // the clean Q/K/V per layer before RoPE, [B·T, dim | kvDim]
    Tensor[]? _cleanAct;   // mlp_act: the clean activations per layer below the top, before any edit, [B·T, hidden]
    Tensor[]? _cleanAttnOut;   // the clean attn_out per layer below the top (before any edit: the clean forward has none)

    /// <summary>The clean caches of the row splits, from the clean forward <paramref name="pass"/>.</summary>
    void CacheCleanRows(ForwardPass pass)
    {
        var c = _model.Config;
        _cleanMlpOut = Enumerable.Range(0, c.Layers - 1).Select(l => CopyOf(l, pass.Layers[l].MlpOut)).ToArray();
        _cleanAttnOut = Enumerable.Range(0, c.Layers - 1).Select(l => CopyOf(l, pass.Layers[l].AttnOut)).ToArray();
        if (_site == NodeSite.MlpAct) _cleanAct = Enumerable.Range(0, c.Layers - 1).Select(l => CopyOf(l, pass.Layers[l].Act)).ToArray();
        _cleanQkv = Enumerable.Range(0, c.Layers).Select(l =>
        {
            // Q and K of the pass are rotated in place; the product again gives them as a forward's product leaves them.
            var be = _model.LayerBackend(l); var w = _model.Weights.Layers[l];
            var s = pass.Layers[l];
            var qkv = (Q: be.AllocateUninitialized(s.Q.Shape), K: be.AllocateUninitialized(s.K.Shape), V: be.AllocateUninitialized(s.V.Shape));
            be.MatMulShared(s.AttnNormed, [w.Wq, w.Wk, w.Wv], [qkv.Q, qkv.K, qkv.V]);
            return qkv;
        }).ToArray();

        Tensor CopyOf(int l, Tensor t)
        {
            var be = _model.LayerBackend(l);
            var h = be.AllocateUninitialized(t.Shape);
            be.Copy(t, h);
            return h;
        }
    }

    void DisposeCleanRows()
    {
        foreach (var t in (_ablatedAttnMlpOut ?? []).Concat(_meansPathInput ?? []).Concat(_meansPathMlpOut ?? [])) t?.Dispose();
        foreach (var qkv in _meansPathQkv ?? []) if (qkv is var (q, k, v)) { q.Dispose(); k.Dispose(); v.Dispose(); }
        foreach (var t in (_cleanMlpOut ?? []).Concat(_cleanAttnOut ?? []).Concat(_cleanAct ?? [])) t.Dispose();
        foreach (var (q, k, v) in _cleanQkv ?? []) { q.Dispose(); k.Dispose(); v.Dispose(); }
    }

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
                        if (KeepBits(mask, l, p).Contains(false)) { t = len - 1 - p; break; }
                from[l][b] = l == 0 ? t : Math.Min(t, from[l - 1][b]);
            }
        }
        return from;
    }

    /// <summary>One dense layer's row split: the changed rows (with their keep and mean rows) and the clean prefix rows (with their clean rows).</summary>
    internal sealed class PartialRows(Tensor changed, Tensor changedKeep, Tensor changedMean, Tensor prefix, Tensor prefixClean, int changedRows, int prefixRows) : IDisposable
    {
        /// <summary>
        /// mlp_act's site split only: the changed rows whose layer input is clean (their gate and up, so their activations
        /// before the ablation, are the clean forward's): their places among the changed rows and their clean rows; and
        /// the other changed rows' places and rows. Null: every changed row runs gate and up.
        /// </summary>
        public (Tensor Place, Tensor CleanRow, int Count, Tensor OtherPlace, Tensor OtherRow, int OtherCount)? CleanInput { get; init; }

        /// <summary>attn's site split only: the rows (and their clean rows) whose MLP output is AblatedAttnMlpOut's; null: none.</summary>
        public (Tensor Rows, Tensor CleanRow, int Count)? AblatedAttn { get; init; }

        /// <summary>
        /// attn only: the rows on the all-means path (<see cref="MeansPathInput"/>) and their clean rows, which index
        /// that path's tensors: in the input split those whose Q/K/V come from it, in the site split those whose MLP
        /// output does; null: none.
        /// </summary>
        public (Tensor Rows, Tensor CleanRow, int Count)? MeansPath { get; init; }

        /// <summary>attn's input split only: the rows W_o runs on, those not clean that keep an attn unit of the layer (the
        /// others' attn_out is the means the edit writes); null: <see cref="Changed"/>.</summary>
        public (Tensor Rows, int Count)? Projected { get; init; }

        /// <summary>The changed rows on the host (KeptRowsAt's split only: its keep-k product's groups are built over them).</summary>
        public int[]? ChangedHost { get; init; }

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
            if (CleanInput is { } c) foreach (var t in new[] { c.Place, c.CleanRow, c.OtherPlace, c.OtherRow }) t.Dispose();
            if (AblatedAttn is { } a) { a.Rows.Dispose(); a.CleanRow.Dispose(); }
            if (MeansPath is { } m) { m.Rows.Dispose(); m.CleanRow.Dispose(); }
            Projected?.Rows.Dispose();
        }
    }

    /// <summary>
    /// The row split at layer <paramref name="l"/> for the chunk's masks: by what they ablate in layers ≤ l (the site
    /// split), or with <paramref name="input"/> in layers below l (the input split); null when too few rows are clean to pay.
    /// </summary>
    PartialRows? PartialRowsAt(int l, bool input, IReadOnlyList<int[][]> changedFrom, TokenBatch batch, int[] keepRow, int[] meanRow,
        IReadOnlyList<bool[]>? masks = null, IReadOnlyList<int[]>? firstKept = null)
    {
        int B = _prompts.Count, T = batch.SeqLen, cleanRows = _clean.Rows;
        var changed = new List<int>();
        var prefix = new List<int>();
        for (int r = 0; r < changedFrom.Count; r++)
            for (int b = 0; b < B; b++)
            {
                int len = _prompts[b].Length, row0 = (r * B + b) * T;
                int t0 = !input ? changedFrom[r][l][b] : l == 0 ? len : changedFrom[r][l - 1][b];
                for (int t = 0; t < t0; t++) prefix.Add(row0 + t);
                for (int t = t0; t < len; t++) changed.Add(row0 + t);
            }
        // mlp_act: a changed row whose layer input is clean has the clean activations, so only W_down runs for it (a
        // third of its MLP); the split pays by that cost.
        var cleanInput = new List<int>();
        var other = new List<int>();
        if (!input && _site == NodeSite.MlpAct && _cleanAct is not null)
        {
            var inputChanged = new HashSet<int>();
            for (int r = 0; r < changedFrom.Count; r++)
                for (int b = 0; b < B; b++)
                {
                    int len = _prompts[b].Length, row0 = (r * B + b) * T;
                    for (int t = l == 0 ? len : changedFrom[r][l - 1][b]; t < len; t++) inputChanged.Add(row0 + t);
                }
            for (int j = 0; j < changed.Count; j++) (inputChanged.Contains(changed[j]) ? other : cleanInput).Add(j);
        }
        // attn: a changed row whose layer input is clean and that keeps no attn unit has the MLP input clean r_l + its
        // means, the same for every mask: its MLP output comes from AblatedAttnMlpOut. A row that has kept no attn unit
        // in any layer below l is on the all-means path (its attn_out was its means in each, whatever the other rows
        // did): its Q/K/V come from that path's, and if it keeps none at l either, so does its MLP output.
        var ablated = new List<int>();
        var onPath = new List<int>();
        var projected = new List<int>();
        bool path = _site == NodeSite.Attn && firstKept is not null && l >= 1 && _oneBackend;
        bool cleanHere = ReferenceEquals(InputOf(l), _model.LayerBackend(l));   // AblatedAttnMlpOut reads the clean input there
        if (_site == NodeSite.Attn && masks is not null)
        {
            var kept = new List<int>();
            foreach (int row in changed)
            {
                int r = row / (B * T), b = row / T % B, t = row % T, len = _prompts[b].Length, p = len - 1 - t;
                bool keeps = KeepsAny(masks[r], l, p);
                bool clean = t < (l == 0 ? len : changedFrom[r][l - 1][b]);
                // The input split's rows are all changed inputs: on the path, or computed.
                if (input)
                {
                    bool on = path && firstKept![r][row % cleanRows] >= l;
                    (on ? onPath : kept).Add(row);
                    if (keeps) projected.Add(row);
                }
                else if (!keeps && clean && cleanHere) ablated.Add(row);
                else if (!keeps && path && firstKept![r][row % cleanRows] > l) onPath.Add(row);
                else kept.Add(row);
            }
            changed = kept;
        }
        int total = changed.Count + prefix.Count + ablated.Count + onPath.Count;
        double cost = changed.Count - cleanInput.Count * 2.0 / 3;
        if (cost > PartialRowsFraction * total) return null;
        var be = _model.LayerBackend(l);
        Tensor Up(IEnumerable<int> v) => SweepOps.UploadInts(be, v.DefaultIfEmpty(0).ToArray());
        return new PartialRows(Up(changed), Up(changed.Select(i => keepRow[i])), Up(changed.Select(i => meanRow[i])), Up(prefix),
            Up(prefix.Select(i => i % cleanRows)), changed.Count, prefix.Count)
        {
            AblatedAttn = ablated.Count == 0 ? null : (Up(ablated), Up(ablated.Select(i => i % cleanRows)), ablated.Count),
            MeansPath = onPath.Count == 0 ? null : (Up(onPath), Up(onPath.Select(i => i % cleanRows)), onPath.Count),
            Projected = input && _site == NodeSite.Attn && masks is not null ? (Up(projected), projected.Count) : null,
            CleanInput = cleanInput.Count == 0 ? null
                : (Up(cleanInput), Up(cleanInput.Select(j => changed[j] % cleanRows)), cleanInput.Count, Up(other), Up(other.Select(j => changed[j])), other.Count),
        };
    }

    /// <summary>
    /// mlp_out and resid, a layer below the top: the rows whose MLP output is read, those that keep a unit of the site at
    /// layer <paramref name="l"/> (every unit a row does not keep is overwritten by its mean, so a row that keeps none
    /// needs no MLP). Of those, a row whose input is clean (the input split) takes the clean mlp_out; the others are
    /// computed. Null when too few rows are saved to pay.
    /// </summary>
    PartialRows? KeptRowsAt(int l, IReadOnlyList<bool[]> masks, IReadOnlyList<int[][]> changedFrom, TokenBatch batch, int[] keepRow, int[] meanRow)
    {
        if (_site is not (NodeSite.MlpOut or NodeSite.Resid) || _cleanMlpOut is null || l >= _model.Config.Layers - 1) return null;
        int B = _prompts.Count, T = batch.SeqLen, cleanRows = _clean.Rows;
        var changed = new List<int>();
        var prefix = new List<int>();
        int real = 0;
        for (int r = 0; r < changedFrom.Count; r++)
            for (int b = 0; b < B; b++)
            {
                int len = _prompts[b].Length, row0 = (r * B + b) * T, t0 = l == 0 ? len : changedFrom[r][l - 1][b];
                real += len;
                for (int t = 0; t < len; t++)
                {
                    int p = len - 1 - t;
                    if (!KeepsAny(masks[r], l, p)) continue;
                    (t < t0 ? prefix : changed).Add(row0 + t);
                }
            }
        if (changed.Count > PartialRowsFraction * real) return null;
        var be = _model.LayerBackend(l);
        Tensor Up(IEnumerable<int> v) => SweepOps.UploadInts(be, v.DefaultIfEmpty(0).ToArray());
        var rows = new PartialRows(Up(changed), Up(changed.Select(i => keepRow[i])), Up(changed.Select(i => meanRow[i])), Up(prefix),
            Up(prefix.Select(i => i % cleanRows)), changed.Count, prefix.Count) { ChangedHost = changed.ToArray() };
        KeptRowsDone = (KeptRowsDone.LayerRuns + 1, KeptRowsDone.Rows + changed.Count + prefix.Count, KeptRowsDone.RealRows + real);
        return rows;
    }

    /// <summary>Layer runs so far whose MLP ran only for the rows that keep a unit (KeptRowsAt), those rows, and the real rows.</summary>
    public (int LayerRuns, long Rows, long RealRows) KeptRowsDone { get; private set; }

    /// <summary>
    /// mlp_out/resid keep-k on the rows of <paramref name="rows"/> (KeptRowsAt): gate and up of the changed rows, then only
    /// the output columns each keeps; the prefix rows take the clean mlp_out, every other row zero (the site's edit then
    /// writes the means).
    /// </summary>
    void RunPartialKeptOutputsMlp(int l, LayerState s, PartialRows rows, IReadOnlyList<bool[]> masks, TokenBatch batch, int[] meanRow, ISweepOps ops)
    {
        var c = _model.Config; var w = _model.Weights.Layers[l];
        var be = _model.LayerBackend(l);
        be.Fill(s.MlpOut, 0f);
        if (rows.ChangedRows > 0)
        {
            int n = rows.ChangedRows;
            using var act = be.AllocateUninitialized(n, c.HiddenDim);
            using (var x = be.AllocateUninitialized(n, c.Dim))
            using (var gate = be.AllocateUninitialized(n, c.HiddenDim))
            using (var up = be.AllocateUninitialized(n, c.HiddenDim))
            {
                ops.GatherRows(s.FfnNormed, rows.Changed, x);
                be.MatMulShared(x, [w.W1, w.W3], [gate, up]);
                be.SwiGlu(gate, up, act);
            }
            using var o = be.AllocateUninitialized(n, c.Dim);
            ops.KeptOutputs(act, w.W2, Groups(l, masks, batch, meanRow, w.W2.Rows, lastOnly: false, rows.ChangedHost), o);
            ops.ScatterAddRows(o, rows.Changed, s.MlpOut);
        }
        PrefixFromClean(be, ops, rows, _cleanMlpOut![l], s.MlpOut);
    }

    /// <summary>attn: rows so far whose MLP output came from <see cref="AblatedAttnMlpOut"/>.</summary>
    public long AblatedAttnRowsDone { get; private set; }

    Tensor?[]? _ablatedAttnMlpOut;

    /// <summary>
    /// attn: the MLP output of each clean row at layer <paramref name="l"/> with every attn unit at its mean, i.e. of
    /// the MLP input RMSNorm(r_l + mean_l[p]) ([B·T, dim], made once per example batch and layer on first use): what every
    /// mask that keeps no attn unit of a row with a clean input gives that row.
    /// </summary>
    Tensor AblatedAttnMlpOut(int l)
    {
        _ablatedAttnMlpOut ??= new Tensor?[_model.Config.Layers];
        if (_ablatedAttnMlpOut[l] is { } made) return made;
        var (mid, output) = MlpOfTheMeans(l, _cleanInputs[l]);
        mid.Dispose();
        return (_ablatedAttnMlpOut[l] = output!);
    }

    /// <summary>attn: rows so far whose MLP output (site split) and whose Q/K/V (input split) came from the all-means path.</summary>
    public (long Mlp, long Qkv) MeansPathRowsDone { get; private set; }

    // The all-means path per layer (attn, one backend): its input r^A_l ([B·T, dim], l ≥ 1), its Q/K/V before RoPE, its MLP output.
    Tensor?[]? _meansPathInput, _meansPathMlpOut;
    (Tensor Q, Tensor K, Tensor V)?[]? _meansPathQkv;

    /// <summary>
    /// attn: the all-means path's residual r^A_l entering layer <paramref name="l"/> ≥ 1 per clean row: r^A_0 is the clean
    /// r_0, and r^A_(l+1) = m + MLP(RMSNorm(m)) with m = r^A_l + mean_l[p], as the forward adds them. A row that keeps no
    /// attn unit in layers 0..l−1 has exactly this input, whatever its mask does at other rows: at each of those layers
    /// its attn_out was its means, and every other op is per row. Made once per example batch and layer on first use.
    /// </summary>
    Tensor MeansPathInput(int l)
    {
        if (l == 0) return _cleanInputs[0];
        _meansPathInput ??= new Tensor?[_model.Config.Layers];
        if (_meansPathInput[l] is { } made) return made;
        var be = _model.LayerBackend(l - 1);
        var (mid, _) = MlpOfTheMeans(l - 1, MeansPathInput(l - 1), withMlp: false);
        var input = be.AllocateUninitialized(mid.Shape);
        be.AddInto(mid, MeansPathMlpOut(l - 1), input);
        mid.Dispose();
        return (_meansPathInput[l] = input);
    }

    /// <summary>attn: the all-means path's MLP output at layer <paramref name="l"/> (layer 0: <see cref="AblatedAttnMlpOut"/>, the same rows).</summary>
    Tensor MeansPathMlpOut(int l)
    {
        if (l == 0) return AblatedAttnMlpOut(0);
        _meansPathMlpOut ??= new Tensor?[_model.Config.Layers];
        if (_meansPathMlpOut[l] is { } made) return made;
        var (mid, output) = MlpOfTheMeans(l, MeansPathInput(l));
        mid.Dispose();
        return (_meansPathMlpOut[l] = output!);
    }

    /// <summary>attn: the all-means path's Q/K/V before RoPE at layer <paramref name="l"/> ≥ 1, as the forward's product gives them.</summary>
    (Tensor Q, Tensor K, Tensor V) MeansPathQkv(int l)
    {
        _meansPathQkv ??= new (Tensor, Tensor, Tensor)?[_model.Config.Layers];
        if (_meansPathQkv[l] is { } made) return made;
        var c = _model.Config; var w = _model.Weights.Layers[l];
        var be = _model.LayerBackend(l);
        var input = MeansPathInput(l);
        int n = input.Rows;
        using var normed = be.AllocateUninitialized(n, c.Dim);
        using var rstd = be.AllocateUninitialized(n);
        be.RmsNorm(input, w.AttnNorm, c.NormEps, normed, rstd);
        var qkv = (Q: be.AllocateUninitialized(n, c.Dim), K: be.AllocateUninitialized(n, c.KvDim), V: be.AllocateUninitialized(n, c.KvDim));
        be.MatMulShared(normed, [w.Wq, w.Wk, w.Wv], [qkv.Q, qkv.K, qkv.V]);
        return (_meansPathQkv[l] = qkv).Value;
    }

    /// <summary>
    /// Layer <paramref name="l"/> of clean-shaped rows <paramref name="input"/> [B·T, dim] with every attn unit at its
    /// mean: mid = input + mean_l[p] and (unless <paramref name="withMlp"/> is false) the MLP output of RMSNorm(mid).
    /// </summary>
    (Tensor Mid, Tensor? MlpOut) MlpOfTheMeans(int l, Tensor input, bool withMlp = true)
    {
        var c = _model.Config; var w = _model.Weights.Layers[l];
        var be = _model.LayerBackend(l);
        var ops = Ops(be);
        int n = _clean.Rows, T = _clean.SeqLen;
        var meanIndex = new int[n];
        for (int i = 0; i < n; i++) meanIndex[i] = Math.Max(0, _prompts[i / T].Length - 1 - i % T);   // padding rows: any mean row
        using var index = SweepOps.UploadInts(be, meanIndex);
        using var means = be.AllocateUninitialized(n, c.Dim);
        ops.GatherRows(_masks.Means(l), index, means);
        var mid = be.AllocateUninitialized(n, c.Dim);
        using var normed = be.AllocateUninitialized(n, c.Dim);
        using var rstd = be.AllocateUninitialized(n);
        be.AddRmsNorm(input, means, mid, w.FfnNorm, c.NormEps, normed, rstd);
        if (!withMlp) return (mid, null);
        using var gate = be.AllocateUninitialized(n, c.HiddenDim);
        using var up = be.AllocateUninitialized(n, c.HiddenDim);
        using var act = be.AllocateUninitialized(n, c.HiddenDim);
        be.MatMulShared(normed, [w.W1, w.W3], [gate, up]);
        be.SwiGlu(gate, up, act);
        var output = be.AllocateUninitialized(n, c.Dim);
        be.MatMul(act, w.W2, output, false);
        return (mid, output);
    }

    /// <summary>The site split of a dense layer below the top (its MLP's), or null (see <see cref="PartialRowsAt"/>).</summary>
    PartialRows? SiteRowsAt(int l, IReadOnlyList<int[][]> changedFrom, TokenBatch batch, int[] keepRow, int[] meanRow, IReadOnlyList<bool[]> masks,
        IReadOnlyList<int[]>? firstKept)
    {
        if (_cleanMlpOut is null || l >= _model.Config.Layers - 1) return null;
        var rows = PartialRowsAt(l, input: false, changedFrom, batch, keepRow, meanRow, masks, firstKept);
        if (rows?.AblatedAttn is { } a) AblatedAttnRowsDone += a.Count;
        if (rows?.MeansPath is { } mp) MeansPathRowsDone = (MeansPathRowsDone.Mlp + mp.Count, MeansPathRowsDone.Qkv);
        if (rows is not null) PartialRowsDone = Counted(PartialRowsDone, rows);
        if (rows?.CleanInput is { } ci) CleanActRowsDone += ci.Count;
        return rows;
    }

    /// <summary>The input split of any layer (Q/K/V's, W_o's but for attn_z, the mlp_out/resid MLP's), or null.</summary>
    PartialRows? InputRowsAt(int l, IReadOnlyList<int[][]> changedFrom, TokenBatch batch, int[] keepRow, int[] meanRow, IReadOnlyList<bool[]> masks,
        IReadOnlyList<int[]>? firstKept)
    {
        if (_cleanQkv is null) return null;
        var rows = PartialRowsAt(l, input: true, changedFrom, batch, keepRow, meanRow, masks, firstKept);
        if (rows?.MeansPath is { } mp) MeansPathRowsDone = (MeansPathRowsDone.Mlp, MeansPathRowsDone.Qkv + mp.Count);
        if (rows is not null) InputRowsDone = Counted(InputRowsDone, rows);
        return rows;
    }

    static (int, long, long) Counted((int LayerRuns, long PrefixRows, long RealRows) done, PartialRows rows) =>
        (done.LayerRuns + 1, done.PrefixRows + rows.PrefixRows, done.RealRows + rows.ChangedRows + rows.PrefixRows);

    /// <summary>
    /// Q, K and V (before RoPE) of the changed rows from their product, of the prefix rows from the clean forward's (every
    /// row changed where <paramref name="rows"/> is null); padding rows zero. With <paramref name="lastQueries"/> (the top
    /// layer) Q is computed on its first <paramref name="lastCount"/> rows alone and is zero elsewhere.
    /// </summary>
    void RunPartialQkv(int l, LayerState s, PartialRows? rows, ISweepOps ops, Tensor? lastQueries = null, int lastCount = 0)
    {
        var w = _model.Weights.Layers[l];
        var be = _model.LayerBackend(l);
        var outs = lastQueries is null ? new[] { s.Q, s.K, s.V } : new[] { s.K, s.V };
        var weights = lastQueries is null ? new[] { w.Wq, w.Wk, w.Wv } : new[] { w.Wk, w.Wv };
        if (lastQueries is not null)
        {
            be.Fill(s.Q, 0f);
            int n = lastCount;
            using var x = be.AllocateUninitialized(n, _model.Config.Dim);
            ops.GatherRows(s.AttnNormed, lastQueries, x);
            using var q = be.AllocateUninitialized(n, s.Q.Columns);
            be.MatMul(x, w.Wq, q, false);
            ops.ScatterAddRows(q, lastQueries, s.Q);
        }
        if (rows is null)
        {
            be.MatMulShared(s.AttnNormed, weights, outs);
            return;
        }
        var clean = _cleanQkv![l];
        var cleans = lastQueries is null ? new[] { clean.Q, clean.K, clean.V } : new[] { clean.K, clean.V };
        foreach (var t in outs) be.Fill(t, 0f);
        if (rows.ChangedRows > 0)
        {
            using var x = be.AllocateUninitialized(rows.ChangedRows, _model.Config.Dim);
            ops.GatherRows(s.AttnNormed, rows.Changed, x);
            var parts = outs.Select(t => be.AllocateUninitialized(rows.ChangedRows, t.Columns)).ToArray();
            try
            {
                be.MatMulShared(x, weights, parts);
                for (int i = 0; i < parts.Length; i++) ops.ScatterAddRows(parts[i], rows.Changed, outs[i]);
            }
            finally { foreach (var t in parts) t.Dispose(); }
        }
        for (int i = 0; i < outs.Length; i++) PrefixFromClean(be, ops, rows, cleans[i], outs[i]);
        if (rows.MeansPath is { } mp)
        {
            var path = MeansPathQkv(l);
            var paths = lastQueries is null ? new[] { path.Q, path.K, path.V } : new[] { path.K, path.V };
            for (int i = 0; i < outs.Length; i++) AddFrom(be, ops, paths[i], mp.CleanRow, mp.Rows, mp.Count, outs[i]);
        }
    }

    /// <summary>W_o of the changed rows; the prefix rows take the clean attn_out, padding rows zero (the attn edit applies after, as usual).</summary>
    void RunPartialOutputProjection(int l, LayerState s, PartialRows rows, ISweepOps ops)
    {
        var be = _model.LayerBackend(l);
        be.Fill(s.AttnOut, 0f);
        var (projected, n) = rows.Projected ?? (rows.Changed, rows.ChangedRows);
        if (n > 0)
        {
            using var z = be.AllocateUninitialized(n, s.Z.Columns);
            ops.GatherRows(s.Z, projected, z);
            using var o = be.AllocateUninitialized(n, s.AttnOut.Columns);
            be.MatMul(z, _model.Weights.Layers[l].Wo, o, false);
            ops.ScatterAddRows(o, projected, s.AttnOut);
        }
        PrefixFromClean(be, ops, rows, _cleanAttnOut![l], s.AttnOut);
    }

    // The prefix rows of a zero-filled output from the clean forward's tensor.
    static void PrefixFromClean(IBackend be, ISweepOps ops, PartialRows rows, Tensor clean, Tensor output) =>
        AddFrom(be, ops, clean, rows.PrefixClean, rows.Prefix, rows.PrefixRows, output);

    // Rows from[source[i]] added into the (zero) rows place[i] of output, for i below count.
    static void AddFrom(IBackend be, ISweepOps ops, Tensor from, Tensor source, Tensor place, int count, Tensor output)
    {
        if (count == 0) return;
        using var t = be.AllocateUninitialized(count, output.Columns);
        ops.GatherRows(from, source, t);
        ops.ScatterAddRows(t, place, output);
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
            using var act = be.AllocateUninitialized(n, c.HiddenDim);
            if (rows.CleanInput is not { } ci) GateUp(rows.Changed, n, act);
            else
            {
                // The clean-input rows' activations from the clean forward, the others' from gate and up, each into its place.
                be.Fill(act, 0f);
                using (var clean = be.AllocateUninitialized(ci.Count, c.HiddenDim))
                {
                    ops.GatherRows(_cleanAct![l], ci.CleanRow, clean);
                    ops.ScatterAddRows(clean, ci.Place, act);
                }
                if (ci.OtherCount > 0)
                {
                    using var part = be.AllocateUninitialized(ci.OtherCount, c.HiddenDim);
                    GateUp(ci.OtherRow, ci.OtherCount, part);
                    ops.ScatterAddRows(part, ci.OtherPlace, act);
                }
            }
            if (_site == NodeSite.MlpAct) ops.MeanAblate(act, ablation.Means, ablation.Bits, ablation.FirstMaskRow, rows.ChangedKeep, rows.ChangedMean);
            using var o = be.AllocateUninitialized(n, c.Dim);
            be.MatMul(act, w.W2, o, false);
            ops.ScatterAddRows(o, rows.Changed, s.MlpOut);
        }
        PrefixFromClean(be, ops, rows, _cleanMlpOut![l], s.MlpOut);
        if (rows.AblatedAttn is { } a) AddFrom(be, ops, AblatedAttnMlpOut(l), a.CleanRow, a.Rows, a.Count, s.MlpOut);
        if (rows.MeansPath is { } mp) AddFrom(be, ops, MeansPathMlpOut(l), mp.CleanRow, mp.Rows, mp.Count, s.MlpOut);

        void GateUp(Tensor rowIndex, int n, Tensor act)
        {
            using var x = be.AllocateUninitialized(n, c.Dim);
            ops.GatherRows(s.FfnNormed, rowIndex, x);
            using var gate = be.AllocateUninitialized(n, c.HiddenDim);
            using var up = be.AllocateUninitialized(n, c.HiddenDim);
            be.MatMulShared(x, [w.W1, w.W3], [gate, up]);
            be.SwiGlu(gate, up, act);
        }
    }
}
