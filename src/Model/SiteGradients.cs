using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>∂metric/∂(site value) for every recorded site and layer, [rows, width] on the layer's backend.</summary>
internal sealed class SiteGradients(Func<int, IBackend> backendOfLayer, int layers) : IDisposable
{
    public SiteGradients(IBackend backend, int layers) : this(_ => backend, layers) { }

    readonly Dictionary<(NodeSite, int), Tensor> _grads = new();

    public int LayerCount { get; } = layers;
    /// <summary>∂metric/∂(token embeddings), [rows, dim].</summary>
    public Tensor? Embedding { get; internal set; }

    internal void Set(NodeSite site, int layer, Tensor g) => _grads[(site, layer)] = g;

    public bool Has(NodeSite site) => _grads.ContainsKey((site, 0));

    public Tensor Get(NodeSite site, int layer) =>
        _grads.TryGetValue((site, layer), out var g) ? g : throw new KeyNotFoundException($"no gradient recorded at {site.Name()} layer {layer}");

    public float[] Host(NodeSite site, int layer)
    {
        var t = Get(site, layer);
        var h = new float[t.Length];
        backendOfLayer(layer).Download(t, h);
        return h;
    }

    public void Dispose()
    {
        foreach (var g in _grads.Values) g.Dispose();
        _grads.Clear();
        Embedding?.Dispose();
    }
}
