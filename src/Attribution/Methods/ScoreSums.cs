using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Attribution.Methods;

/// <summary>
/// Running sums of attribution scores on the backend: per site and layer a [positions + 1, width] tensor, row p for
/// position p from the end; the spare last row collects the padding rows of a batch and is dropped. Only the final
/// sums cross to the host (<see cref="MeansOver"/>), once per scoring run.
/// </summary>
internal sealed class ScoreSums : IDisposable
{
    readonly IBackend _backend;
    readonly LlamaConfig _config;
    readonly NodeSite[] _sites;
    readonly int _positions;
    readonly Dictionary<(NodeSite, int), Tensor> _sums = new();

    public ScoreSums(IBackend backend, LlamaConfig config, NodeSite[] sites, int positions)
    {
        _backend = backend; _config = config; _sites = sites; _positions = positions;
        foreach (var s in sites)
            for (int l = 0; l < config.Layers; l++)
            {
                var t = backend.Allocate(positions + 1, s.Width(config));
                backend.Fill(t, 0f);
                _sums[(s, l)] = t;
            }
    }

    public Tensor Get(NodeSite site, int layer) => _sums[(site, layer)];

    /// <summary>Adds another set of sums over the same sites and positions (e.g. a second thread's) into these.</summary>
    public void Add(ScoreSums other)
    {
        foreach (var (key, t) in _sums) _backend.Add(t, other._sums[key]);
    }

    /// <summary>The sums divided by the number of examples that have each position.</summary>
    public NodeScores MeansOver(int[] examplesAtPosition)
    {
        var scores = new NodeScores(_config, _sites, _positions);
        foreach (var s in _sites)
            for (int l = 0; l < _config.Layers; l++)
            {
                int w = s.Width(_config);
                var host = new float[(_positions + 1) * w];
                _backend.Download(_sums[(s, l)], host);
                var a = scores.Get(s, l);
                for (int p = 0; p < _positions; p++)
                    for (int i = 0; i < w; i++) a[p * w + i] = host[p * w + i] / examplesAtPosition[p];
            }
        return scores;
    }

    public void Dispose()
    {
        foreach (var t in _sums.Values) t.Dispose();
        _sums.Clear();
    }
}
