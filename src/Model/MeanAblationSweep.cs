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
/// <item>Keep-k products (any backend whose sweep ops read the layer's weights: CPU and CUDA with fp32 weights): a layer
/// whose masks keep few units computes only what the kept units need (<see cref="LayerRun.KeepK"/>; mlp_act:
/// <see cref="ISweepOps.SparseMlp"/>, its C = W_down · mean made once per sweep; mlp_out/resid/attn: <see cref="ISweepOps.KeptOutputs"/>).</item>
/// <item>Constant layers (any backend): a layer keeping no unit skips what only feeds the site (<see cref="LayerRun.Constant"/>);
/// for resid the forward starts above the highest such layer, from the means.</item>
/// <item>Masks, means and metric on the backend (<see cref="ISweepOps"/>): the means, the ranks and the random controls'
/// bits are sent once per sweep (<see cref="MeanAblationMasks"/>), the row tables and the metric's classifier directions
/// once per example batch; a forward builds its masks' bits from them and k and adds its metric per mask on the backend,
/// and one download per example batch brings the metric of every mask back (<see cref="MetricSums"/>).</item>
/// </list>
/// Masks are laid out as the tracing grid: entry (layer · maskPositions + p) · width + unit, p the position from the end;
/// positions at or beyond maskPositions are ablated, padding rows keep their value (no real row reads them).
/// The per-layer hooks are in MeanAblationSweep.Layers.cs.
/// </summary>
internal sealed partial class MeanAblationSweep : IDisposable
{
    readonly Llama _model;
    readonly MeanAblationMasks _masks;
    readonly NodeSite _site;
    readonly IReadOnlyList<int[]> _prompts;
    readonly TokenBatch _clean;
    readonly Tensor[] _cleanInputs;   // r_l of the clean prompts, [B·T, dim] per layer l ≤ L (L: the last layer's output), on InputBackend(l)
    readonly Tensor? _termRows;       // [U, dim] on the head backend: the classifier rows of the U tokens the metric reads
    readonly Tensor? _terms;          // [B, 2 · perRow]: each prompt's (column into U, weight) terms (ISweepOps.ReplicaMetric)
    readonly Dictionary<IBackend, RowTables> _rows = new(ReferenceEqualityComparer.Instance);
    readonly int _width, _maskPositions, _maxLen;
    readonly bool _oneBackend;        // every layer and its input on one backend (the attn all-means path is made there)

    /// <summary>A keep-mask's bits of layer <paramref name="l"/> at position <paramref name="p"/> from the end (p below the mask's positions).</summary>
    ReadOnlySpan<bool> KeepBits(bool[] mask, int l, int p) => mask.AsSpan((l * _maskPositions + p) * _width, _width);

    /// <summary>Whether a keep-mask keeps any unit of layer <paramref name="l"/> at position <paramref name="p"/> from the end (none past its positions).</summary>
    bool KeepsAny(bool[] mask, int l, int p) => p < _maskPositions && KeepBits(mask, l, p).Contains(true);

    /// <param name="masks">The sweep's masks and means (sent once per sweep, shared by the example batches).</param>
    /// <param name="prompts">This example batch's clean prompts.</param>
    /// <param name="metricTerms">Per prompt the metric's (token, weight) terms, for a metric linear in the logits: the
    /// metric is then reduced on the backend (<see cref="MetricSums"/>) from the logits of those tokens alone, each
    /// computed as the full classifier product computes it; null: only <see cref="LastLogits"/>.</param>
    public MeanAblationSweep(MeanAblationMasks masks, IReadOnlyList<int[]> prompts, IReadOnlyList<(int Token, float Weight)[]>? metricTerms = null)
    {
        var model = masks.Model;
        var c = model.Config;
        _model = model; _masks = masks; _site = masks.Site; _prompts = prompts; _maskPositions = masks.MaskPositions;
        _width = masks.Width;
        if (!Supports(model)) throw new NotSupportedException($"the sweep shortcuts need a backend with sweep ops (CPU or CUDA), not {model.Backend.Name}");
        _clean = new TokenBatch(prompts);
        _oneBackend = Enumerable.Range(0, c.Layers).All(l => ReferenceEquals(model.LayerBackend(l), model.LayerBackend(0)) && ReferenceEquals(InputOf(l), model.LayerBackend(0)));
        _maxLen = _clean.Lengths.Max();
        if (masks.MeanPositions < _maxLen) throw new ArgumentException("the means do not cover every position of the evaluation prompts");
        if (metricTerms is not null && metricTerms.Count != prompts.Count) throw new ArgumentException($"metric terms for {metricTerms.Count} of {prompts.Count} prompts");
        using var pass = model.Forward(_clean, LogitRows.None);
        // The clean inputs stay on the backend a forward from that layer starts on (where the layer below left its output):
        // a forward gathers its replicas from them (no upload per forward).
        _cleanInputs = Enumerable.Range(0, c.Layers + 1).Select(l =>
        {
            var s = l < c.Layers ? pass.Layers[l].Input : pass.Layers[c.Layers - 1].Output;
            IBackend from = l < c.Layers ? model.LayerBackend(l) : model.LayerBackend(c.Layers - 1), to = InputOf(l);
            if (!ReferenceEquals(from, to)) return LayerPlacement.Transfer(s, from, to);
            var h = to.AllocateUninitialized(s.Shape);
            to.Copy(s, h);
            return h;
        }).ToArray();
        // The clean Q/K/V, attn_out and mlp_out, for the clean row prefix of a layer (MeanAblationSweep.Rows.cs).
        CacheCleanRows(pass);
        if (metricTerms is not null) (_termRows, _terms) = TermTables(metricTerms);
    }

    /// <summary>Whether <paramref name="model"/>'s backends have the sweep ops (<see cref="SweepOps.Of"/>).</summary>
    public static bool Supports(Llama model) =>
        Enumerable.Range(0, model.Config.Layers).All(l => SweepOps.Of(model.LayerBackend(l)) is not null) && SweepOps.Of(model.Backend) is not null;

    IBackend InputOf(int layer) => layer < _model.Config.Layers ? _model.InputBackend(layer) : _model.HeadBackend;
    static ISweepOps Ops(IBackend be) => SweepOps.Of(be)!;

    // The classifier rows of the tokens the metric reads, and each prompt's terms as columns into them: a forward's
    // metric needs the logits of those U tokens only (a row of a product is computed alike whatever its other columns).
    (Tensor Rows, Tensor Terms) TermTables(IReadOnlyList<(int Token, float Weight)[]> terms)
    {
        var be = _model.HeadBackend;
        var tokens = terms.SelectMany(t => t.Select(x => x.Token)).Distinct().Order().ToArray();
        if (tokens.Length == 0) tokens = [0];   // a metric of no terms: one unused row keeps the shapes non-empty
        var column = tokens.Select((t, i) => (t, i)).ToDictionary(x => x.t, x => x.i);
        int d = _model.Config.Dim;
        Tensor rows;
        if (_model.Weights.Classifier is CpuHalfTensor half)
        {
            // 16-bit weights on the CPU: the rows widened as the product widens them (exactly: a widening is exact).
            var widened = new float[tokens.Length * d];
            for (int i = 0; i < tokens.Length; i++) half.Data.Widen((long)tokens[i] * d, widened.AsSpan(i * d, d));
            rows = be.Upload(widened, tokens.Length, d);
        }
        else
        {
            rows = be.AllocateUninitialized(tokens.Length, d);
            be.Embedding(tokens, _model.Weights.Classifier, rows);   // a row lookup, which reads a bf16 device classifier too
        }
        var table = SweepOps.TermsTable(terms.Select(t => t.Select(x => (column[x.Token], x.Weight)).ToArray()).ToList(), tokens.Length, out int perRow);
        return (rows, be.Upload(table, terms.Count, 2 * perRow));
    }

    /// <summary>
    /// A layer runs its keep-k product when its masks keep at most this fraction of the units per row on average; null
    /// (the default): the fraction the layer's backend expects to pay (<see cref="ISweepOps.KeepKFraction"/>).
    /// </summary>
    public double? SparseFraction { get; init; }

    /// <summary>Whether the keep-k products may be used at all: a threshold that is not 0, a site that has one (attn_z has none).</summary>
    public bool KeepK => SparseFraction is not <= 0 && _site != NodeSite.AttnZ;

    // The keep-k threshold of a layer whose forwards have realRows real rows.
    double KeepKFraction(int layer, long realRows)
    {
        if (SparseFraction is { } f) return f;
        var c = _model.Config;
        var ops = Ops(_model.LayerBackend(layer));
        return _site switch
        {
            NodeSite.MlpAct => ops.KeepKFraction(true, realRows, c.Dim, c.HiddenDim),
            NodeSite.Attn => ops.KeepKFraction(false, realRows, c.Heads * c.HeadDim, c.Dim),
            _ => ops.KeepKFraction(false, realRows, c.HiddenDim, c.Dim),
        };
    }

    /// <summary>Whether <paramref name="layer"/>'s backend reads the weights its keep-k product needs as stored (<see cref="ISweepOps.KeepKReads"/>).</summary>
    bool KeepKAt(int layer)
    {
        var ops = Ops(_model.LayerBackend(layer));
        var w = _model.Weights.Layers[layer];
        return KeepK && _site switch
        {
            NodeSite.MlpAct => ops.KeepKReads(w.W1) && ops.KeepKReads(w.W3) && ops.KeepKReads(w.W2),
            NodeSite.Attn => ops.KeepKReads(w.Wo),
            _ => ops.KeepKReads(w.W2),
        };
    }

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

    /// <summary>The planner: the sweep's masks ordered by first changed layer and kept units, cut into forwards of at most <paramref name="masksPerForward"/>.</summary>
    public IReadOnlyList<SweepChunk> Plan(int masksPerForward)
    {
        var masks = _masks.Host;
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
        for (int l = start; l < c.Layers; l++)
        {
            long kept = 0;
            foreach (var m in masks)
                for (int p = 0; p < covered; p++)
                    kept += (long)rowsAt[p] * Count(KeepBits(m, l, p));
            // mlp_act keeping nothing is the keep-k MLP's C alone; where the keep-k MLP can not run it stays dense.
            runs[l] = kept == 0 && _site != NodeSite.MlpAct ? LayerRun.Constant
                : KeepKAt(l) && kept <= KeepKFraction(l, realRows) * realRows * _width ? LayerRun.KeepK : LayerRun.Dense;
        }
        return runs;
    }

    static int Count(ReadOnlySpan<bool> a) => a.Length - a.Count(false);

    /// <summary>
    /// Every chunk of <paramref name="chunks"/> (a plan of this sweep's masks) run, and per mask the metric summed over the
    /// prompts, reduced on the backend: the masks' bits built there, the sums of all chunks downloaded once.
    /// </summary>
    public double[] MetricSums(IReadOnlyList<SweepChunk> chunks)
    {
        if (_termRows is null || _terms is null) throw new InvalidOperationException("this sweep was made without metric terms: use LastLogits");
        var order = chunks.SelectMany(ch => ch.Masks).ToArray();
        var head = _model.HeadBackend;
        using var specs = new SpecTables(this, order);
        using var metric = head.Allocate(Math.Max(1, order.Length), 2);
        int first = 0;
        foreach (var chunk in chunks)
        {
            int at = first;
            Run(chunk, specs, first, normed =>
            {
                using var logits = head.AllocateUninitialized(normed.Rows, _termRows.Rows);
                head.MatMul(normed, _termRows, logits, false);
                Ops(head).ReplicaMetric(logits, _terms, metric, at);
            });
            first += chunk.Masks.Length;
        }
        var h = new float[metric.Length];
        head.Download(metric, h);
        var sums = new double[_masks.Host.Count];
        for (int j = 0; j < order.Length; j++) sums[order[j]] += (double)h[2 * j] + h[2 * j + 1];
        return sums;
    }

    /// <summary>Last-position logits [masks · B, vocab] (replica-major) of one planned forward (the path of a metric that is not linear in the logits).</summary>
    public float[] LastLogits(SweepChunk chunk)
    {
        var c = _model.Config;
        using var specs = new SpecTables(this, chunk.Masks);
        float[]? logits = null;
        Run(chunk, specs, 0, normed =>
        {
            var be = _model.HeadBackend;
            using var l = be.AllocateUninitialized(normed.Rows, c.VocabSize);
            be.MatMul(normed, _model.Weights.Classifier, l, false);
            logits = new float[l.Length];
            be.Download(l, logits);
        });
        return logits!;
    }

    // One planned forward: from the clean residual (or the means) at the chunk's start layer to the final norm of the
    // prompts' last rows, which head reads ([R·B, dim] on the head backend). The chunk's masks are spec rows firstSpec..
    void Run(SweepChunk chunk, SpecTables specs, int firstSpec, Action<Tensor> head)
    {
        var c = _model.Config;
        var masks = chunk.Masks.Select(i => _masks.Host[i]).ToList();
        int R = masks.Count, L = c.Layers, P = _maskPositions;
        int start = chunk.StartLayer;
        if (chunk.StartsFromMeans)
        {
            if (_site != NodeSite.Resid || start < 1 || masks.Any(m => !KeepsNothing(m, start - 1)))
                throw new ArgumentException($"the chunk starts from the resid means of layer {start - 1}, but a mask keeps a unit there");
        }
        else start = Math.Min(start, masks.Min(FirstChangedLayer));   // a chunk never starts above a mask's change
        var batch = new TokenBatch(Enumerable.Range(0, R).SelectMany(_ => _prompts).ToList());
        var inBe = InputOf(start);   // the means of layer start − 1 and the clean inputs of layer start live there
        var inRows = Rows(inBe, R);
        var x = inBe.AllocateUninitialized(batch.Rows, c.Dim);
        if (chunk.StartsFromMeans) Ops(inBe).GatherRows(_masks.Means(start - 1), inRows.MeanIndex, x);   // padding rows: any row
        else Ops(inBe).GatherRows(_cleanInputs[start], inRows.CleanIndex, x);   // replica row i is clean row i mod B·T

        // The masks' bits for every layer, built on each backend the layers from start run on.
        var bits = new Dictionary<IBackend, Tensor>(ReferenceEqualityComparer.Instance);
        using var plan = new InterventionPlan();
        LayerState? previous = null;
        int[]? hostMeanRow = null;
        var (hostKeepRows, hostMeanRows) = HostRowTables(batch, R);
        var changedFrom = masks.Select(ChangedFrom).ToList();
        var firstKept = _site == NodeSite.Attn && _oneBackend ? masks.Select(FirstKeptLayer).ToList() : null;
        PartialRows? partial = null, input = null, kept = null;
        try
        {
            for (int l = start; l < L; l++)
            {
                var be = _model.LayerBackend(l);
                var ops = Ops(be);
                if (!bits.TryGetValue(be, out var b))
                {
                    var (ranks, stored) = _masks.TablesOn(be);
                    bits[be] = b = be.AllocateUninitialized(L * R * P, AblationMask.WordsPerRow(_width));
                    ops.BuildKeepBits(ranks, stored, specs.On(be), firstSpec, R, L, P, _width, b);
                }
                var rows = Rows(be, R);
                var ablation = new LayerAblation(ops, _masks.Means(l), b, (long)l * R * P, rows);
                var run = chunk.Layers[l];
                // The keep-k MLP writes mlp_out itself, its ablation folded in; every other layer is ablated as usual.
                if (!(run == LayerRun.KeepK && _site == NodeSite.MlpAct)) plan.SetTransform(_site, l, ablation.Apply);
                if (run == LayerRun.KeepK) hostMeanRow ??= hostMeanRows;
                partial?.Dispose();
                input?.Dispose();
                kept?.Dispose();
                partial = run == LayerRun.Dense || _site == NodeSite.Attn ? SiteRowsAt(l, changedFrom, batch, hostKeepRows, hostMeanRows, masks, firstKept) : null;
                input = InputRowsAt(l, changedFrom, batch, hostKeepRows, hostMeanRows, masks, firstKept);
                kept = run != LayerRun.Constant ? KeptRowsAt(l, masks, changedFrom, batch, hostKeepRows, hostMeanRows) : null;
                var hooks = run == LayerRun.Dense && l < L - 1 && partial is null && input is null && kept is null ? null
                    : new LayerHooks(this, l, run, masks, batch, hostMeanRow, ablation, partial, input, kept);
                var state = _model.ForwardLayer(l, previous?.Output ?? x, batch, plan, hooks);
                previous?.Dispose();
                previous = state;
            }
            var output = previous?.Output ?? x;
            var hb = _model.HeadBackend;
            var last = Rows(hb, R).LastRows;
            using var final = hb.AllocateUninitialized(R * _prompts.Count, c.Dim);
            Ops(hb).GatherRows(output, last, final);
            using var normed = hb.AllocateUninitialized(final.Rows, c.Dim);
            using var rstd = hb.AllocateUninitialized(final.Rows);
            hb.RmsNorm(final, _model.Weights.FinalNorm, c.NormEps, normed, rstd);
            head(normed);
        }
        finally
        {
            partial?.Dispose();
            input?.Dispose();
            kept?.Dispose();
            previous?.Dispose();
            x.Dispose();
            foreach (var t in bits.Values) t.Dispose();
        }
    }

    /// <summary>Per clean row (b·T + t) the lowest layer where <paramref name="mask"/> keeps a unit at its position (layers if none; padding rows 0).</summary>
    int[] FirstKeptLayer(bool[] mask)
    {
        int L = _model.Config.Layers, T = _clean.SeqLen;
        var first = new int[_clean.Rows];
        for (int b = 0; b < _prompts.Count; b++)
        {
            int len = _prompts[b].Length;
            for (int t = 0; t < len; t++)
            {
                int l = 0;
                while (l < L && !KeepsAny(mask, l, len - 1 - t)) l++;
                first[b * T + t] = l;
            }
        }
        return first;
    }

    bool KeepsNothing(bool[] mask, int layer) =>
        !mask.AsSpan(layer * _maskPositions * _width, Math.Min(_maxLen, _maskPositions) * _width).Contains(true);

    /// <summary>One layer's mean ablation from the backend's tables: x's rows are the first rows of the row maps.</summary>
    internal sealed record LayerAblation(ISweepOps Ops, Tensor Means, Tensor Bits, long FirstMaskRow, RowTables Rows)
    {
        public void Apply(Tensor x) => Ops.MeanAblate(x, Means, Bits, FirstMaskRow, Rows.KeepRow, Rows.MeanRow);
        /// <summary>The ablation of the prompts' last rows only, gathered into <paramref name="x"/> [R·B, W].</summary>
        public void ApplyLast(Tensor x) => Ops.MeanAblate(x, Means, Bits, FirstMaskRow, Rows.LastKeepRow, Rows.LastMeanRow);
    }

    /// <summary>
    /// The row tables of forwards of up to <see cref="Replicas"/> masks on one backend, sent once per example batch (a
    /// forward of fewer masks reads their first rows: rows are replica-major). Rows (r·B + b)·T + t, right-padded;
    /// position p from the end of example b is t = len − 1 − p. A padding row has mean row −1 (kept), a position the
    /// masks do not cover has keep row −1 (ablated).
    /// </summary>
    internal sealed class RowTables(int replicas, Tensor keepRow, Tensor meanRow, Tensor cleanIndex, Tensor meanIndex, Tensor lastRows,
        Tensor lastKeepRow, Tensor lastMeanRow) : IDisposable
    {
        public int Replicas { get; } = replicas;
        public Tensor KeepRow { get; } = keepRow;
        public Tensor MeanRow { get; } = meanRow;
        /// <summary>Row i of a forward is clean row i mod B·T.</summary>
        public Tensor CleanIndex { get; } = cleanIndex;
        /// <summary>The mean row of each row (padding: 0), for a forward that starts from the means.</summary>
        public Tensor MeanIndex { get; } = meanIndex;
        /// <summary>The prompts' last rows, replica-major; and their keep and mean rows.</summary>
        public Tensor LastRows { get; } = lastRows;
        public Tensor LastKeepRow { get; } = lastKeepRow;
        public Tensor LastMeanRow { get; } = lastMeanRow;

        public void Dispose()
        {
            foreach (var t in new[] { KeepRow, MeanRow, CleanIndex, MeanIndex, LastRows, LastKeepRow, LastMeanRow }) t.Dispose();
        }
    }

    RowTables Rows(IBackend be, int replicas)
    {
        if (_rows.TryGetValue(be, out var t) && t.Replicas >= replicas) return t;
        t?.Dispose();
        int R = Math.Max(replicas, t?.Replicas ?? 0);
        var batch = new TokenBatch(Enumerable.Range(0, R).SelectMany(_ => _prompts).ToList());
        var (keepRow, meanRow) = HostRowTables(batch, R);
        int cleanRows = _clean.Rows;
        var last = batch.LastRows();
        SweepOps.CheckRows(keepRow, R * _maskPositions, "keep rows");
        SweepOps.CheckRows(meanRow, _masks.MeanPositions, "mean rows");
        var made = new RowTables(R, SweepOps.UploadInts(be, keepRow), SweepOps.UploadInts(be, meanRow),
            SweepOps.UploadInts(be, Enumerable.Range(0, batch.Rows).Select(i => i % cleanRows).ToArray()),
            SweepOps.UploadInts(be, meanRow.Select(m => Math.Max(m, 0)).ToArray()),
            SweepOps.UploadInts(be, last), SweepOps.UploadInts(be, last.Select(r => keepRow[r]).ToArray()),
            SweepOps.UploadInts(be, last.Select(r => meanRow[r]).ToArray()));
        _rows[be] = made;
        return made;
    }

    (int[] KeepRow, int[] MeanRow) HostRowTables(TokenBatch batch, int replicas)
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

    /// <summary>The specs of a list of the sweep's masks, in that order, on each backend that builds bits from them.</summary>
    sealed class SpecTables(MeanAblationSweep sweep, int[] order) : IDisposable
    {
        readonly Dictionary<IBackend, Tensor> _on = new(ReferenceEqualityComparer.Instance);

        public Tensor On(IBackend be)
        {
            if (_on.TryGetValue(be, out var t)) return t;
            var specs = new int[3 * order.Length];
            for (int j = 0; j < order.Length; j++) sweep._masks.Specs.AsSpan(3 * order[j], 3).CopyTo(specs.AsSpan(3 * j));
            var u = be.Upload(System.Runtime.InteropServices.MemoryMarshal.Cast<int, float>(specs.AsSpan()), order.Length, 3);
            _on[be] = u;
            return u;
        }

        public void Dispose()
        {
            foreach (var t in _on.Values) t.Dispose();
        }
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
               $"{Runs(LayerRun.Constant)} constant, {Runs(LayerRun.Dense)} dense; top layer's Q and all past its attention on the last rows only; " +
               _masks.Describe() + (_terms is null ? "; logits downloaded per forward" : "; metric reduced on the backend, one download") +
               (PartialRowsDone.LayerRuns > 0 ? $"; {PartialRowsDone.LayerRuns} layer runs with the MLP on the changed rows alone " +
                   $"({PartialRowsDone.PrefixRows} of {PartialRowsDone.RealRows} real rows clean)" : "") +
               (InputRowsDone.LayerRuns > 0 ? $"; {InputRowsDone.LayerRuns} layer runs with Q/K/V on the changed rows alone " +
                   $"({InputRowsDone.PrefixRows} of {InputRowsDone.RealRows} real rows clean)" : "") +
               (KeptRowsDone.LayerRuns > 0 ? $"; {KeptRowsDone.LayerRuns} layer runs with the MLP only where a row keeps a unit " +
                   $"({KeptRowsDone.Rows} of {KeptRowsDone.RealRows} real rows)" : "") +
               (AblatedAttnRowsDone > 0 ? $"; {AblatedAttnRowsDone} rows keeping no attn unit over a clean input with the MLP output of the means (made once per layer)" : "") +
               (MeansPathRowsDone.Qkv + MeansPathRowsDone.Mlp > 0 ? $"; rows that kept no attn unit in the layers below on the all-means path (made once per layer): " +
                   $"{MeansPathRowsDone.Qkv} with its Q/K/V, {MeansPathRowsDone.Mlp} keeping none in the layer either with its MLP output" : "") +
               (CleanActRowsDone > 0 ? $"; {CleanActRowsDone} changed rows with the clean activations (W_down alone)" : "");
    }

    public void Dispose()
    {
        foreach (var t in _cleanInputs) t.Dispose();
        DisposeCleanRows();
        _termRows?.Dispose();
        _terms?.Dispose();
        foreach (var t in _rows.Values) t.Dispose();
        _rows.Clear();
    }
}
