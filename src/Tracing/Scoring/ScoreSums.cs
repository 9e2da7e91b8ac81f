using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>
/// Running sums of attribution scores on the backend, all sites and layers of a device in one slab [its layers ·
/// (positions + 1), Σ site widths]: site s owns the columns from <see cref="FirstColumn"/>, layer l the rows from
/// <see cref="FirstRow"/> of its device's slab, row p of a layer is position p from the end and the spare last row
/// collects the padding rows of a batch (dropped). One device (the usual case) means one slab. Scores are added where
/// the backward produces each gradient (<see cref="Accumulate"/>); the means cross to the host once per scoring run, in
/// one download per device, or per group of layers where a device's means pass 1 GiB (<see cref="MeansOver"/>). Armed
/// for the last batch (<see cref="ReadOutAsLayersFinish"/>), each layer's rows of the slab are queued for the host as
/// soon as the backward has added its last site, while the backward goes on below (on a GPU the copy runs on the copy
/// stream beside it): only the lowest layer's copy is left at the end. The top-k of a site is also selected where the
/// sums live (<see cref="TopK"/>: only the k results cross to the host).
/// </summary>
internal sealed partial class ScoreSums : IDisposable
{
    readonly LlamaConfig _config;
    readonly NodeSite[] _sites;
    readonly int _positions;
    readonly Dictionary<NodeSite, int> _firstColumn = new();
    readonly LayerPlacement _placement;
    // Per device of the placement, its slab (null for a device that holds no layer).
    readonly Tensor?[] _slabs;
    // The readout beside the last batch's backward (ReadOutAsLayersFinish): the examples per position it divides by,
    // the sites added per layer since it was armed, and per layer its queued means (null until the layer is done).
    int[]? _readoutCounts;
    int[]? _sitesAdded;
    PendingHostRead?[]? _readouts;

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
        if (_sitesAdded is not null && ++_sitesAdded[layer] == _sites.Length) StartLayerReadout(layer);
    }

    /// <summary>
    /// Arms the readout beside the backward for the batch about to run, the task's last: once every site of a layer has
    /// been added (<see cref="Accumulate"/>), that layer's sums are final, so its [positions, Σ widths] rows of the slab
    /// are queued for the host (<see cref="IBackend.StartReadOnHost"/>: on a GPU on the copy stream, straight from the
    /// slab, no device copy) while the backward continues on the layers below; <see cref="MeansOver"/> then waits once and
    /// splits them, dividing by <paramref name="examplesAtPosition"/> on the host: the same single rounding of
    /// sum · (1 / count) as the device gather (<see cref="IBackend.GatherScaledRows"/>), so the same floats. Not armed
    /// (false) where a device's means pass <see cref="MeansGroupFloats"/> (1 GiB): every layer's copy is held in
    /// page-locked memory until the one wait; the end-of-task readout in groups stays there (long prompts). Not armed
    /// on the CPU backend either.
    /// </summary>
    /// <param name="examplesAtPosition">Per position, how many examples of the whole task reach it (final before the last batch runs).</param>
    public bool ReadOutAsLayersFinish(int[] examplesAtPosition)
    {
        // On the CPU the sums are host memory already: nothing to overlap, the end-of-task gather reads them in place.
        if (_placement.Devices.Any(b => b is Runtime.Cpu.CpuBackend)) return false;
        for (int d = 0; d < _slabs.Length; d++)
            if (_slabs[d] is { } slab && (long)Layers(d).Count * _positions * slab.Columns > MeansGroupFloats) return false;
        DisposeReadouts();
        _readoutCounts = (int[])examplesAtPosition.Clone();
        _sitesAdded = new int[_config.Layers];
        _readouts = new PendingHostRead?[_config.Layers];
        return true;
    }

    void StartLayerReadout(int layer) =>
        _readouts![layer] = _placement.Devices[DeviceOf(layer)].StartReadOnHost(_slabs[DeviceOf(layer)]!, FirstRow(layer), _positions);

    /// <summary>The armed readout's host copies into <paramref name="scores"/>, when every layer was queued for the same counts.</summary>
    bool TryFinishReadout(int[] examplesAtPosition, NodeScores scores)
    {
        if (_readouts is null || !examplesAtPosition.AsSpan().SequenceEqual(_readoutCounts) || _readouts.Any(r => r is null)) return false;
        var scales = Scales(examplesAtPosition);
        for (int l = 0; l < _readouts.Length; l++)
        {
            int columns = _slabs[DeviceOf(l)]!.Columns, layer = l;
            _readouts[l]!.Read(host =>
            {
                foreach (var s in _sites)
                {
                    int w = s.Width(_config), first = FirstColumn(s);
                    var into = scores.Get(s, layer);
                    for (int p = 0; p < _positions; p++)
                        System.Numerics.Tensors.TensorPrimitives.Multiply(host.Slice(p * columns + first, w), scales[p], into.AsSpan(p * w, w));
                }
            });
        }
        return true;
    }

    /// <summary>Per position, 1 / the examples that reach it: the one factor every readout of the means multiplies by.</summary>
    float[] Scales(int[] examplesAtPosition)
    {
        var scales = new float[_positions];
        for (int p = 0; p < _positions; p++) scales[p] = 1f / examplesAtPosition[p];
        return scales;
    }

    void DisposeReadouts()
    {
        if (_readouts is not null)
            foreach (var r in _readouts) r?.Dispose();
        _readouts = null;
        _sitesAdded = null;
        _readoutCounts = null;
    }

    /// <summary>Adds another set of sums over the same sites, positions and devices (e.g. a second thread's) into these.</summary>
    public void Add(ScoreSums other)
    {
        for (int d = 0; d < _slabs.Length; d++)
            if (_slabs[d] is { } slab) _placement.Devices[d].Add(slab, other._slabs[d]!);
    }

    /// <summary>
    /// The most floats one gather of the means holds (1 GiB): a device's means are formed and read back a group of
    /// layers at a time, each group at most this size (at least one layer), so the copy beside the slab stays bounded
    /// however long the prompt (Llama-3.1-8B, all sites, 8192 tokens: 32 GB of means, one layer ≈ 1 GB per group).
    /// Short prompts fit in one group: one gather, one download per device.
    /// </summary>
    internal const long MeansGroupFloats = 1L << 28;

    /// <summary>Layers per gather of the means on a device (see <see cref="MeansGroupFloats"/>).</summary>
    internal static int LayersPerMeansGroup(long positions, long columns, int layers, long groupFloats = MeansGroupFloats) =>
        (int)Math.Clamp(groupFloats / Math.Max(1, positions * columns), 1, Math.Max(1, layers));

    /// <summary>
    /// The sums divided by the number of examples that have each position: per device and group of layers
    /// (<see cref="LayersPerMeansGroup"/>) one op on the backend drops the spare rows and multiplies by 1/count
    /// (<see cref="IBackend.GatherScaledRows"/>), then its [layers · positions, Σ widths] result crosses to the host in
    /// one download (on a GPU into page-locked memory, one asynchronous copy and one wait: <see cref="IBackend.ReadOnHost"/>)
    /// and is split from there into the per-site, per-layer arrays.
    /// </summary>
    /// <param name="examplesAtPosition">Per position, how many examples of the task reach it (the mean's divisor).</param>
    /// <param name="groupFloats">The most floats per gather (<see cref="MeansGroupFloats"/>; a test passes less to form several groups).</param>
    public NodeScores MeansOver(int[] examplesAtPosition, long groupFloats = MeansGroupFloats)
    {
        var scores = new NodeScores(_config, _sites, _positions);
        bool readOut = TryFinishReadout(examplesAtPosition, scores);
        DisposeReadouts();
        if (readOut) return scores;
        for (int d = 0; d < _slabs.Length; d++)
        {
            if (_slabs[d] is not { } slab) continue;
            var backend = _placement.Devices[d];
            var layers = Layers(d);
            int columns = slab.Columns;
            int group = LayersPerMeansGroup(_positions, columns, layers.Count, groupFloats);
            for (int g0 = 0; g0 < layers.Count; g0 += group)
            {
                int n = Math.Min(group, layers.Count - g0);
                var rows = new int[n * _positions];
                var scales = new float[rows.Length];
                for (int i = 0; i < n; i++)
                    for (int p = 0; p < _positions; p++)
                    {
                        rows[i * _positions + p] = (g0 + i) * (_positions + 1) + p;
                        scales[i * _positions + p] = 1f / examplesAtPosition[p];
                    }
                using var means = backend.AllocateUninitialized(rows.Length, columns);
                backend.GatherScaledRows(slab, rows, scales, means);
                backend.ReadOnHost(means, host =>
                {
                    foreach (var s in _sites)
                    {
                        int w = s.Width(_config), first = FirstColumn(s);
                        for (int i = 0; i < n; i++)
                        {
                            var into = scores.Get(s, layers[g0 + i]);
                            for (int p = 0; p < _positions; p++)
                                host.Slice((int)(((long)i * _positions + p) * columns + first), w).CopyTo(into.AsSpan(p * w, w));
                        }
                    }
                });
            }
        }
        return scores;
    }

    public void Dispose()
    {
        DisposeReadouts();
        for (int d = 0; d < _slabs.Length; d++) { _slabs[d]?.Dispose(); _slabs[d] = null; }
    }
}
