using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launchers of native/kernels/swiglu.cu: h = silu(gate) ⊙ up and its backward under a gate rule. Under Bf16 the
/// forward writes h's bf16 shadow and the backward the bf16 [dgate | dup] operand of the summed input-gradient product.</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SwiGluForwardArgs(nint Gate, nint Up, nint H, long N);
    internal static readonly Kernel<SwiGluForwardArgs> SwiGluForwardKernel = Kernel.Declare<SwiGluForwardArgs>("swiglu_forward");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SwiGluForwardBf16StoreArgs(nint Gate, nint Up, nint H, nint H16, nint Gate16, nint Up16, long N);
    internal static readonly Kernel<SwiGluForwardBf16StoreArgs> SwiGluForwardBf16StoreKernel = Kernel.Declare<SwiGluForwardBf16StoreArgs>("swiglu_forward_bf16_store");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SwiGluForwardBf16StackedArgs(nint Stacked, long Rows, int Width, nint H, nint H16, nint Gate16, nint Up16);
    internal static readonly Kernel<SwiGluForwardBf16StackedArgs> SwiGluForwardBf16StackedKernel = Kernel.Declare<SwiGluForwardBf16StackedArgs>("swiglu_forward_bf16_stacked");

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

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SwiGluBackwardBf16Args(nint Dh, nint Gate, nint Up, nint Dgate, nint Dup, nint D16, int Rows, int Width, int Rule);
    internal static readonly Kernel<SwiGluBackwardBf16Args> SwiGluBackwardBf16Kernel = Kernel.Declare<SwiGluBackwardBf16Args>("swiglu_backward_bf16");
    /// <summary>As <see cref="SwiGluBackwardBf16Kernel"/> with gate and up the forward's stored bf16 tensors (<see cref="StoreForBackward"/>); the same argument layout.</summary>
    internal static readonly Kernel<SwiGluBackwardBf16Args> SwiGluBackwardBf16StoredKernel = Kernel.Declare<SwiGluBackwardBf16Args>("swiglu_backward_bf16_stored");

    public void SwiGlu(Tensor gate, Tensor up, Tensor h)
    {
        OpContracts.SwiGlu(gate, up, h);
        if (h.Length == 0) return;
        using var _ = Range("swiglu_forward");
        if (Precision == GemmPrecision.Bf16)
        {
            // h feeds the down product: its bf16 operand is written here (an edit of h in between makes it stale). So are
            // gate's and up's, read here anyway: what the forward then stores for the backward (StoreForBackward adopts them).
            var slot = ShadowSlot(h);
            var gateSlot = ShadowSlot(gate);
            var upSlot = ShadowSlot(up);
            Launch(SwiGluForwardBf16StoreKernel, GridFor(h.Length), new Dim3(ElementwiseBlock), 0,
                new SwiGluForwardBf16StoreArgs(In(gate), In(up), Dev(h), slot.Address, gateSlot.Address, upSlot.Address, h.Length),
                OpWork.Streaming(h.Length, 3, 6) with { Bytes = h.Length * 18.0 });
            Publish(slot, h);
            Publish(gateSlot, gate);
            Publish(upSlot, up);
            return;
        }
        Launch(SwiGluForwardKernel, GridFor(h.Length), new Dim3(ElementwiseBlock), 0,
            new SwiGluForwardArgs(In(gate), In(up), Dev(h), h.Length), OpWork.Streaming(h.Length, 3, 6));
    }

    /// <summary>
    /// <see cref="IBackend.GateUpSwiGluForBackward"/>: under Bf16 against the stacked [W1; W3] (<see cref="StackConstants"/>),
    /// one product into [rows, 2 · hidden] and swiglu_forward_bf16_stacked reading gate and up from it in place, writing
    /// act (and its bf16 shadow, the down product's operand) and the bf16 gate and up the backward reads; the fp32
    /// gate and up are never written (the default stores exactly their rounding). Otherwise the default's calls.
    /// </summary>
    public (Tensor Gate, Tensor Up) GateUpSwiGluForBackward(Tensor x, Tensor w1, Tensor w3, Tensor gate, Tensor up, Tensor act)
    {
        OpContracts.SwiGlu(gate, up, act);
        nint stacked = StackedProduct(x, [w1, w3], [gate, up], anyWidth: true);
        if (stacked == 0)
        {
            MatMulShared(x, [w1, w3], [gate, up]);
            SwiGlu(gate, up, act);
            return (StoreForBackward(gate), StoreForBackward(up));
        }
        var storedGate = CreateBf16(gate.Shape.ToArray());
        var storedUp = CreateBf16(up.Shape.ToArray());
        using (Range("swiglu_forward"))
        {
            var slot = ShadowSlot(act);
            Launch(SwiGluForwardBf16StackedKernel, GridFor(act.Length), new Dim3(ElementwiseBlock), 0,
                new SwiGluForwardBf16StackedArgs(stacked, act.Rows, act.Columns, Dev(act), slot.Address, storedGate.Pointer, storedUp.Pointer),
                OpWork.Streaming(act.Length, 3, 6) with { Bytes = act.Length * 18.0 });
            Publish(slot, act);
        }
        gate.Dispose();
        up.Dispose();
        return (storedGate, storedUp);
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
        if (Precision == GemmPrecision.Bf16)
        {
            // dgate and dup feed one summed product against [W1; W3] (MatMulInputGradSum): its bf16 operand is written here.
            nint d16 = ConcatSlot(2 * n);
            // Gate and up stored in bf16 for the backward (StoreForBackward) are read as they are: 4 bytes less per value.
            bool stored = gate is CudaTensor { IsBf16: true } && up is CudaTensor { IsBf16: true };
            Launch(stored ? SwiGluBackwardBf16StoredKernel : SwiGluBackwardBf16Kernel, GridFor(n), new Dim3(ElementwiseBlock), 0,
                new SwiGluBackwardBf16Args(In(dh), stored ? DevBf16(gate) : In(gate), stored ? DevBf16(up) : In(up), Dev(dgate), Dev(dup), d16, dh.Rows, dh.Columns, code),
                OpWork.Streaming(n, 5, 12) with { Bytes = n * (stored ? 20.0 : 24.0) });
            PublishConcat(dgate, dup);
            return;
        }
        Launch(SwiGluBackwardKernel, GridFor(n), new Dim3(ElementwiseBlock), 0,
            new SwiGluBackwardArgs(In(dh), In(gate), In(up), Dev(dgate), Dev(dup), n, code), OpWork.Streaming(n, 5, 12));
    }
}
