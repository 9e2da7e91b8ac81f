using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launchers of native/kernels/swiglu.cu: h = silu(gate) ⊙ up and its backward under a gate rule.</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SwiGluForwardArgs(nint Gate, nint Up, nint H, long N);
    internal static readonly Kernel<SwiGluForwardArgs> SwiGluForwardKernel = Kernel.Declare<SwiGluForwardArgs>("swiglu_forward");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SwiGluForwardBf16Args(nint Gate, nint Up, nint H, nint H16, long N);
    internal static readonly Kernel<SwiGluForwardBf16Args> SwiGluForwardBf16Kernel = Kernel.Declare<SwiGluForwardBf16Args>("swiglu_forward_bf16");

    /// <param name="Dh">Device pointer to the gradient of the SwiGLU output h = silu(gate)·up, N values.</param>
    /// <param name="Gate">Device pointer to the forward's gate projection, N values.</param>
    /// <param name="Up">Device pointer to the forward's up projection, N values.</param>
    /// <param name="Dgate">Device pointer the gate gradient is written to, N values.</param>
    /// <param name="Dup">Device pointer the up gradient is written to, N values.</param>
    /// <param name="N">Elements of each tensor (rows × hidden width).</param>
    /// <param name="Rule">swiglu.cu's encoding: 0 exact, 1 identity-half, 2 identity.</param>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SwiGluBackwardArgs(nint Dh, nint Gate, nint Up, nint Dgate, nint Dup, long N, int Rule);
    internal static readonly Kernel<SwiGluBackwardArgs> SwiGluBackwardKernel = Kernel.Declare<SwiGluBackwardArgs>("swiglu_backward");

    public void SwiGlu(Tensor gate, Tensor up, Tensor h)
    {
        OpContracts.SwiGlu(gate, up, h);
        if (h.Length == 0) return;
        using var _ = Range("swiglu_forward");
        if (Precision == GemmPrecision.Bf16)
        {
            // h feeds the down product: its bf16 operand is written here (an edit of h in between makes it stale).
            var slot = ShadowSlot(h);
            Launch(SwiGluForwardBf16Kernel, GridFor(h.Length), new Dim3(ElementwiseBlock), 0,
                new SwiGluForwardBf16Args(Dev(gate), Dev(up), Dev(h), slot.Address, h.Length), OpWork.Streaming(h.Length, 3, 6) with { Bytes = h.Length * 14.0 });
            Publish(slot, h);
            return;
        }
        Launch(SwiGluForwardKernel, GridFor(h.Length), new Dim3(ElementwiseBlock), 0,
            new SwiGluForwardArgs(Dev(gate), Dev(up), Dev(h), h.Length), OpWork.Streaming(h.Length, 3, 6));
    }

    public void SwiGluBackward(Tensor dh, Tensor gate, Tensor up, GateRule rule, Tensor dgate, Tensor dup)
    {
        OpContracts.SwiGluBackward(dh, gate, up, rule, dgate, dup);
        int code = rule switch
        {
            GateRule.Exact => 0,
            GateRule.IdentityHalf => 1,
            GateRule.Identity => 2,
            _ => throw new ArgumentOutOfRangeException(nameof(rule)),
        };
        long n = dh.Length;
        if (n == 0) return;
        using var _ = Range("swiglu_backward");
        Launch(SwiGluBackwardKernel, GridFor(n), new Dim3(ElementwiseBlock), 0,
            new SwiGluBackwardArgs(Dev(dh), Dev(gate), Dev(up), Dev(dgate), Dev(dup), n, code), OpWork.Streaming(n, 5, 12));
    }
}
