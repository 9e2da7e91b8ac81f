using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Circuits;

/// <summary>
/// The nodes of one site ordered by |example-mean signed score|, one global ranking over layers, positions and units
/// (docs/method.md §4). Node k of the ranking is a flat index (layer · positions + position) · width + unit.
/// </summary>
public sealed class NodeRanking
{
    public NodeRanking(NodeScores scores, NodeSite site)
    {
        Site = site;
        Config = scores.Config;
        Positions = scores.Positions;
        Width = site.Width(Config);
        int perLayer = Positions * Width;
        var magnitude = new float[Config.Layers * perLayer];
        for (int l = 0; l < Config.Layers; l++)
        {
            var a = scores.Get(site, l);
            for (int i = 0; i < perLayer; i++) magnitude[l * perLayer + i] = Math.Abs(a[i]);
        }
        Magnitudes = magnitude;
        Order = Enumerable.Range(0, magnitude.Length).ToArray();
        // Stable order: larger |score| first, ties by flat index, so top-k and the threshold give the same sets.
        Array.Sort(Order, (x, y) => magnitude[y].CompareTo(magnitude[x]) is var c && c != 0 ? c : x.CompareTo(y));
    }

    public NodeSite Site { get; }
    public LlamaConfig Config { get; }
    public int Positions { get; }
    public int Width { get; }
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
        int perLayer = Positions * Width;
        int l = flat / perLayer, rest = flat % perLayer;
        return new NodeId(Site, l, rest / Width, rest % Width);
    }
}
