using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>
/// Running sums of attribution scores on the backend, all sites and layers of a device in one slab [its layers ·
/// (positions + 1), Σ site widths]: site s owns the columns from <see cref="FirstColumn"/>, layer l the rows from
/// <see cref="FirstRow"/> of its device's slab, row p of a layer is position p from the end and the spare last row
/// collects the padding rows of a batch (dropped). One device (the usual case) means one slab. Scores are added where
/// the backward produces each gradient (<see cref="Accumulate"/>); the means cross to the host once per scoring run, in
/// one download per device (<see cref="MeansOver"/>).
/// </summary>
internal sealed class ScoreSums : IDisposable
{
    readonly LlamaConfig _config;
    readonly NodeSite[] _sites;
    readonly int _positions;
    readonly Dictionary<NodeSite, int> _firstColumn = new();
    readonly LayerPlacement _placement;
    // Per device of the placement, its slab (null for a device that holds no layer).
    readonly Tensor?[] _slabs;

    /// <param name="placement">Where each layer's sums live (the layer's device of a split model).</param>
    /// <param name="config">The model's configuration (layers, site widths).</param>
    /// <param name="sites">The scored sites, in column order.</param>
    /// <param name="positions">Positions per layer: the longest prompt of the task.</param>
    public ScoreSums(LayerPlacement placement, LlamaConfig config, NodeSite[] sites, int positions)
    {
        _placement = placement; _config = config; _sites = sites; _positions = positions;
        int columns = 0;
        foreach (var s in sites)
        {
            _firstColumn[s] = columns;
            columns = checked(columns + s.Width(config));
        }
        _slabs = new Tensor?[placement.Devices.Count];
        try
        {
            for (int d = 0; d < _slabs.Length; d++)   // zero-filled
                if (Layers(d) is { Count: > 0 } layers)
                    _slabs[d] = placement.Devices[d].Allocate(checked(layers.Count * (positions + 1)), columns);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The layers of device <paramref name="device"/>, in order (empty for a device that holds none).</summary>
    IReadOnlyList<int> Layers(int device)
    {
        var (first, end) = _placement.LayersOf(device);
        return first < 0 ? [] : Enumerable.Range(first, end - first).ToArray();
    }

    /// <summary>The devices the sums live on, each with its layers in order (the rows of its slab, see <see cref="FirstRow"/>).</summary>
    public IEnumerable<(IBackend Backend, IReadOnlyList<int> Layers)> Devices =>
        Enumerable.Range(0, _slabs.Length).Select(d => (_placement.Devices[d], Layers(d)));

    /// <summary>The index in <see cref="Devices"/> of the device holding <paramref name="layer"/>'s sums.</summary>
    public int DeviceOf(int layer) => _placement.DeviceOf(layer);

    /// <summary>The first row of <paramref name="layer"/> (its position 0) in its device's slab.</summary>
    public int FirstRow(int layer) => (layer - _placement.LayersOf(DeviceOf(layer)).First) * (_positions + 1);

    public int FirstColumn(NodeSite site) => _firstColumn[site];

    /// <summary>
    /// Adds ((base − clean) ⊙ gradient) · scale of one site and layer, row r at score row positionOf[r], on the layer's
    /// backend (<see cref="IBackend.AccumulateScores"/>: no delta tensor, no scatter).
    /// </summary>
    public void Accumulate(NodeSite site, int layer, Tensor clean, ScoreBaseline baseline, Tensor gradient, float scale, ReadOnlySpan<int> positionOf)
    {
        int d = DeviceOf(layer);
        _placement.Devices[d].AccumulateScores(clean, baseline, gradient, scale, positionOf, _slabs[d]!, FirstRow(layer), FirstColumn(site));
    }

    /// <summary>Adds another set of sums over the same sites, positions and devices (e.g. a second thread's) into these.</summary>
    public void Add(ScoreSums other)
    {
        for (int d = 0; d < _slabs.Length; d++)
            if (_slabs[d] is { } slab) _placement.Devices[d].Add(slab, other._slabs[d]!);
    }

    /// <summary>
    /// The sums divided by the number of examples that have each position: per device one op on the backend drops the
    /// spare rows and multiplies by 1/count (<see cref="IBackend.GatherScaledRows"/>), then its [layers · positions,
    /// Σ widths] result crosses to the host in one download (on a GPU into page-locked memory, one asynchronous copy and
    /// one wait: <see cref="IBackend.ReadOnHost"/>) and is split from there into the per-site, per-layer arrays.
    /// </summary>
    public NodeScores MeansOver(int[] examplesAtPosition)
    {
        var scores = new NodeScores(_config, _sites, _positions);
        for (int d = 0; d < _slabs.Length; d++)
        {
            if (_slabs[d] is not { } slab) continue;
            var backend = _placement.Devices[d];
            var layers = Layers(d);
            int columns = slab.Columns;
            var rows = new int[layers.Count * _positions];
            var scales = new float[rows.Length];
            for (int i = 0; i < layers.Count; i++)
                for (int p = 0; p < _positions; p++)
                {
                    rows[i * _positions + p] = i * (_positions + 1) + p;
                    scales[i * _positions + p] = 1f / examplesAtPosition[p];
                }
            using var means = backend.AllocateUninitialized(rows.Length, columns);
            backend.GatherScaledRows(slab, rows, scales, means);
            backend.ReadOnHost(means, host =>
            {
                foreach (var s in _sites)
                {
                    int w = s.Width(_config), first = FirstColumn(s);
                    for (int i = 0; i < layers.Count; i++)
                    {
                        var into = scores.Get(s, layers[i]);
                        for (int p = 0; p < _positions; p++)
                            host.Slice((int)(((long)i * _positions + p) * columns + first), w).CopyTo(into.AsSpan(p * w, w));
                    }
                }
            });
        }
        return scores;
    }

    public void Dispose()
    {
        for (int d = 0; d < _slabs.Length; d++) { _slabs[d]?.Dispose(); _slabs[d] = null; }
    }
}
