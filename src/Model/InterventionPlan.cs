using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// Edits applied to site values during a forward pass: value ← value ⊙ Scale + Offset, both [rows, width] on the
/// backend. Mean ablation is Scale = keep mask, Offset = (1 − keep)·mean; patching is Scale = 0, Offset = the patch value;
/// steering multiplies. Gradients at an edited site are taken w.r.t. its edited value and flow upstream times Scale.
/// </summary>
internal sealed class InterventionPlan : IDisposable
{
    readonly Dictionary<(NodeSite, int), (Tensor Scale, Tensor Offset)> _edits = new();

    public void Set(NodeSite site, int layer, Tensor scale, Tensor offset)
    {
        if (scale.Length != offset.Length) throw new ArgumentException("scale and offset differ in size");
        if (_edits.Remove((site, layer), out var old)) { old.Scale.Dispose(); old.Offset.Dispose(); }
        _edits[(site, layer)] = (scale, offset);
    }

    public bool TryGet(NodeSite site, int layer, out Tensor scale, out Tensor offset)
    {
        if (_edits.TryGetValue((site, layer), out var e)) { scale = e.Scale; offset = e.Offset; return true; }
        scale = offset = null!;
        return false;
    }

    (Tensor Scale, Tensor Offset)? _embedding;

    /// <summary>Edits the token embeddings (the input of block 0), e.g. to interpolate inputs for integrated gradients.</summary>
    public void SetEmbedding(Tensor scale, Tensor offset)
    {
        if (_embedding is { } old) { old.Scale.Dispose(); old.Offset.Dispose(); }
        _embedding = (scale, offset);
    }

    public bool TryGetEmbedding(out Tensor scale, out Tensor offset)
    {
        if (_embedding is { } e) { scale = e.Scale; offset = e.Offset; return true; }
        scale = offset = null!;
        return false;
    }

    readonly Dictionary<(NodeSite, int), Action<Tensor>> _transforms = new();

    /// <summary>
    /// Replaces a site's value in the forward by a function of it, applied in place after any affine edit at the same
    /// site (e.g. an SAE re-encode with some features mean-ablated). Forward only: the backward does not differentiate
    /// through a transform, so use it for evaluation runs, not for gradients.
    /// </summary>
    public void SetTransform(NodeSite site, int layer, Action<Tensor> transform) => _transforms[(site, layer)] = transform;

    public bool TryGetTransform(NodeSite site, int layer, out Action<Tensor> transform) =>
        _transforms.TryGetValue((site, layer), out transform!);

    readonly Dictionary<(NodeSite, int), MeanAblation> _meanAblations = new();

    /// <summary>
    /// Mean-ablates a site in the forward on the device (<see cref="IBackend.MeanAblate"/>), after any affine edit and
    /// before any transform at the same site. The sweep's edit: a bit per node and mask row instead of full scale and
    /// offset arrays per prompt row. Forward only: <see cref="Llama.Backward(ForwardPass, Tensor, BackwardRules, IReadOnlyCollection{NodeSite}, InterventionPlan?, int, Func{int, bool}?)"/> refuses a plan that has one.
    /// </summary>
    public void SetMeanAblation(NodeSite site, int layer, MeanAblation ablation) => _meanAblations[(site, layer)] = ablation;

    public bool TryGetMeanAblation(NodeSite site, int layer, out MeanAblation ablation) =>
        _meanAblations.TryGetValue((site, layer), out ablation!);

    /// <summary>Whether any edit is forward-only (a mean ablation), so the plan cannot be used for gradients.</summary>
    public bool HasMeanAblations => _meanAblations.Count > 0;

    public bool IsEmpty => _edits.Count == 0 && _embedding is null && _transforms.Count == 0 && _meanAblations.Count == 0;
    public IEnumerable<(NodeSite Site, int Layer)> Sites => _edits.Keys;

    public void Dispose()
    {
        foreach (var e in _edits.Values) { e.Scale.Dispose(); e.Offset.Dispose(); }
        _edits.Clear();
        _transforms.Clear();
        _meanAblations.Clear();   // the means are borrowed, not owned
        if (_embedding is { } em) { em.Scale.Dispose(); em.Offset.Dispose(); }
        _embedding = null;
    }
}
