using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// An <see cref="IDeviceRuntime"/> that executes nothing and keeps the ledger a GPU run would produce: per NVTX range
/// (op), the kernel launches and matrix products with their declared FLOP and bytes (<see cref="OpWork"/>; a product's
/// from its <see cref="GemmCall"/>), and over the whole run the host synchronisations and host↔device copy bytes.
/// Memory is address space only (a bump counter behind a <see cref="DeviceMemoryPool"/>, so the pool's high-water mark
/// is the run's), so the ledger of a Llama-3.1-8B-shaped pass is had on a laptop: <c>bench gpu-plan</c> prints it
/// with a roofline time. Downloads write zeros: code that branches on downloaded values sees zeros.
/// Two streams are modelled: the compute stream runs every launch in order, and downloads queued on the copy stream
/// (<see cref="CopyToHostOnCopyStream"/>) are kept with where the compute stream stood when their event was recorded
/// (<see cref="CopyStreamMarks"/>, with the host waits after them), so a timing model can overlap them with the
/// compute that follows (bench gpu-plan prints the hidden and the exposed copy time).
/// </summary>
internal sealed class RecordingDeviceRuntime : IDeviceRuntime
{
    /// <summary>H100 SXM dense bf16 tensor-core peak (FLOP/s) and HBM3 bandwidth (bytes/s), the roofline's two roofs.</summary>
    public const double H100Bf16Flops = 989e12, H100Bytes = 3.35e12;

    readonly Stack<string> ranges = new();
    readonly Dictionary<string, OpLedger> ops = [];
    long nextAddress = 1L << 40;
    string currentOp = "(no range)";

    public RecordingDeviceRuntime() => Pool = new DeviceMemoryPool(AllocateAddressSpace);

    public string Name => "recording (executes nothing)";
    /// <summary>What this stand-in reports as the device's free memory (null: no limit), for the memory plan's tests.</summary>
    public long? FreeBytes { get; set; }
    public DeviceMemoryPool Pool { get; }

    /// <summary>
    /// Kernel launches, matrix products and device copies issued from the host, all ops together; a graph launch is one
    /// (the ops inside it are counted per op in <see cref="Ops"/> and in <see cref="OpsInGraphs"/>).
    /// </summary>
    public long Launches { get; private set; }
    /// <summary>Graph launches (<see cref="LaunchGraph"/>), each also one of <see cref="Launches"/>.</summary>
    public long GraphLaunches { get; private set; }
    /// <summary>Ops run inside graph launches.</summary>
    public long OpsInGraphs { get; private set; }
    /// <summary>Points where the host waits for the device: <see cref="Synchronize"/> and every pageable download (<see cref="CopyToHost"/>).</summary>
    public long HostSyncs { get; private set; }
    public long Downloads { get; private set; }
    /// <summary>Of <see cref="Downloads"/>, those queued into page-locked memory without a host wait (<see cref="CopyToHostAsync"/>), and their bytes.</summary>
    public long PinnedDownloads { get; private set; }
    public long PinnedBytesToHost { get; private set; }
    /// <summary>Of <see cref="PinnedDownloads"/>, those queued on the copy stream (<see cref="CopyToHostOnCopyStream"/>), and their bytes.</summary>
    public long CopyStreamDownloads { get; private set; }
    public long CopyStreamBytesToHost { get; private set; }
    public long Uploads { get; private set; }
    public long BytesToHost { get; private set; }
    public long BytesToDevice { get; private set; }
    public IReadOnlyDictionary<string, OpLedger> Ops => ops;

    /// <summary>
    /// How far the compute stream has come: the roofline seconds of the ops counted so far, and the launches, graph
    /// nodes, pageable download bytes, pinned bytes downloaded on the compute stream and host syncs so far (the terms of
    /// a modelled time: bench gpu-plan adds its assumed cost per item).
    /// </summary>
    public readonly record struct StreamPosition(double RooflineSeconds, long Launches, long OpsInGraphs, long PageableBytesToHost,
        long ComputeStreamPinnedBytes, long HostSyncs);

    /// <summary>A download queued on the copy stream after the compute work at <paramref name="At"/> (<paramref name="Bytes"/> &gt; 0), or a host wait there (both streams).</summary>
    public readonly record struct CopyStreamMark(StreamPosition At, long Bytes, bool IsHostWait);

    /// <summary>The compute stream now.</summary>
    public StreamPosition Position => new(rooflineSeconds, Launches, OpsInGraphs, BytesToHost - PinnedBytesToHost,
        PinnedBytesToHost - CopyStreamBytesToHost, HostSyncs);

    /// <summary>Copy-stream downloads and the host waits that follow them, in order (a wait with no copy pending is not kept).</summary>
    public IReadOnlyList<CopyStreamMark> CopyStreamMarks => marks;
    readonly List<CopyStreamMark> marks = [];
    double rooflineSeconds;
    bool copiesPending;

    /// <summary>Per op: launches, FLOP, bytes moved and the roofline time (each launch max(FLOP/peak, bytes/bandwidth)).</summary>
    public sealed class OpLedger
    {
        public long Calls { get; internal set; }
        public double Flops { get; internal set; }
        public double Bytes { get; internal set; }
        public double RooflineSeconds { get; internal set; }
    }

    /// <summary>Assumed costs a roofline leaves out (not measured here): a kernel launch from the host, a node inside a CUDA
    /// graph, one host round trip, and device→host bandwidth from pageable and into page-locked memory.</summary>
    public readonly record struct TimingAssumptions(double LaunchSeconds, double GraphNodeSeconds, double SyncSeconds,
        double PageableBytesPerSecond, double PinnedBytesPerSecond);

    /// <summary>A modelled pass: its total and the parts beside the roofline (downloads on each stream; of the copy stream's, the part exposed).</summary>
    public readonly record struct ModelledTime(double Total, double Launch, double Sync, double ComputeStreamCopy, double CopyStream, double CopyStreamExposed)
    {
        public double CopyStreamHidden => CopyStream - CopyStreamExposed;
    }

    /// <summary>
    /// The modelled time of what was recorded, on two streams. The compute stream: roofline per launch plus the assumed
    /// launch, sync and compute-stream download costs, in order. The copy stream: each download starts when the compute
    /// stream has reached its event (where it was queued, later by any exposed wait before it) and the previous copy is
    /// done; a host wait that finds a copy still running waits for it: that time is exposed, the rest ran beside the
    /// compute.
    /// </summary>
    public ModelledTime Model(TimingAssumptions a)
    {
        double Compute(StreamPosition p) =>
            p.RooflineSeconds + p.Launches * a.LaunchSeconds + p.OpsInGraphs * a.GraphNodeSeconds + p.HostSyncs * a.SyncSeconds
            + p.PageableBytesToHost / a.PageableBytesPerSecond + p.ComputeStreamPinnedBytes / a.PinnedBytesPerSecond;
        double copyDone = 0, exposed = 0, copying = 0;
        foreach (var mark in marks)
        {
            double reached = Compute(mark.At) + exposed;
            if (mark.IsHostWait) exposed += Math.Max(0, copyDone - reached);
            else
            {
                double seconds = mark.Bytes / a.PinnedBytesPerSecond;
                copying += seconds;
                copyDone = Math.Max(copyDone, reached) + seconds;
            }
        }
        var end = Position;
        double compute = Compute(end);
        exposed += Math.Max(0, copyDone - (compute + exposed));   // copies no host wait followed: the pass ends when they do
        return new ModelledTime(compute + exposed, end.Launches * a.LaunchSeconds + end.OpsInGraphs * a.GraphNodeSeconds, end.HostSyncs * a.SyncSeconds,
            end.PageableBytesToHost / a.PageableBytesPerSecond + end.ComputeStreamPinnedBytes / a.PinnedBytesPerSecond, copying, exposed);
    }

    /// <summary>Forgets everything counted so far (the memory stays allocated; the peak restarts from what is in use).</summary>
    public void Reset()
    {
        ops.Clear();
        marks.Clear();
        rooflineSeconds = 0;
        copiesPending = false;
        Launches = GraphLaunches = OpsInGraphs = HostSyncs = Downloads = PinnedDownloads = PinnedBytesToHost = Uploads = BytesToHost = BytesToDevice = 0;
        CopyStreamDownloads = CopyStreamBytesToHost = 0;
        Pool.ResetPeak();
    }

    public SafeHandle Allocate(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        return bytes == 0 ? new AddressRange(0) : Pool.Rent(bytes);
    }

    SafeHandle AllocateAddressSpace(long bytes)
    {
        nint p = (nint)nextAddress;
        nextAddress += (bytes + 255) / 256 * 256;
        return new AddressRange(p);
    }

    public void CopyToDevice(nint destination, ReadOnlySpan<byte> source)
    {
        if (capture is not null) throw new InvalidOperationException("host copy while capturing a graph");
        Uploads++;
        BytesToDevice += source.Length;
    }

    public void CopyToHost(nint source, Span<byte> destination)
    {
        if (capture is not null) throw new InvalidOperationException("host copy while capturing a graph");
        WaitForCopyStream();
        Downloads++;
        HostSyncs++;
        BytesToHost += destination.Length;
        destination.Clear();
    }

    /// <summary>Zeroed native memory: a download into it writes zeros, like <see cref="CopyToHost"/>.</summary>
    public SafeHandle AllocatePinnedHost(long bytes) => new NativeHostMemory(bytes);

    /// <summary>A download without a host wait (the <see cref="Synchronize"/> that follows is the wait).</summary>
    public unsafe void CopyToHostAsync(nint destination, nint source, long bytes)
    {
        if (capture is not null) throw new InvalidOperationException("host copy while capturing a graph");
        Downloads++;
        PinnedDownloads++;
        BytesToHost += bytes;
        PinnedBytesToHost += bytes;
        NativeMemory.Clear((void*)destination, (nuint)bytes);
    }

    /// <summary>A download on the copy stream: counted as pinned, and marked where the compute stream stands now.</summary>
    public unsafe void CopyToHostOnCopyStream(nint destination, nint source, long bytes)
    {
        if (capture is not null) throw new InvalidOperationException("host copy while capturing a graph");
        if (bytes == 0) return;
        marks.Add(new CopyStreamMark(Position, bytes, IsHostWait: false));
        copiesPending = true;
        Downloads++;
        PinnedDownloads++;
        CopyStreamDownloads++;
        BytesToHost += bytes;
        PinnedBytesToHost += bytes;
        CopyStreamBytesToHost += bytes;
        NativeMemory.Clear((void*)destination, (nuint)bytes);
    }

    /// <summary>A host wait also waits for the copy stream: marked when a copy is pending there.</summary>
    void WaitForCopyStream()
    {
        if (copiesPending) marks.Add(new CopyStreamMark(Position, 0, IsHostWait: true));
        copiesPending = false;
    }

    public void CopyDeviceToDevice(nint destination, nint source, long bytes) => Record(new OpWork(0, 2.0 * bytes));

    public void Launch(string kernel, Dim3 grid, Dim3 block, int sharedBytes, ReadOnlySpan<nint> arguments) { }

    /// <summary>Every launcher of <see cref="CudaBackend"/> declares its work right after its launch.</summary>
    public void DeclareWork(OpWork work) => Record(work);

    /// <summary>2·M·N·K FLOP; bytes: A and B once (2 bytes a value under bf16, else 4) and C written (read too when β ≠ 0).</summary>
    public void Sgemm(in GemmCall c) => Record(GemmWork(c));

    /// <summary>A product's declared work (also what <see cref="CudaDevice"/>'s event-timed ranges count).</summary>
    public static OpWork GemmWork(in GemmCall c)
    {
        double operand = c.Precision == GemmPrecision.Bf16 ? 2 : 4;
        double bytes = operand * ((double)c.M * c.K + (double)c.K * c.N) + 4.0 * c.M * c.N * (c.Beta == 0f ? 1 : 2);
        return new OpWork(2.0 * c.M * c.N * c.K, bytes);
    }

    void Record(OpWork work)
    {
        if (capture is not null)
        {
            capture.Add((currentOp, work));
            return;
        }
        Launches++;
        Count(currentOp, work);
    }

    void Count(string name, OpWork work)
    {
        if (!ops.TryGetValue(name, out var op)) ops[name] = op = new OpLedger();
        op.Calls++;
        op.Flops += work.Flops;
        op.Bytes += work.Bytes;
        double seconds = Math.Max(work.Flops / H100Bf16Flops, work.Bytes / H100Bytes);
        op.RooflineSeconds += seconds;
        rooflineSeconds += seconds;
    }

    List<(string Op, OpWork Work)>? capture;

    public bool SupportsGraphs => true;

    /// <summary>Until <see cref="EndCapture"/>, launches are kept in the graph instead of counted.</summary>
    public void BeginCapture()
    {
        if (capture is not null) throw new InvalidOperationException("already capturing");
        capture = [];
    }

    public IDisposable EndCapture()
    {
        var graph = new RecordedGraph(capture ?? throw new InvalidOperationException("EndCapture without BeginCapture"));
        capture = null;
        return graph;
    }

    /// <summary>One launch; each op inside is counted under the range it was captured in.</summary>
    public void LaunchGraph(IDisposable graph)
    {
        var g = (RecordedGraph)graph;
        Launches++;
        GraphLaunches++;
        foreach (var (name, work) in g.Ops) Count(name, work);
        OpsInGraphs += g.Ops.Count;
    }

    sealed class RecordedGraph(List<(string Op, OpWork Work)> ops) : IDisposable
    {
        public List<(string Op, OpWork Work)> Ops { get; } = ops;
        public void Dispose() { }
    }

    public void Synchronize()
    {
        if (capture is not null) throw new InvalidOperationException("Synchronize while capturing a graph");
        WaitForCopyStream();
        HostSyncs++;
    }

    public void PushRange(string name)
    {
        ranges.Push(name);
        currentOp = name;
    }

    public void PopRange()
    {
        ranges.Pop();
        currentOp = ranges.TryPeek(out var outer) ? outer : "(no range)";
    }

    public void Dispose() => Pool.Dispose();

    /// <summary>An address with nothing behind it.</summary>
    sealed class AddressRange : SafeHandle
    {
        public AddressRange(nint p) : base(0, true) => SetHandle(p);
        public override bool IsInvalid => handle == 0;
        protected override bool ReleaseHandle() => true;
    }
}
