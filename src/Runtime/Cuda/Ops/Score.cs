using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Launchers of native/kernels/score.cu: node-score accumulation, the scaled row gather of the score means, and the
/// output layer's backward over the answers' classifier rows; and the score readout beside the backward
/// (<see cref="StartReadOnHost(Tensor, int, int)"/>: page-locked, on the copy stream).
/// </summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct AccumulateScoresArgs(nint Clean, nint Baseline, nint Gradient, float Scale, nint Groups, int GroupCount,
        int Width, int BaselineKind, nint Sums, int SumsStride, int FirstRow, int FirstColumn);
    internal static readonly Kernel<AccumulateScoresArgs> AccumulateScoresKernel = Kernel.Declare<AccumulateScoresArgs>("accumulate_scores");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct GatherScaledRowsArgs(nint Source, nint Index, nint Destination, int Count, int Width, int SourceRows);
    internal static readonly Kernel<GatherScaledRowsArgs> GatherScaledRowsKernel = Kernel.Declare<GatherScaledRowsArgs>("gather_scaled_rows");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SparseMatMulInputGradArgs(nint Entries, int Rows, int PerRow, nint W, int WRows, int Width, nint Dx);
    internal static readonly Kernel<SparseMatMulInputGradArgs> SparseMatMulInputGradKernel = Kernel.Declare<SparseMatMulInputGradArgs>("sparse_matmul_input_grad");

    // The row → position map of AccumulateScores as CSR on the device (starts[positions + 1], then the rows of each
    // position). A batch calls the op once per site and layer with the same map, so it is uploaded when it changes only.
    SafeHandle? scoreGroups;
    long scoreGroupsCapacity;
    int[]? scoreGroupsKey;
    int scoreGroupCount;

    public void AccumulateScores(Tensor clean, ScoreBaseline baseline, Tensor gradient, float scale, ReadOnlySpan<int> positionOf,
        Tensor sums, int firstRow, int firstColumn)
    {
        int positions = OpContracts.AccumulateScores(clean, baseline, gradient, positionOf, sums, firstRow, firstColumn);
        if (positions == 0) return;
        int width = clean.Columns, rows = clean.Rows;
        nint groups = ScoreGroups(positionOf, positions);
        using var _ = Range("accumulate_scores");
        long elements = (long)positions * width;
        int rowFloats = baseline.Kind == ScoreBaselineKind.PerRow ? 3 : 2;
        var work = new OpWork(4.0 * rows * width, 4.0 * ((double)rows * width * rowFloats + elements * (baseline.Kind == ScoreBaselineKind.PerPosition ? 3 : 2)));
        Launch(AccumulateScoresKernel, GridFor(elements), new Dim3(ElementwiseBlock), 0,
            new AccumulateScoresArgs(In(clean), baseline.Values is { } b ? In(b) : 0, In(gradient), scale, groups, positions, width,
                (int)baseline.Kind, Dev(sums), sums.Columns, firstRow, firstColumn), work);   // reads only: the gradients' bf16 shadows stay valid
    }

    /// <summary>The device CSR of <paramref name="positionOf"/>, uploaded only when it differs from the last one.</summary>
    nint ScoreGroups(ReadOnlySpan<int> positionOf, int positions)
    {
        if (scoreGroupsKey is not null && scoreGroupCount == positions && positionOf.SequenceEqual(scoreGroupsKey))
            return scoreGroups!.DangerousGetHandle();
        var csr = new int[positions + 1 + positionOf.Length];
        foreach (int p in positionOf) csr[p + 1]++;
        for (int p = 0; p < positions; p++) csr[p + 1] += csr[p];
        var next = csr.AsSpan(0, positions).ToArray();
        for (int r = 0; r < positionOf.Length; r++) csr[positions + 1 + next[positionOf[r]]++] = r;   // ascending rows per position
        nint at = Stage(ref scoreGroups, ref scoreGroupsCapacity, (long)csr.Length * sizeof(int));
        device.CopyToDevice(at, MemoryMarshal.AsBytes(csr.AsSpan()));
        scoreGroupsKey = positionOf.ToArray();
        scoreGroupCount = positions;
        return at;
    }

    public void GatherScaledRows(Tensor source, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, Tensor destination)
    {
        OpContracts.GatherScaledRows(source, rows, scales, destination);
        int width = source.Columns;
        if (rows.Length == 0 || width == 0) return;
        using var _ = Range("gather_scaled_rows");
        var index = new int[2 * rows.Length];
        rows.CopyTo(index);
        MemoryMarshal.Cast<float, int>(scales).CopyTo(index.AsSpan(rows.Length));
        long n = (long)rows.Length * width;
        Launch(GatherScaledRowsKernel, GridFor(n), new Dim3(ElementwiseBlock), 0,
            new GatherScaledRowsArgs(In(source), Indices(index), Dev(destination), rows.Length, width, source.Rows), OpWork.Streaming(n, 2, 1));
    }

    SafeHandle? sparseRows;   // the classifier rows of a sparse product, widened from bf16
    long sparseRowsCapacity;

    public void SparseMatMulInputGrad(ReadOnlySpan<int> columns, ReadOnlySpan<float> values, int perRow, Tensor w, Tensor dx)
    {
        OpContracts.SparseMatMulInputGrad(columns, values, perRow, w, dx);
        int rows = dx.Rows, width = w.Columns;
        if (rows == 0 || width == 0) return;
        using var _ = Range("sparse_matmul_input_grad");
        var entries = new int[2 * columns.Length];
        columns.CopyTo(entries);
        MemoryMarshal.Cast<float, int>(values).CopyTo(entries.AsSpan(columns.Length));
        long n = (long)rows * width;
        nint table = 0;
        int tableRows = w.Rows;
        if (w is CudaTensor { IsBf16: true })
        {
            // A bf16-stored classifier: its rows the entries name, widened into scratch, then the same kernel reads
            // entry j of the list as scratch row j (identical values, so the same sums as from an fp32 table).
            var ids = new int[columns.Length];
            for (int j = 0; j < ids.Length; j++) { ids[j] = Math.Max(columns[j], 0); entries[j] = columns[j] < 0 ? -1 : j; }
            table = Stage(ref sparseRows, ref sparseRowsCapacity, Math.Max(4L, (long)ids.Length * width * sizeof(float)));
            GatherBf16Rows(Indices(ids), ids.Length, w, table);
            tableRows = ids.Length;
        }
        Launch(SparseMatMulInputGradKernel, GridFor(n), new Dim3(ElementwiseBlock), 0,
            new SparseMatMulInputGradArgs(Indices(entries), rows, perRow, table != 0 ? table : Dev(w), tableRows, width, Dev(dx)),
            new OpWork(2.0 * n * perRow, 4.0 * n * (perRow + 1)));
    }

    // ---- reads on the copy stream (StartReadOnHost) ---------------------------------------------------------------

    // Page-locked buffers by size, kept between tasks (cuMemHostAlloc is slow; a task's readout asks the same sizes
    // every time). Reads are numbered: the first Read of one not yet waited for waits once for all queued so far.
    readonly Dictionary<long, Stack<SafeHandle>> idlePinned = [];
    long idlePinnedBytes, readsQueued, readsWaitedFor;
    /// <summary>Idle page-locked bytes kept at most (beyond, a returned buffer is freed): a readout's worth, as ScoreSums bounds one (1 GiB).</summary>
    const long MaxIdlePinnedBytes = 1L << 30;
    bool disposingPinned;

    public PendingHostRead StartReadOnHost(Tensor source, int firstRow, int rows)
    {
        OpContracts.RowRange(source, firstRow, rows, "StartReadOnHost");
        nint s = In(source) + (nint)((long)firstRow * source.Columns * sizeof(float));
        long floats = (long)rows * source.Columns, bytes = floats * sizeof(float);
        if (bytes == 0) return new CopyStreamRead(this, null, 0, 0);
        SafeHandle pinned;
        if (idlePinned.TryGetValue(bytes, out var idle) && idle.TryPop(out var kept)) { pinned = kept; idlePinnedBytes -= bytes; }
        else pinned = device.AllocatePinnedHost(bytes);
        using (Range("download")) device.CopyToHostOnCopyStream(pinned.DangerousGetHandle(), s, bytes);
        return new CopyStreamRead(this, pinned, checked((int)floats), ++readsQueued);
    }

    sealed class CopyStreamRead(CudaBackend backend, SafeHandle? pinned, int floats, long number) : PendingHostRead
    {
        SafeHandle? _pinned = pinned;

        public override unsafe void Read(HostValuesReader read)
        {
            if (floats == 0) { read([]); return; }
            ObjectDisposedException.ThrowIf(_pinned is null, this);
            if (number > backend.readsWaitedFor)
            {
                backend.device.Synchronize();
                backend.readsWaitedFor = backend.readsQueued;
            }
            read(new ReadOnlySpan<float>((void*)_pinned.DangerousGetHandle(), floats));
        }

        public override void Dispose()
        {
            if (_pinned is not { } p) return;
            _pinned = null;
            // A buffer still being written (never read, e.g. after an error) is waited for before it is reused.
            if (number > backend.readsWaitedFor && !backend.disposingPinned) { backend.device.Synchronize(); backend.readsWaitedFor = backend.readsQueued; }
            long bytes = (long)floats * sizeof(float);
            if (backend.disposingPinned || backend.idlePinnedBytes + bytes > MaxIdlePinnedBytes) { p.Dispose(); return; }
            backend.idlePinnedBytes += bytes;
            if (!backend.idlePinned.TryGetValue(bytes, out var stack)) backend.idlePinned[bytes] = stack = new Stack<SafeHandle>();
            stack.Push(p);
        }
    }

    /// <summary>The readout's page-locked buffers and the top-k scratch (from <see cref="Dispose"/>).</summary>
    void DisposeScoreReadout()
    {
        topKScratch?.Dispose();
        topKScratch = null;
        disposingPinned = true;
        foreach (var stack in idlePinned.Values)
            while (stack.TryPop(out var p)) p.Dispose();
        idlePinned.Clear();
        idlePinnedBytes = 0;
    }
}
