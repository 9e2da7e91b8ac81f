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

    internal NodeScores(LlamaConfig config, IReadOnlyList<NodeSite> sites, int positions)
    {
        Config = config;
        Sites = sites.ToArray();
        Positions = positions;
        foreach (var s in Sites)
            for (int l = 0; l < config.Layers; l++)
                _scores[(s, l)] = new float[positions * s.Width(config)];
    }

    /// <summary>The model the scores are of.</summary>
    public LlamaConfig Config { get; }
    /// <summary>The sites scored.</summary>
    public NodeSite[] Sites { get; }
    /// <summary>Token positions scored, counted from the end of the prompt (the longest prompt's length).</summary>
    public int Positions { get; }

    /// <summary>[positions · width] scores of one site and layer; row p is position p from the end.</summary>
    /// <param name="site">A scored site.</param>
    /// <param name="layer">A layer, from 0.</param>
    /// <exception cref="ArgumentException">The site was not scored or the layer is outside the model.</exception>
    public float[] Get(NodeSite site, int layer) =>
        _scores.TryGetValue((site, layer), out var a) ? a
        : throw new ArgumentException($"no scores for {site.Name()} layer {layer} (scored: {string.Join(", ", Sites.Select(s => s.Name()))}; {Config.Layers} layers)");

    /// <summary>The score of one node.</summary>
    /// <param name="n">A node of a scored site, inside the model and the scored positions.</param>
    public float this[NodeId n] => Get(n.Site, n.Layer)[n.Position * n.Site.Width(Config) + n.Index];

    /// <summary>How many nodes a site has: layers · positions · the site's width.</summary>
    /// <param name="site">The site.</param>
    public long NodeCount(NodeSite site) => (long)Config.Layers * Positions * site.Width(Config);

    /// <summary>Every node of a site with its score, in (layer, position, index) order.</summary>
    /// <param name="site">A scored site.</param>
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
    /// <param name="dir">The folder to write (created when missing).</param>
    /// <param name="method">The method's name, recorded in the folder's metadata.</param>
    /// <param name="metric">The metric's name, recorded likewise.</param>
    /// <param name="examples">How many examples the scores average, recorded likewise.</param>
    public void Save(string dir, string method, string metric, int examples) => ScoresFolder.Write(this, dir, method, metric, examples);
}
