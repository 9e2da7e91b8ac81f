using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Circuits;

/// <summary>
/// The flat node index every circuit mask uses: node (layer, position from the end, unit) of a grid of
/// <paramref name="Layers"/> × <paramref name="Positions"/> × <paramref name="Width"/> units is
/// (layer · positions + position) · width + unit. Neuron circuits, edge circuits (their kept neurons) and SAE circuits
/// (one layer, width features + 1 error node) all speak it, so the index arithmetic lives here once.
/// </summary>
internal readonly record struct NodeGrid(int Layers, int Positions, int Width)
{
    public int Count => Layers * Positions * Width;
    public int PerLayer => Positions * Width;
    public int Flat(int layer, int position, int unit) => (layer * Positions + position) * Width + unit;
    public (int Layer, int Position, int Unit) Split(int flat)
    {
        int l = flat / PerLayer, rest = flat % PerLayer;
        return (l, rest / Width, rest % Width);
    }
}

/// <summary>
/// The nodes of a grid ordered by |example-mean signed score|, one global ranking over layers, positions and units
/// (docs/method.md §4); the one ranking of neuron and SAE circuits. Node k of the ranking is a <see cref="NodeGrid"/>
/// flat index.
/// </summary>
internal sealed class NodeRanking
{
    /// <summary>The ranking of one site's nodes over every layer.</summary>
    public NodeRanking(NodeScores scores, NodeSite site) : this(Gather(scores, site), new NodeGrid(scores.Config.Layers, scores.Positions, site.Width(scores.Config)))
    {
        Site = site;
    }

    /// <summary>The ranking of flat scores laid out on <paramref name="grid"/> (e.g. SAE nodes p·(F+1)+i: one layer, width F+1).</summary>
    public NodeRanking(ReadOnlySpan<float> flatScores, NodeGrid grid)
    {
        if (flatScores.Length != grid.Count) throw new ArgumentException($"{flatScores.Length} scores for a grid of {grid.Count} nodes");
        Grid = grid;
        var magnitude = new float[flatScores.Length];
        for (int i = 0; i < magnitude.Length; i++) magnitude[i] = Math.Abs(flatScores[i]);
        Magnitudes = magnitude;
        Order = Enumerable.Range(0, magnitude.Length).ToArray();
        // Stable order: larger |score| first, ties by flat index, so top-k and the threshold give the same sets.
        Array.Sort(Order, (x, y) => magnitude[y].CompareTo(magnitude[x]) is var c && c != 0 ? c : x.CompareTo(y));
    }

    static float[] Gather(NodeScores scores, NodeSite site)
    {
        int perLayer = scores.Positions * site.Width(scores.Config);
        var flat = new float[scores.Config.Layers * perLayer];
        for (int l = 0; l < scores.Config.Layers; l++) scores.Get(site, l).AsSpan(0, perLayer).CopyTo(flat.AsSpan(l * perLayer));
        return flat;
    }

    /// <summary>The site of a neuron-site ranking (<see cref="NodeRanking(NodeScores, NodeSite)"/>); null for flat scores.</summary>
    public NodeSite? Site { get; }
    public NodeGrid Grid { get; }
    public int Positions => Grid.Positions;
    public int Width => Grid.Width;
    public int Count => Order.Length;
    /// <summary>Flat node indices, most important first.</summary>
    public int[] Order { get; }
    public float[] Magnitudes { get; }

    /// <summary>The |score| threshold equivalent to top-k: the k-th largest magnitude (∞ for k = 0).</summary>
    public float Threshold(int k) => k <= 0 ? float.PositiveInfinity : Magnitudes[Order[Math.Min(k, Count) - 1]];

    /// <summary>Membership mask of the top-k nodes.</summary>
    public bool[] TopK(int k)
    {
        var mask = new bool[Count];
        for (int i = 0; i < Math.Min(k, Count); i++) mask[Order[i]] = true;
        return mask;
    }

    /// <summary>k random nodes (the random-circuit control), seeded.</summary>
    public bool[] Random(int k, int seed)
    {
        var rng = new Random(seed);
        var idx = Enumerable.Range(0, Count).ToArray();
        var mask = new bool[Count];
        for (int i = 0; i < Math.Min(k, Count); i++)
        {
            int j = rng.Next(i, Count);
            (idx[i], idx[j]) = (idx[j], idx[i]);
            mask[idx[i]] = true;
        }
        return mask;
    }

    public NodeId Node(int flat)
    {
        if (Site is not { } site) throw new InvalidOperationException("a ranking of flat scores has no site; use Grid.Split");
        var (l, p, u) = Grid.Split(flat);
        return new NodeId(site, l, p, u);
    }
}
