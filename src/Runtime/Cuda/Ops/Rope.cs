using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launcher of native/kernels/rope.cu: rotary position embedding in place, one thread per rotated pair. Under
/// Bf16 the forward rotation also writes the rotated tensor's bf16 shadow (Ops/Bf16Operands.cs): the bf16 attention's
/// q and k operands; the inverse, on dq and dk after the bf16 attention backward, writes their columns of the [dq | dk | dv]
/// operand of the stacked Q/K/V input-gradient product that the attention backward published (dv's already written).</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RopeArgs(nint X, nint Cos, nint Sin, int Rows, int Heads, int HeadDim, int SeqLen, int Interleaved, int Inverse);
    internal static readonly Kernel<RopeArgs> RopeApply = Kernel.Declare<RopeArgs>("rope_apply");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RopeBf16Args(nint X, nint Cos, nint Sin, nint X16, int X16Stride, int Rows, int Heads, int HeadDim, int SeqLen, int Interleaved, int Inverse);
    internal static readonly Kernel<RopeBf16Args> RopeApplyBf16 = Kernel.Declare<RopeBf16Args>("rope_apply_bf16");

    public void Rope(Tensor x, int heads, int seqLen, Tensor cos, Tensor sin, bool interleaved, bool inverse)
    {
        int headDim = OpContracts.Rope(x, heads, seqLen, cos, sin);
        int rows = x.Rows;
        long pairs = (long)rows * heads * (headDim / 2);
        if (pairs == 0) return;
        using var _ = Range("rope");
        if (Precision == GemmPrecision.Bf16 && !inverse)
        {
            var slot = ShadowSlot(x);
            Launch(RopeApplyBf16, GridFor(pairs), new Dim3(ElementwiseBlock), 0,
                new RopeBf16Args(Dev(x), In(cos), In(sin), slot.Address, x.Columns, rows, heads, headDim, seqLen, interleaved ? 1 : 0, 0),
                OpWork.Streaming(pairs, 6, 6) with { Bytes = pairs * 28.0 });
            Publish(slot, x);
            return;
        }
        int stride = 0;
        nint columns = Precision == GemmPrecision.Bf16 ? ConcatColumns(x, out stride) : 0;
        if (columns != 0)
        {
            Launch(RopeApplyBf16, GridFor(pairs), new Dim3(ElementwiseBlock), 0,
                new RopeBf16Args(Dev(x), In(cos), In(sin), columns, stride, rows, heads, headDim, seqLen, interleaved ? 1 : 0, 1),
                OpWork.Streaming(pairs, 6, 6) with { Bytes = pairs * 28.0 });
            PublishConcatPart(x);
            return;
        }
        Launch(RopeApply, GridFor(pairs), new Dim3(ElementwiseBlock), 0,
            new RopeArgs(Dev(x), In(cos), In(sin), rows, heads, headDim, seqLen, interleaved ? 1 : 0, inverse ? 1 : 0),
            OpWork.Streaming(pairs, 6, 6));
    }
}
