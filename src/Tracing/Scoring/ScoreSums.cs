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

    /// <summary>
    /// The sums divided by the number of examples that have each position. Done on the backend (drop the spare row,
    /// multiply by 1/count) so that each array crosses to the host once, straight into the result: on a GPU the host
    /// side of this step was a scalar loop over every node.
    /// </summary>
    public NodeScores MeansOver(int[] examplesAtPosition)
    {
        var scores = new NodeScores(_config, _sites, _positions);
        var rows = Enumerable.Range(0, _positions).ToArray();
        var inverses = new Dictionary<int, Tensor>();
        try
        {
            foreach (var s in _sites)
            {
                int w = s.Width(_config);
                if (!inverses.TryGetValue(w, out var inverse))
                {
                    var host = new float[_positions * w];
                    for (int p = 0; p < _positions; p++) host.AsSpan(p * w, w).Fill(1f / examplesAtPosition[p]);
                    inverses[w] = inverse = _backend.Upload(host, _positions, w);
                }
                for (int l = 0; l < _config.Layers; l++)
                {
                    using var mean = _backend.AllocateUninitialized(_positions, w);
                    _backend.GatherRows(_sums[(s, l)], rows, mean);
                    _backend.Multiply(mean, inverse);
                    _backend.Download(mean, scores.Get(s, l));
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
