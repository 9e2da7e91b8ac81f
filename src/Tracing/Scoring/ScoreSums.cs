using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>
/// Running sums of attribution scores on the backend, all sites and layers in one slab [layers · (positions + 1),
/// Σ site widths]: site s owns the columns from <see cref="FirstColumn"/>, layer l the rows from <see cref="FirstRow"/>,
/// row p of a layer is position p from the end and the spare last row collects the padding rows of a batch (dropped).
/// Scores are added where the backward produces each gradient (<see cref="Accumulate"/>); the means cross to the host
/// once per scoring run, in one download (<see cref="MeansOver"/>).
/// </summary>
internal sealed class ScoreSums : IDisposable
{
    readonly IBackend _backend;
    readonly LlamaConfig _config;
    readonly NodeSite[] _sites;
    readonly int _positions;
    readonly Dictionary<NodeSite, int> _firstColumn = new();
    readonly Tensor _slab;

    public ScoreSums(IBackend backend, LlamaConfig config, NodeSite[] sites, int positions)
    {
        _backend = backend; _config = config; _sites = sites; _positions = positions;
        int columns = 0;
        foreach (var s in sites)
        {
            _firstColumn[s] = columns;
            columns = checked(columns + s.Width(config));
        }
        _slab = backend.Allocate(checked(config.Layers * (positions + 1)), columns);   // zero-filled
    }

    /// <summary>The first slab row of <paramref name="layer"/> (its position 0).</summary>
    public int FirstRow(int layer) => layer * (_positions + 1);

    public int FirstColumn(NodeSite site) => _firstColumn[site];

    /// <summary>
    /// Adds ((base − clean) ⊙ gradient) · scale of one site and layer, row r at score row positionOf[r], on the backend
    /// (<see cref="IBackend.AccumulateScores"/>: no delta tensor, no scatter).
    /// </summary>
    public void Accumulate(NodeSite site, int layer, Tensor clean, ScoreBaseline baseline, Tensor gradient, float scale, ReadOnlySpan<int> positionOf) =>
        _backend.AccumulateScores(clean, baseline, gradient, scale, positionOf, _slab, FirstRow(layer), FirstColumn(site));

    /// <summary>Adds another set of sums over the same sites and positions (e.g. a second thread's) into these.</summary>
    public void Add(ScoreSums other) => _backend.Add(_slab, other._slab);

    /// <summary>
    /// The sums divided by the number of examples that have each position: one op on the backend drops the spare rows
    /// and multiplies by 1/count (<see cref="IBackend.GatherScaledRows"/>), then the whole [layers · positions, Σ widths]
    /// result crosses to the host in one download and is split into the per-site, per-layer arrays.
    /// </summary>
    public NodeScores MeansOver(int[] examplesAtPosition)
    {
        var scores = new NodeScores(_config, _sites, _positions);
        int layers = _config.Layers, columns = _slab.Columns;
        var rows = new int[layers * _positions];
        var scales = new float[rows.Length];
        for (int l = 0; l < layers; l++)
            for (int p = 0; p < _positions; p++)
            {
                rows[l * _positions + p] = FirstRow(l) + p;
                scales[l * _positions + p] = 1f / examplesAtPosition[p];
            }
        var host = new float[(long)rows.Length * columns];
        using (var means = _backend.AllocateUninitialized(rows.Length, columns))
        {
            _backend.GatherScaledRows(_slab, rows, scales, means);
            _backend.Download(means, host);
        }
        foreach (var s in _sites)
        {
            int w = s.Width(_config), first = FirstColumn(s);
            for (int l = 0; l < layers; l++)
            {
                var into = scores.Get(s, l);
                for (int p = 0; p < _positions; p++)
                    Array.Copy(host, ((long)l * _positions + p) * columns + first, into, (long)p * w, w);
            }
        }
        return scores;
    }

    public void Dispose() => _slab.Dispose();
}
