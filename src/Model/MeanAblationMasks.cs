using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// The keep-masks of one k-sweep as the backend builds them, and the site's means, sent once per sweep and shared by
/// every example batch's <see cref="MeanAblationSweep"/> (issue 18, item 3). Each mask is described by a spec
/// (<see cref="ISweepOps.BuildKeepBits"/>): the top k of the ranking, or its complement, from the ranks (one int per
/// node, sent once); anything else (the random controls) as stored keep bits, one bit per node, its complement then
/// the same row inverted. A forward then builds its masks' bits on the backend from these tables and k: nothing per
/// mask or per forward is uploaded.
/// </summary>
internal sealed class MeanAblationMasks : IDisposable
{
    readonly int[] _ranks;
    readonly uint[] _stored;
    readonly Dictionary<IBackend, (Tensor Ranks, Tensor Stored)> _tables = new(ReferenceEqualityComparer.Instance);
    readonly Tensor[] _deviceMeans;

    /// <param name="model">The model whose backend builds the masks and holds the means.</param>
    /// <param name="site">The node site the masks ablate.</param>
    /// <param name="means">Per layer the site's means, [meanPositions, width], row p = position p from the end.</param>
    /// <param name="meanPositions">Positions (rows) of each layer's means: the longest evaluation prompt.</param>
    /// <param name="maskPositions">Positions of the tracing grid the masks are laid out on (counted from the end).</param>
    /// <param name="masks">The sweep's keep-masks on the tracing grid: entry (layer · maskPositions + p) · width + unit.</param>
    /// <param name="rankingOrder">The ranking the top-k masks come from (flat node indices, most important first);
    /// null: no mask is taken for a top-k one except keep-all and keep-none.</param>
    public MeanAblationMasks(Llama model, NodeSite site, IReadOnlyList<float[]> means, int meanPositions, int maskPositions,
        IReadOnlyList<bool[]> masks, IReadOnlyList<int>? rankingOrder = null)
    {
        var c = model.Config;
        Model = model; Site = site; MeanPositions = meanPositions; MaskPositions = maskPositions;
        Width = site.Width(c);
        int n = c.Layers * maskPositions * Width;
        if (means.Count != c.Layers) throw new ArgumentException($"{means.Count} layers of means for a {c.Layers}-layer model");
        foreach (var m in means)
            if (m.Length != meanPositions * Width) throw new ArgumentException($"means of {m.Length} values, expected {meanPositions}·{Width}");
        foreach (var m in masks)
            if (m.Length != n) throw new ArgumentException($"a keep-mask has {m.Length} entries, expected {n}");
        Host = masks;
        HostMeans = means.ToArray();

        _ranks = new int[n];
        if (rankingOrder is null) for (int i = 0; i < n; i++) _ranks[i] = i;
        else
        {
            if (rankingOrder.Count != n) throw new ArgumentException($"a ranking of {rankingOrder.Count} nodes for masks of {n}");
            Array.Fill(_ranks, -1);
            for (int i = 0; i < n; i++)
            {
                int f = rankingOrder[i];
                if ((uint)f >= (uint)n || _ranks[f] >= 0) throw new ArgumentException($"the ranking is not an order of the {n} nodes (node {f})");
                _ranks[f] = i;
            }
        }

        // Specs: a top-k of the ranking or its complement from the ranks; the complement of the stored mask before it
        // (Faithfulness lays out C, ¬C) as that row inverted; anything else stored.
        var specs = new int[3 * masks.Count];
        var stored = new List<bool[]>();
        for (int i = 0; i < masks.Count; i++)
        {
            var m = masks[i];
            int kept = n - m.AsSpan().Count(false);
            (int Source, int K, int Invert) spec;
            if (IsTopK(m, kept, invert: false)) spec = (-1, kept, 0);
            else if (IsTopK(m, n - kept, invert: true)) spec = (-1, n - kept, 1);
            else if (stored.Count > 0 && IsComplement(m, stored[^1])) spec = (stored.Count - 1, 0, 1);
            else { stored.Add(m); spec = (stored.Count - 1, 0, 0); }
            specs[3 * i] = spec.Source; specs[3 * i + 1] = spec.K; specs[3 * i + 2] = spec.Invert;
        }
        Specs = specs;
        StoredMasks = stored.Count;
        int words = AblationMask.WordsPerRow(Width);
        long rowWords = (long)c.Layers * maskPositions * words;
        _stored = new uint[checked((int)(stored.Count * rowWords))];
        for (int s = 0; s < stored.Count; s++)
            for (int r = 0; r < c.Layers * maskPositions; r++)
                AblationMask.PackRow(stored[s].AsSpan(r * Width, Width), _stored.AsSpan(checked((int)(s * rowWords + r * words)), words));
        _deviceMeans = means.Select((m, l) => model.LayerBackend(l).Upload(m, meanPositions, Width)).ToArray();
    }

    public Llama Model { get; }
    public NodeSite Site { get; }
    public int Width { get; }
    public int MaskPositions { get; }
    public int MeanPositions { get; }
    /// <summary>The masks as given (the planner and the CPU keep-k products read them).</summary>
    public IReadOnlyList<bool[]> Host { get; }
    /// <summary>The means as given (the CPU keep-k MLP's constants).</summary>
    public IReadOnlyList<float[]> HostMeans { get; }
    /// <summary>[masks, 3]: per mask (source, k, invert) as <see cref="ISweepOps.BuildKeepBits"/> reads them.</summary>
    public int[] Specs { get; }
    /// <summary>Masks sent as keep bits (the rest are built from the ranks).</summary>
    public int StoredMasks { get; }
    /// <summary>Bytes this sweep sends once: ranks, stored bits, means.</summary>
    public long UploadBytes => 4L * (_ranks.Length + _stored.Length + HostMeans.Sum(m => (long)m.Length));

    /// <summary>The site's means of <paramref name="layer"/> on its backend.</summary>
    public Tensor Means(int layer) => _deviceMeans[layer];

    /// <summary>The ranks and stored bits on <paramref name="backend"/>, sent there on first use.</summary>
    internal (Tensor Ranks, Tensor Stored) TablesOn(IBackend backend)
    {
        if (!_tables.TryGetValue(backend, out var t))
            _tables[backend] = t = (SweepOps.UploadInts(backend, _ranks), SweepOps.UploadBits(backend, _stored, AblationMask.WordsPerRow(Width)));
        return t;
    }

    bool IsTopK(bool[] mask, int k, bool invert)
    {
        for (int f = 0; f < mask.Length; f++)
            if (mask[f] != ((_ranks[f] < k) ^ invert)) return false;
        return true;
    }

    static bool IsComplement(bool[] a, bool[] b)
    {
        for (int f = 0; f < a.Length; f++)
            if (a[f] == b[f]) return false;
        return true;
    }

    /// <summary>One phrase: how the masks are built.</summary>
    public string Describe()
    {
        int ranked = 0;
        for (int i = 0; i < Host.Count; i++) if (Specs[3 * i] < 0) ranked++;
        return $"masks built on the backend: {ranked} from the ranks and k, {StoredMasks} sent once as bits, " +
               $"{Host.Count - ranked - StoredMasks} those bits inverted";
    }

    public void Dispose()
    {
        foreach (var m in _deviceMeans) m.Dispose();
        foreach (var (r, s) in _tables.Values) { r.Dispose(); s.Dispose(); }
        _tables.Clear();
    }
}
