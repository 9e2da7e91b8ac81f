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
    public Tensor Site(NodeSite site, int layer) => Layers[layer].Site(site);

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
        foreach (var l in Layers) l.Dispose();
        FinalInput?.Dispose(); FinalRstd?.Dispose(); Logits?.Dispose();
    }
}
