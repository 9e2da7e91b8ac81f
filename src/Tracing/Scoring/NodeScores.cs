using System.Globalization;
using System.Text;
using System.Text.Json;
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

    /// <summary>
    /// Writes <c>scores.f32</c> (little-endian float32, arrays back to back), <c>scores.json</c> (the index) and
    /// <c>scores.csv</c> (<c>site,layer,position,index,score</c>) into <paramref name="dir"/>.
    /// </summary>
    public void Save(string dir, string method, string metric, int examples)
    {
        Directory.CreateDirectory(dir);
        var entries = new List<object>();
        long offset = 0;
        AtomicFile.Write(Path.Combine(dir, "scores.f32"), stream =>
        {
            foreach (var s in Sites)
                for (int l = 0; l < Config.Layers; l++)
                {
                    var a = _scores[(s, l)];
                    stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(a.AsSpan()));
                    entries.Add(new { site = s.Name(), layer = l, shape = new[] { Positions, s.Width(Config) }, offset_bytes = offset });
                    offset += a.Length * 4L;
                }
        });
        var index = new
        {
            format = "neurontrace-scores/1",
            method, metric, examples, positions = Positions,
            position_convention = "position 0 is the last prompt token; p counts tokens back from the end",
            dtype = "float32-le",
            arrays = entries,
        };
        AtomicFile.WriteText(Path.Combine(dir, "scores.json"), JsonSerializer.Serialize(index, new JsonSerializerOptions { WriteIndented = true }));
        AtomicFile.Write(Path.Combine(dir, "scores.csv"), stream =>
        {
            using var w = new StreamWriter(stream, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
            w.Write("site,layer,position,index,score\n");
            foreach (var s in Sites)
                foreach (var (n, v) in Enumerate(s))
                    w.Write($"{s.Name()},{n.Layer},{n.Position},{n.Index},{v.ToString("R", CultureInfo.InvariantCulture)}\n");
        });
    }
}
