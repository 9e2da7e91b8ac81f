using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Launchers of native/kernels/ablation.cu: mean ablation with one keep bit per node and mask row, and the sweep's ops
/// over tables resident for a whole sweep (<see cref="ISweepOps"/>: keep bits built from the ranking, the metric per
/// mask), which upload nothing per call.
/// </summary>
internal sealed partial class CudaBackend : ISweepOps
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

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct BuildKeepBitsArgs(nint Bits, nint Ranks, nint Stored, nint Specs, int Masks, int Layers, int Positions, int Width, int WordsPerRow);
    internal static readonly Kernel<BuildKeepBitsArgs> BuildKeepBitsKernel = Kernel.Declare<BuildKeepBitsArgs>("build_keep_bits");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct ReplicaMetricArgs(nint Logits, nint TermColumns, nint TermWeights, nint Metric, int Replicas, int Examples, int Columns, int PerRow);
    internal static readonly Kernel<ReplicaMetricArgs> ReplicaMetricKernel = Kernel.Declare<ReplicaMetricArgs>("replica_metric");

    public void BuildKeepBits(Tensor ranks, Tensor storedBits, Tensor specs, int firstSpec, int masks, int layers, int positions, int width, Tensor bits)
    {
        SweepOps.CheckBuildKeepBits(ranks, storedBits, specs, firstSpec, masks, layers, positions, width, bits);
        if (bits.Length == 0) return;
        using var _ = Range("build_keep_bits");
        int words = AblationMask.WordsPerRow(width);
        Launch(BuildKeepBitsKernel, GridFor(bits.Length), new Dim3(ElementwiseBlock), 0,
            new BuildKeepBitsArgs(Dev(bits), Dev(ranks), storedBits.Length == 0 ? 0 : Dev(storedBits), Dev(specs) + (nint)(3L * firstSpec * sizeof(int)),
                masks, layers, positions, width, words),
            OpWork.Streaming(bits.Length + (long)layers * masks * positions * width, 1));
    }

    public void MeanAblate(Tensor x, Tensor means, Tensor bits, long firstMaskRow, Tensor keepRow, Tensor meanRow)
    {
        SweepOps.CheckMeanAblate(x, means, bits, firstMaskRow, keepRow, meanRow);
        if (x.Length == 0) return;
        using var _ = Range("mean_ablate");
        Launch(MeanAblateKernel, GridFor(x.Length), new Dim3(ElementwiseBlock), 0,
            new MeanAblateArgs(Dev(x), Dev(means), bits.Length == 0 ? 0 : Dev(bits) + (nint)(firstMaskRow * bits.Columns * sizeof(uint)), Dev(keepRow), Dev(meanRow),
                x.Rows, x.Columns, bits.Columns),
            OpWork.Streaming(x.Length, 2));
    }

    public void GatherRows(Tensor source, Tensor rows, Tensor destination)
    {
        SweepOps.CheckRowsOp(destination, rows, source, "GatherRows");
        long n = destination.Length;
        if (n == 0) return;
        using var _ = Range("gather_rows");
        Launch(GatherRowsKernel, GridFor(n), new Dim3(ElementwiseBlock), 0,
            new RowsArgs(Dev(source), Dev(rows), Dev(destination), destination.Rows, destination.Columns, source.Rows), OpWork.Streaming(n, 2));
    }

    public void ScatterAddRows(Tensor source, Tensor rows, Tensor destination)
    {
        SweepOps.CheckRowsOp(source, rows, destination, "ScatterAddRows");
        if (source.Length == 0) return;
        using var _ = Range("scatter_add_rows");
        Launch(ScatterAddRowsKernel, GridFor(source.Columns), new Dim3(ElementwiseBlock), 0,
            new RowsArgs(Dev(source), Dev(rows), Dev(destination), source.Rows, source.Columns, destination.Rows), OpWork.Streaming(source.Length, 3, 1));
    }

    public void ReplicaMetric(Tensor logits, Tensor terms, Tensor metric, int firstReplica)
    {
        int replicas = SweepOps.CheckReplicaMetric(logits, terms, metric, firstReplica);
        if (replicas == 0) return;
        using var _ = Range("replica_metric");
        nint t = Dev(terms);
        Launch(ReplicaMetricKernel, GridFor(replicas), new Dim3(ElementwiseBlock), 0,
            new ReplicaMetricArgs(Dev(logits), t, t + sizeof(int), Dev(metric) + (nint)(2L * firstReplica * sizeof(float)), replicas, terms.Rows,
                logits.Columns, terms.Columns / 2),
            new OpWork(2.0 * replicas * terms.Length / 2, 4.0 * (replicas * terms.Length + 2 * replicas)));
    }
}
