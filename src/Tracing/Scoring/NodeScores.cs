using NeuronTrace.Model;
using NeuronTrace.Tracing.Runs;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>
/// One score per node: for each site and layer a [positions, width] array, positions counted from the end of the prompt
/// (0 = last token). Scores are means over the examples that have the position.
/// </summary>
public sealed class NodeScores
{
    readonly Dictionary<(NodeSite, int), float[]> _scores = new();

    public NodeScores(LlamaConfig config, IReadOnlyList<NodeSite> sites, int positions)
    {
        Config = config;
        Sites = sites.ToArray();
        Positions = positions;
        foreach (var s in Sites)
            for (int l = 0; l < config.Layers; l++)
                _scores[(s, l)] = new float[positions * s.Width(config)];
    }

    public LlamaConfig Config { get; }
    public NodeSite[] Sites { get; }
    public int Positions { get; }

    /// <summary>[positions · width] scores of one site and layer; row p is position p from the end.</summary>
    public float[] Get(NodeSite site, int layer) =>
        _scores.TryGetValue((site, layer), out var a) ? a
        : throw new ArgumentException($"no scores for {site.Name()} layer {layer} (scored: {string.Join(", ", Sites.Select(s => s.Name()))}; {Config.Layers} layers)");

    public float this[NodeId n] => Get(n.Site, n.Layer)[n.Position * n.Site.Width(Config) + n.Index];

    public long NodeCount(NodeSite site) => (long)Config.Layers * Positions * site.Width(Config);

    /// <summary>Every node of a site with its score, in (layer, position, index) order.</summary>
    public IEnumerable<(NodeId Node, float Score)> Enumerate(NodeSite site)
    {
        int w = site.Width(Config);
        for (int l = 0; l < Config.Layers; l++)
        {
            var a = Get(site, l);
            for (int p = 0; p < Positions; p++)
                for (int i = 0; i < w; i++)
                    yield return (new NodeId(site, l, p, i), a[p * w + i]);
        }
    }

    /// <summary>Writes a scores folder into <paramref name="dir"/> (files: <see cref="ScoresFolder"/>).</summary>
    public void Save(string dir, string method, string metric, int examples) => ScoresFolder.Write(this, dir, method, metric, examples);
}
