using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// Which backend (device) holds each layer of a <see cref="Llama"/>: one backend for the whole model, or a pipeline
/// of contiguous layer ranges over several devices for a model larger than one GPU. The embedding sits with layer 0
/// on the first device, the final norm and classifier with the last layer on the last; each device holds only its
/// layers' weights. The forward and backward run each layer on its device and move the residual stream (forward) or
/// its gradient (backward) across a boundary with <see cref="Transfer"/>; every op runs the same kernel in the same
/// order as on one device, so a split model computes bit for bit what one device computes.
/// </summary>
internal sealed class LayerPlacement
{
    readonly int[] _deviceOfLayer;

    LayerPlacement(IBackend[] devices, int[] deviceOfLayer)
    {
        Devices = devices;
        _deviceOfLayer = deviceOfLayer;
    }

    /// <summary>The devices in pipeline order: [0] holds the embedding, [^1] the final norm and classifier.</summary>
    public IReadOnlyList<IBackend> Devices { get; }
    public int LayerCount => _deviceOfLayer.Length;
    public bool IsSplit => Devices.Count > 1;
    public IBackend First => Devices[0];
    public IBackend Last => Devices[^1];

    /// <summary>The backend of layer <paramref name="layer"/>.</summary>
    public IBackend Of(int layer) => Devices[_deviceOfLayer[layer]];

    /// <summary>The index in <see cref="Devices"/> of layer <paramref name="layer"/>'s device.</summary>
    public int DeviceOf(int layer) => _deviceOfLayer[layer];

    /// <summary>Layers [First, End) of device <paramref name="device"/>.</summary>
    public (int First, int End) LayersOf(int device)
    {
        int first = Array.IndexOf(_deviceOfLayer, device);
        return (first, Array.LastIndexOf(_deviceOfLayer, device) + 1);
    }

    /// <summary>The whole model on one backend.</summary>
    public static LayerPlacement Single(IBackend backend, int layers) => new([backend], new int[layers]);

    /// <summary>
    /// The layers over <paramref name="devices"/> in contiguous ranges (at least one layer each) whose weights are as
    /// even as can be (the largest device's share as small as possible), the embedding counted on the first device and
    /// the classifier on the last (a tied classifier is a second copy there when first and last differ).
    /// </summary>
    public static LayerPlacement Balanced(LlamaConfig c, IReadOnlyList<IBackend> devices)
    {
        if (devices.Count == 0) throw new ArgumentException("no device to place the layers on");
        if (devices.Count > c.Layers) throw new ArgumentException($"{devices.Count} devices for {c.Layers} layers: each device needs at least one layer");
        if (devices.Distinct(ReferenceEqualityComparer.Instance).Count() != devices.Count) throw new ArgumentException("a device is given twice");
        int[] starts = BalancedStarts(c, devices.Count);
        var of = new int[c.Layers];
        for (int dv = 0; dv < starts.Length; dv++)
            for (int l = starts[dv]; l < (dv + 1 < starts.Length ? starts[dv + 1] : c.Layers); l++) of[l] = dv;
        return new LayerPlacement([.. devices], of);
    }

    /// <summary>The first layer of each of <paramref name="devices"/> devices under <see cref="Balanced"/> (from the shape alone, for the memory plan).</summary>
    public static int[] BalancedStarts(LlamaConfig c, int devices)
    {
        if (devices > c.Layers) throw new ArgumentException($"{devices} devices for {c.Layers} layers: each device needs at least one layer");
        return BalancedStarts(Enumerable.Repeat(LayerParameters(c), c.Layers).ToArray(),
            (long)c.VocabSize * c.Dim, (long)c.VocabSize * c.Dim + c.Dim, devices);
    }

    /// <summary>Weight values of one decoder layer (norms, attention, MLP).</summary>
    public static long LayerParameters(LlamaConfig c) =>
        2L * c.Dim + 2L * c.Dim * c.Dim + 2L * c.KvDim * c.Dim + 3L * c.Dim * c.HiddenDim;

    /// <summary>Weight values on device <paramref name="device"/> (its layers, plus the embedding or the head).</summary>
    public long ParametersOn(int device, LlamaConfig c)
    {
        var (first, end) = LayersOf(device);
        return ParametersOn(c, end - first, device == 0, device == Devices.Count - 1);
    }

    /// <summary>Weight values of a device with <paramref name="layers"/> layers and the embedding and/or the head.</summary>
    public static long ParametersOn(LlamaConfig c, int layers, bool embedding, bool head)
    {
        long n = layers * LayerParameters(c);
        if (embedding) n += (long)c.VocabSize * c.Dim;
        if (head) n += c.Dim + (c.TiedEmbeddings && embedding ? 0 : (long)c.VocabSize * c.Dim);
        return n;
    }

    /// <summary>
    /// The first layer of each of <paramref name="parts"/> contiguous ranges of <paramref name="layer"/> sizes (plus
    /// <paramref name="firstExtra"/> on the first range, <paramref name="lastExtra"/> on the last) minimising the
    /// largest range: an exact dynamic programme over (range, layers so far), O(parts · layers²), ties to earlier cuts.
    /// </summary>
    public static int[] BalancedStarts(long[] layer, long firstExtra, long lastExtra, int parts)
    {
        int n = layer.Length;
        if (parts < 1 || parts > n) throw new ArgumentOutOfRangeException(nameof(parts));
        var prefix = new long[n + 1];
        for (int i = 0; i < n; i++) prefix[i + 1] = prefix[i] + layer[i];
        long Load(int from, int to, int part) =>
            prefix[to] - prefix[from] + (part == 0 ? firstExtra : 0) + (part == parts - 1 ? lastExtra : 0);
        // best[p, j]: the smallest largest load putting layers [0, j) on ranges 0..p; cut[p, j]: where range p starts.
        var best = new long[parts, n + 1];
        var cut = new int[parts, n + 1];
        for (int j = 1; j <= n; j++) best[0, j] = Load(0, j, 0);
        for (int p = 1; p < parts; p++)
            for (int j = p + 1; j <= n; j++)
            {
                best[p, j] = long.MaxValue;
                for (int i = p; i < j; i++)
                {
                    long v = Math.Max(best[p - 1, i], Load(i, j, p));
                    if (v < best[p, j]) { best[p, j] = v; cut[p, j] = i; }
                }
            }
        var starts = new int[parts];
        for (int p = parts - 1, j = n; p > 0; p--) j = starts[p] = cut[p, j];
        return starts;
    }

    /// <summary>
    /// A copy of <paramref name="source"/> (a tensor of <paramref name="from"/>) on <paramref name="to"/>, through host
    /// memory: exact, and the one crossing point between devices (activations forward, gradients backward).
    /// </summary>
    public static Tensor Transfer(Tensor source, IBackend from, IBackend to)
    {
        var host = GC.AllocateUninitializedArray<float>(checked((int)source.Length));
        from.Download(source, host);
        return to.Upload(host, source.Shape);
    }

    public override string ToString() =>
        string.Join(", ", Enumerable.Range(0, Devices.Count).Select(d => { var (f, e) = LayersOf(d); return $"{Devices[d].Name}: layers {f}..{e - 1}"; }));
}
