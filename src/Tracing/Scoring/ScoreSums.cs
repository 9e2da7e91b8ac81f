using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>
/// Running sums of attribution scores on the backend: per site and layer a [positions + 1, width] tensor, row p for
/// position p from the end; the spare last row collects the padding rows of a batch and is dropped. Only the final
/// sums cross to the host (<see cref="MeansOver"/>), once per scoring run.
/// </summary>
internal sealed class ScoreSums : IDisposable
{
    readonly Func<int, IBackend> _backendOf;
    readonly LlamaConfig _config;
    readonly NodeSite[] _sites;
    readonly int _positions;
    readonly Dictionary<(NodeSite, int), Tensor> _sums = new();

    /// <param name="backendOfLayer">Where each layer's sums live (the layer's device of a split model).</param>
    public ScoreSums(Func<int, IBackend> backendOfLayer, LlamaConfig config, NodeSite[] sites, int positions)
    {
        _backendOf = backendOfLayer; _config = config; _sites = sites; _positions = positions;
        foreach (var s in sites)
            for (int l = 0; l < config.Layers; l++)
            {
                var backend = backendOfLayer(l);
                var t = backend.Allocate(positions + 1, s.Width(config));
                backend.Fill(t, 0f);
                _sums[(s, l)] = t;
            }
    }

    public Tensor Get(NodeSite site, int layer) => _sums[(site, layer)];

    /// <summary>Adds another set of sums over the same sites and positions (e.g. a second thread's) into these.</summary>
    public void Add(ScoreSums other)
    {
        foreach (var (key, t) in _sums) _backendOf(key.Item2).Add(t, other._sums[key]);
    }

    /// <summary>
    /// The sums divided by the number of examples that have each position. Done on the backend (drop the spare row,
    /// multiply by 1/count) so that each array crosses to the host once, straight into the result: on a GPU the host
    /// side of this step was a scalar loop over every node.
    /// </summary>
    public NodeScores MeansOver(int[] examplesAtPosition)
    {
        var scores = new NodeScores(_config, _sites, _positions);
        var rows = Enumerable.Range(0, _positions).ToArray();
        var inverses = new Dictionary<(IBackend, int), Tensor>();
        try
        {
            foreach (var s in _sites)
            {
                int w = s.Width(_config);
                for (int l = 0; l < _config.Layers; l++)
                {
                    var backend = _backendOf(l);
                    if (!inverses.TryGetValue((backend, w), out var inverse))
                    {
                        var host = new float[_positions * w];
                        for (int p = 0; p < _positions; p++) host.AsSpan(p * w, w).Fill(1f / examplesAtPosition[p]);
                        inverses[(backend, w)] = inverse = backend.Upload(host, _positions, w);
                    }
                    using var mean = backend.AllocateUninitialized(_positions, w);
                    backend.GatherRows(_sums[(s, l)], rows, mean);
                    backend.Multiply(mean, inverse);
                    backend.Download(mean, scores.Get(s, l));
                }
            }
        }
        finally
        {
            foreach (var t in inverses.Values) t.Dispose();
        }
        return scores;
    }

    public void Dispose()
    {
        foreach (var t in _sums.Values) t.Dispose();
        _sums.Clear();
    }
}
