using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Launchers of native/kernels/topk.cu: the top-k of a block of score sums by |mean| selected on the device (radix
/// selection of the k-th largest node key, 8 bits a pass), so only the k results cross to the host: one small download,
/// one wait. The same k, in the same order, as <see cref="Cpu.TopKOps"/> (and so as NodeRanking).
/// </summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct TopKInitArgs(nint State, int K);
    internal static readonly Kernel<TopKInitArgs> TopKInitKernel = Kernel.Declare<TopKInitArgs>("topk_init");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct TopKHistogramArgs(nint Sums, nint Scales, int N, int Stride, int FirstColumn, int Width, int Positions,
        int RowsPerLayer, int FirstFlat, int Digit, nint State);
    internal static readonly Kernel<TopKHistogramArgs> TopKHistogramKernel = Kernel.Declare<TopKHistogramArgs>("topk_histogram");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct TopKSelectDigitArgs(nint State, int Digit);
    internal static readonly Kernel<TopKSelectDigitArgs> TopKSelectDigitKernel = Kernel.Declare<TopKSelectDigitArgs>("topk_select_digit");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct TopKCollectArgs(nint Sums, nint Scales, int N, int Stride, int FirstColumn, int Width, int Positions,
        int RowsPerLayer, int FirstFlat, int K, nint State, nint OutIndex, nint OutValue);
    internal static readonly Kernel<TopKCollectArgs> TopKCollectKernel = Kernel.Declare<TopKCollectArgs>("topk_collect");

    /// <summary>Ints of topk.cu's state: the 256-bin histogram, the key prefix (two words), the count still needed, the output count.</summary>
    internal const int TopKStateInts = 260;
    /// <summary>Key bytes, one histogram pass each (most significant first).</summary>
    const int TopKDigits = 8;

    SafeHandle? topKScratch;   // [state | scales | out index k | out values k]
    long topKScratchCapacity;

    public ScoredNode[] TopKByMagnitude(Tensor sums, TopKBlock block, ReadOnlySpan<float> scales, int k)
    {
        OpContracts.TopKByMagnitude(sums, block, scales, k);
        k = (int)Math.Min(k, block.Nodes);
        if (k == 0) return [];
        var s = In(sums);
        int n = (int)block.Nodes;
        using var _ = Range("topk");
        // One staging buffer: the state, the scales (uploaded), the k indices and k values (downloaded together).
        long stateBytes = TopKStateInts * sizeof(int), scalesBytes = (long)scales.Length * sizeof(float), outBytes = 2L * k * sizeof(int);
        nint state = Stage(ref topKScratch, ref topKScratchCapacity, stateBytes + scalesBytes + outBytes);
        nint scaleAt = state + (nint)stateBytes, outAt = scaleAt + (nint)scalesBytes;
        device.CopyToDevice(scaleAt, MemoryMarshal.AsBytes(scales));
        Launch(TopKInitKernel, new Dim3(1), new Dim3(ElementwiseBlock), 0, new TopKInitArgs(state, k), OpWork.Streaming(TopKStateInts, 1));
        var grid = GridFor(n);
        // A pass reads every node's sum (4 bytes) and adds to the histogram; the select reads and clears 256 bins.
        var pass = new OpWork(2.0 * n, 4.0 * n);
        for (int digit = TopKDigits - 1; digit >= 0; digit--)
        {
            Launch(TopKHistogramKernel, grid, new Dim3(ElementwiseBlock), 0,
                new TopKHistogramArgs(s, scaleAt, n, sums.Columns, block.FirstColumn, block.Width, block.Positions, block.RowsPerLayer,
                    block.FirstFlat, digit, state), pass);
            Launch(TopKSelectDigitKernel, new Dim3(1), new Dim3(32), 0, new TopKSelectDigitArgs(state, digit), OpWork.Streaming(256, 2));
        }
        Launch(TopKCollectKernel, grid, new Dim3(ElementwiseBlock), 0,
            new TopKCollectArgs(s, scaleAt, n, sums.Columns, block.FirstColumn, block.Width, block.Positions, block.RowsPerLayer,
                block.FirstFlat, k, state, outAt, outAt + (nint)(k * sizeof(int))), new OpWork(2.0 * n, 4.0 * n + 8.0 * k));
        var result = new int[2 * k];
        device.CopyToHost(outAt, MemoryMarshal.AsBytes(result.AsSpan()));   // the k results: one wait, 8·k bytes
        var top = new ScoredNode[k];
        for (int i = 0; i < k; i++) top[i] = new ScoredNode(result[i], BitConverter.Int32BitsToSingle(result[k + i]));
        Cpu.TopKOps.Sort(top);
        return top;
    }
}
