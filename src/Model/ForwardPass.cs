using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>Which logits a forward computes.</summary>
internal enum LogitRows
{
    /// <summary>At every row (generation demo, benchmarks).</summary>
    All,
    /// <summary>Only at each prompt's last token (metrics, attribution): [batch, vocab].</summary>
    Last,
    /// <summary>None (ablation runs that read site values only).</summary>
    None,
}

/// <summary>The result of one batched forward: every layer's state, the final norm and the logits.</summary>
internal sealed class ForwardPass : IDisposable
{
    internal ForwardPass(Llama model, TokenBatch batch, Tensor embedded, LayerState[] layers, Tensor? finalInput, Tensor? finalRstd,
        Tensor? logits, LogitRows logitRows, int[] logitRowIndex)
    {
        Model = model; Batch = batch; Embedded = embedded; Layers = layers;
        FinalInput = finalInput; FinalRstd = finalRstd; Logits = logits; LogitRowsKind = logitRows; LogitRowIndex = logitRowIndex;
    }

    public Llama Model { get; }
    public TokenBatch Batch { get; }
    public Tensor Embedded { get; }
    public LayerState[] Layers { get; }
    /// <summary>r_L at the logit rows (what the final norm read).</summary>
    internal Tensor? FinalInput { get; }
    internal Tensor? FinalRstd { get; }
    /// <summary>[logit rows, vocab] on the backend, or null for <see cref="LogitRows.None"/>.</summary>
    public Tensor? Logits { get; }
    public LogitRows LogitRowsKind { get; }
    /// <summary>The batch rows the logits rows belong to.</summary>
    public int[] LogitRowIndex { get; }

    /// <summary>The value of a site at a layer, [rows, width] on the backend.</summary>
    public Tensor Site(NodeSite site, int layer) => Layer(layer).Site(site);

    /// <summary>
    /// Each layer's input r_l ([rows, dim]; the first is <see cref="Embedded"/>) when the forward was checkpointed
    /// (<see cref="Llama.Forward(TokenBatch, LogitRows, InterventionPlan?, bool)"/>), else null. Then <see cref="Layers"/>
    /// holds at most the one layer last recomputed (null elsewhere): read layers through <see cref="Layer"/>.
    /// </summary>
    public Tensor[]? LayerInputs { get; internal init; }
    /// <summary>The edits the forward ran with, applied again when a checkpointed layer is recomputed.</summary>
    internal InterventionPlan? Plan { get; init; }
    int _recomputed = -1;

    /// <summary>
    /// Layer <paramref name="layer"/>'s state. On a checkpointed pass it is recomputed from its input by the same
    /// forward code on the same backend (so the same values) and kept until another layer is asked for or the pass is
    /// disposed: one layer's state at a time, which is what the backward, top layer first, reads. Not thread-safe.
    /// </summary>
    public LayerState Layer(int layer)
    {
        if (LayerInputs is null) return Layers[layer];
        if (_recomputed != layer)
        {
            if (_recomputed >= 0) { Layers[_recomputed].Dispose(); Layers[_recomputed] = null!; }
            _recomputed = -1;
            Layers[layer] = Model.ForwardLayer(layer, LayerInputs[layer], Batch, Plan);
            _recomputed = layer;
        }
        return Layers[layer];
    }

    /// <summary>Logits copied to the host, [logit rows · vocab].</summary>
    public float[] HostLogits()
    {
        if (Logits is null) throw new InvalidOperationException("this forward computed no logits");
        var h = new float[Logits.Length];
        Model.HeadBackend.Download(Logits, h);
        return h;
    }

    /// <summary>A site's values copied to the host, [rows · width].</summary>
    public float[] HostSite(NodeSite site, int layer)
    {
        var t = Site(site, layer);
        var h = new float[t.Length];
        Model.LayerBackend(layer).Download(t, h);
        return h;
    }

    public void Dispose()
    {
        Embedded.Dispose();
        foreach (var l in Layers) l?.Dispose();
        if (LayerInputs is not null)
            for (int l = 1; l < LayerInputs.Length; l++) LayerInputs[l].Dispose();   // [0] is Embedded
        FinalInput?.Dispose(); FinalRstd?.Dispose(); Logits?.Dispose();
    }
}
