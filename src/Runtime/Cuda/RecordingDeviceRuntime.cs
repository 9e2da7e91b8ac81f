using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// An <see cref="IDeviceRuntime"/> that executes nothing and keeps the ledger a GPU run would produce: per NVTX range
/// (op), the kernel launches and matrix products with their declared FLOP and bytes (<see cref="OpWork"/>; a product's
/// from its <see cref="GemmCall"/>), and over the whole run the host synchronisations and host↔device copy bytes.
/// Memory is address space only (a bump counter behind a <see cref="DeviceMemoryPool"/>, so the pool's high-water mark
/// is the run's), so the ledger of a Llama-3.1-8B-shaped pass is had on a laptop: <c>bench gpu-plan</c> prints it
/// with a roofline time. Downloads write zeros: code that branches on downloaded values sees zeros.
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
    public long Uploads { get; private set; }
    public long BytesToHost { get; private set; }
    public long BytesToDevice { get; private set; }
    public IReadOnlyDictionary<string, OpLedger> Ops => ops;

    /// <summary>Per op: launches, FLOP, bytes moved and the roofline time (each launch max(FLOP/peak, bytes/bandwidth)).</summary>
    public sealed class OpLedger
    {
        public long Calls { get; internal set; }
        public double Flops { get; internal set; }
        public double Bytes { get; internal set; }
        public double RooflineSeconds { get; internal set; }
    }

    /// <summary>Forgets everything counted so far (the memory stays allocated; the peak restarts from what is in use).</summary>
    public void Reset()
    {
        ops.Clear();
        Launches = GraphLaunches = OpsInGraphs = HostSyncs = Downloads = PinnedDownloads = PinnedBytesToHost = Uploads = BytesToHost = BytesToDevice = 0;
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
        op.RooflineSeconds += Math.Max(work.Flops / H100Bf16Flops, work.Bytes / H100Bytes);
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
