using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launcher of native/kernels/rope.cu: rotary position embedding in place, one thread per rotated pair.</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RopeArgs(nint X, nint Cos, nint Sin, int Rows, int Heads, int HeadDim, int SeqLen, int Interleaved, int Inverse);
    internal static readonly Kernel<RopeArgs> RopeApply = Kernel.Declare<RopeArgs>("rope_apply");

    public void Rope(Tensor x, int heads, int seqLen, Tensor cos, Tensor sin, bool interleaved, bool inverse)
    {
        int headDim = OpContracts.Rope(x, heads, seqLen, cos, sin);
        int rows = x.Rows;
        long pairs = (long)rows * heads * (headDim / 2);
        if (pairs == 0) return;
        using var _ = Range("rope");
        Launch(RopeApply, GridFor(pairs), new Dim3(ElementwiseBlock), 0,
            new RopeArgs(Dev(x), Dev(cos), Dev(sin), rows, heads, headDim, seqLen, interleaved ? 1 : 0, inverse ? 1 : 0),
            OpWork.Streaming(pairs, 6, 6));
    }
}
