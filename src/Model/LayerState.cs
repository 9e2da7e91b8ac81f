using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// What one block's forward keeps for the backward and for reading node sites. All [rows, width] on the backend.
/// Q, K, V and Gate, Up are read by the backward alone: once their forward readers have run, the forward replaces them
/// by what <see cref="IBackend.StoreForBackward"/> keeps (bf16 on the CUDA backend under bf16 products; the same fp32
/// tensors on the CPU), so read only their shapes elsewhere.
/// </summary>
internal sealed class LayerState : IDisposable
{
    public required Tensor Input { get; init; }      // r_l
    /// <summary>Input is this state's own copy (the residual stream moved from the previous layer's device), freed with it.</summary>
    public bool OwnsInput { get; init; }
    public required Tensor AttnNormed { get; init; } // RMSNorm_in(r_l)
    public required Tensor AttnRstd { get; init; }   // [rows]
    public required Tensor Q { get; set; }          // after RoPE
    public required Tensor K { get; set; }          // after RoPE
    public required Tensor V { get; set; }
    public required Tensor Lse { get; init; }        // [B, H, T]: L = m + log ℓ of the streaming attention (no T² pattern)
    /// <summary>The attention output before an edit at attn_z (the backward's D = rowsum(dz ∘ o) needs it); null when unedited.</summary>
    public Tensor? RawZ { get; set; }
    public required Tensor Z { get; init; }          // o_proj input (site attn_z)
    public required Tensor AttnOut { get; init; }    // o_proj output (site attn)
    public required Tensor Mid { get; init; }        // r' = r_l + attn_out
    public required Tensor FfnNormed { get; init; }
    public required Tensor FfnRstd { get; init; }
    public required Tensor Gate { get; set; }
    public required Tensor Up { get; set; }
    public required Tensor Act { get; init; }        // silu(gate)·up (site mlp_act)
    public required Tensor MlpOut { get; init; }     // down_proj output (site mlp_out)
    public required Tensor Output { get; init; }     // r_{l+1} (site resid)

    public Tensor Site(NodeSite site) => site switch
    {
        NodeSite.Resid => Output,
        NodeSite.Attn => AttnOut,
        NodeSite.AttnZ => Z,
        NodeSite.MlpOut => MlpOut,
        NodeSite.MlpAct => Act,
        _ => throw new ArgumentOutOfRangeException(nameof(site)),
    };

    /// <summary>Frees every tensor of the state but <see cref="Output"/> and returns it (a checkpointed forward keeps only it).</summary>
    internal Tensor DisposeAllButOutput()
    {
        if (OwnsInput) Input.Dispose();
        RawZ?.Dispose();
        foreach (var t in new[] { AttnNormed, AttnRstd, Q, K, V, Lse, Z, AttnOut, Mid, FfnNormed, FfnRstd, Gate, Up, Act, MlpOut })
            t.Dispose();
        return Output;
    }

    public void Dispose()
    {
        // Input is the previous layer's Output (or the embedding, owned by the pass), so it is not disposed here
        // unless it is a copy moved across devices.
        if (OwnsInput) Input.Dispose();
        RawZ?.Dispose();
        foreach (var t in new[] { AttnNormed, AttnRstd, Q, K, V, Lse, Z, AttnOut, Mid, FfnNormed, FfnRstd, Gate, Up, Act, MlpOut, Output })
            t.Dispose();
    }
}
