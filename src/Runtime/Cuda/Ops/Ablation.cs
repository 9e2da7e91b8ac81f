using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launcher of native/kernels/ablation.cu: mean ablation with one keep bit per node and mask row.</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct MeanAblateArgs(nint X, nint Means, nint KeepBits, nint KeepRow, nint MeanRow, int Rows, int Width, int WordsPerRow);
    internal static readonly Kernel<MeanAblateArgs> MeanAblateKernel = Kernel.Declare<MeanAblateArgs>("mean_ablate");

    public void MeanAblate(Tensor x, Tensor means, ReadOnlySpan<uint> keepBits, ReadOnlySpan<int> keepRow, ReadOnlySpan<int> meanRow)
    {
        OpContracts.MeanAblate(x, means, keepBits, keepRow, meanRow);
        int rows = x.Rows, width = x.Columns;
        if (x.Length == 0) return;
        using var _ = Range("mean_ablate");
        // Both row maps in one upload: [keepRow | meanRow].
        nint rowMaps = Stage(ref indexScratch, ref indexCapacity, 2L * rows * sizeof(int));
        device.CopyToDevice(rowMaps, MemoryMarshal.AsBytes(keepRow));
        device.CopyToDevice(rowMaps + rows * sizeof(int), MemoryMarshal.AsBytes(meanRow));
        nint bits = keepBits.IsEmpty ? 0 : Stage(ref maskScratch, ref maskCapacity, (long)keepBits.Length * sizeof(uint));
        device.CopyToDevice(bits, MemoryMarshal.AsBytes(keepBits));
        Launch(MeanAblateKernel, GridFor(x.Length), new Dim3(ElementwiseBlock), 0,
            new MeanAblateArgs(Dev(x), Dev(means), bits, rowMaps, rowMaps + rows * sizeof(int), rows, width, AblationMask.WordsPerRow(width)),
            OpWork.Streaming(x.Length, 2));
    }
}
