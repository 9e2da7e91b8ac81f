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
    // Per device, the backend, its slab and its layers in order; per layer, its device and its index on that device.
    readonly List<(IBackend Backend, Tensor Slab, List<int> Layers)> _devices = [];
    readonly int[] _deviceOfLayer, _indexOnDevice;

    /// <param name="backendOfLayer">Where each layer's sums live (the layer's device of a split model).</param>
    public ScoreSums(Func<int, IBackend> backendOfLayer, LlamaConfig config, NodeSite[] sites, int positions)
    {
        _config = config; _sites = sites; _positions = positions;
        int columns = 0;
        foreach (var s in sites)
        {
            _firstColumn[s] = columns;
            columns = checked(columns + s.Width(config));
        }
        _deviceOfLayer = new int[config.Layers];
        _indexOnDevice = new int[config.Layers];
        var layersOf = new List<(IBackend Backend, List<int> Layers)>();
        for (int l = 0; l < config.Layers; l++)
        {
            var backend = backendOfLayer(l);
            int d = layersOf.FindIndex(x => ReferenceEquals(x.Backend, backend));
            if (d < 0) { d = layersOf.Count; layersOf.Add((backend, [])); }
            _deviceOfLayer[l] = d;
            _indexOnDevice[l] = layersOf[d].Layers.Count;
            layersOf[d].Layers.Add(l);
        }
        try
        {
            foreach (var (backend, layers) in layersOf)   // zero-filled
                _devices.Add((backend, backend.Allocate(checked(layers.Count * (positions + 1)), columns), layers));
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The devices the sums live on, each with its layers in order (the rows of its slab, see <see cref="FirstRow"/>).</summary>
    public IEnumerable<(IBackend Backend, IReadOnlyList<int> Layers)> Devices => _devices.Select(d => (d.Backend, (IReadOnlyList<int>)d.Layers));

    /// <summary>The index in <see cref="Devices"/> of the device holding <paramref name="layer"/>'s sums.</summary>
    public int DeviceOf(int layer) => _deviceOfLayer[layer];

    /// <summary>The first row of <paramref name="layer"/> (its position 0) in its device's slab.</summary>
    public int FirstRow(int layer) => _indexOnDevice[layer] * (_positions + 1);

    public int FirstColumn(NodeSite site) => _firstColumn[site];

    /// <summary>
    /// Adds ((base − clean) ⊙ gradient) · scale of one site and layer, row r at score row positionOf[r], on the layer's
    /// backend (<see cref="IBackend.AccumulateScores"/>: no delta tensor, no scatter).
    /// </summary>
    public void Accumulate(NodeSite site, int layer, Tensor clean, ScoreBaseline baseline, Tensor gradient, float scale, ReadOnlySpan<int> positionOf)
    {
        var (backend, slab, _) = _devices[_deviceOfLayer[layer]];
        backend.AccumulateScores(clean, baseline, gradient, scale, positionOf, slab, FirstRow(layer), FirstColumn(site));
    }

    /// <summary>Adds another set of sums over the same sites, positions and devices (e.g. a second thread's) into these.</summary>
    public void Add(ScoreSums other)
    {
        for (int d = 0; d < _devices.Count; d++) _devices[d].Backend.Add(_devices[d].Slab, other._devices[d].Slab);
    }

    /// <summary>
    /// The sums divided by the number of examples that have each position: per device one op on the backend drops the
    /// spare rows and multiplies by 1/count (<see cref="IBackend.GatherScaledRows"/>), then its [layers · positions,
    /// Σ widths] result crosses to the host in one download and is split into the per-site, per-layer arrays.
    /// </summary>
    public NodeScores MeansOver(int[] examplesAtPosition)
    {
        var scores = new NodeScores(_config, _sites, _positions);
        foreach (var (backend, slab, layers) in _devices)
        {
            int columns = slab.Columns;
            var rows = new int[layers.Count * _positions];
            var scales = new float[rows.Length];
            for (int i = 0; i < layers.Count; i++)
                for (int p = 0; p < _positions; p++)
                {
                    rows[i * _positions + p] = i * (_positions + 1) + p;
                    scales[i * _positions + p] = 1f / examplesAtPosition[p];
                }
            var host = new float[(long)rows.Length * columns];
            using (var means = backend.AllocateUninitialized(rows.Length, columns))
            {
                backend.GatherScaledRows(slab, rows, scales, means);
                backend.Download(means, host);
            }
            foreach (var s in _sites)
            {
                int w = s.Width(_config), first = FirstColumn(s);
                for (int i = 0; i < layers.Count; i++)
                {
                    var into = scores.Get(s, layers[i]);
                    for (int p = 0; p < _positions; p++)
                        Array.Copy(host, ((long)i * _positions + p) * columns + first, into, (long)p * w, w);
                }
            }
        }
        return scores;
    }

    public void Dispose()
    {
        foreach (var d in _devices) d.Slab.Dispose();
        _devices.Clear();
    }
}
