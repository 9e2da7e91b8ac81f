using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Runs repeated work as CUDA Graphs over any <see cref="IDeviceRuntime"/> that can capture one. The work between two
/// host waits (a download or <see cref="Synchronize"/>) is a segment; its launches, products, device copies, small
/// uploads and ranges are held here, not issued, until the wait. Then the segment is compared with the segments seen
/// before — kernel, launch shape, every argument byte, product, copy and range: a segment seen for the first time is
/// issued op by op and remembered; the second time it is captured into a graph and launched; from then on it is one
/// graph launch. A fixed-shape pass (same shapes, and the pool handing out the same blocks in the same order) repeats
/// every segment, so its ~4,000 launches become one per segment. Comparing every byte is what makes replay safe: a
/// segment whose sizes or buffers differ is simply issued op by op again, exactly as without this runtime.
/// Uploads inside a segment (token ids, row lists: their bytes change from pass to pass, their destination and length
/// must not) are written to a staging buffer of the graph just before it is launched, and the graph copies them on
/// the device, in order.
/// Needs the inner runtime's <see cref="DeviceMemoryPool"/>: a block freed while held ops still use it stays allocated
/// in the pool (and the pool's <see cref="DeviceMemoryPool.Trim"/> issues the held ops first). Without a pool it
/// passes everything straight through.
/// </summary>
internal sealed class GraphReplayRuntime : IDeviceRuntime
{
    /// <summary>Uploads larger than this (weights) are not held: they end the segment and go straight through.</summary>
    public const int MaxHeldUploadBytes = 64 * 1024;
    /// <summary>Segments remembered at most; the cache starts over when full (a workload that never repeats).</summary>
    public const int MaxSegments = 4096;

    readonly IDeviceRuntime inner;
    readonly DeviceMemoryPool? pool;
    readonly bool ownsInner;
    readonly List<Op> pending = [];
    readonly Dictionary<int, List<Segment>> segments = [];
    readonly Dictionary<string, int[]?> argumentSizes = [];
    int segmentCount;
    bool warned;

    /// <param name="inner">The runtime that runs the ops, one by one or as replayed graphs.</param>
    /// <param name="pool">The pool <paramref name="inner"/> allocates from; null turns graphs off (pass-through).</param>
    /// <param name="ownsInner">Whether disposing this runtime disposes <paramref name="inner"/>.</param>
    public GraphReplayRuntime(IDeviceRuntime inner, DeviceMemoryPool? pool, bool ownsInner = true)
    {
        this.inner = inner;
        this.pool = pool;
        this.ownsInner = ownsInner;
        Enabled = pool is not null && inner.SupportsGraphs;
        if (pool is not null) pool.BeforeTrim += IssuePendingOneByOne;
    }

    /// <summary>False when graphs are off: no pool, a runtime that cannot capture, or a capture that failed (warned once).</summary>
    public bool Enabled { get; private set; }
    public IDeviceRuntime Inner => inner;
    public string Name => inner.Name;

    /// <summary>Segments run as one graph launch (captured now or replayed).</summary>
    public long GraphLaunches { get; private set; }
    /// <summary>Distinct segments remembered (issued op by op once).</summary>
    public int SegmentsRemembered => segmentCount;
    /// <summary>Segments captured into a graph.</summary>
    public long Captures { get; private set; }
    /// <summary>Launches, products and copies issued one by one (segments not (yet) replayed, and pass-through work).</summary>
    public long OpsIssuedOneByOne { get; private set; }
    /// <summary>Launches, products and copies that ran inside a graph launch.</summary>
    public long OpsInGraphs { get; private set; }

    public SafeHandle Allocate(long bytes) => inner.Allocate(bytes);

    public void CopyToDevice(nint destination, ReadOnlySpan<byte> source)
    {
        if (!Enabled || source.Length > MaxHeldUploadBytes)
        {
            Flush();
            inner.CopyToDevice(destination, source);
            return;
        }
        pending.Add(new Op(OpKind.Upload) { Destination = destination, Bytes = source.Length, Data = source.ToArray() });
    }

    public void CopyToHost(nint source, Span<byte> destination)
    {
        Flush();
        inner.CopyToHost(source, destination);
    }

    public SafeHandle AllocatePinnedHost(long bytes) => inner.AllocatePinnedHost(bytes);

    /// <summary>Ends the segment like any download (the copy is not captured: its destination is host memory the caller reads after the wait).</summary>
    public void CopyToHostAsync(nint destination, nint source, long bytes)
    {
        Flush();
        inner.CopyToHostAsync(destination, source, bytes);
    }

    /// <summary>Ends the segment, so the copy's event follows the work it reads (the copy is not captured either).</summary>
    public void CopyToHostOnCopyStream(nint destination, nint source, long bytes)
    {
        Flush();
        inner.CopyToHostOnCopyStream(destination, source, bytes);
    }

    public void CopyDeviceToDevice(nint destination, nint source, long bytes)
    {
        if (bytes == 0) return;
        if (!Enabled) { inner.CopyDeviceToDevice(destination, source, bytes); OpsIssuedOneByOne++; return; }
        pending.Add(new Op(OpKind.DeviceCopy) { Destination = destination, Source = source, Bytes = bytes });
    }

    public unsafe void Launch(string kernel, Dim3 grid, Dim3 block, int sharedBytes, ReadOnlySpan<nint> arguments)
    {
        int[]? sizes = Enabled ? ArgumentSizes(kernel) : null;
        if (sizes is null || sizes.Length != arguments.Length)
        {
            // A kernel whose parameter layout was never declared (Kernel.Declare) cannot be copied: straight through.
            Flush();
            inner.Launch(kernel, grid, block, sharedBytes, arguments);
            OpsIssuedOneByOne++;
            return;
        }
        var values = new byte[8 * arguments.Length];   // one 8-byte slot per parameter, as KernelArgs packs them
        for (int i = 0; i < arguments.Length; i++)
            new ReadOnlySpan<byte>((void*)arguments[i], sizes[i]).CopyTo(values.AsSpan(8 * i));
        pending.Add(new Op(OpKind.Kernel) { Name = kernel, Grid = grid, Block = block, Shared = sharedBytes, Data = values });
    }

    public void DeclareWork(OpWork work)
    {
        if (pending.Count > 0 && pending[^1].Kind is OpKind.Kernel or OpKind.Gemm && pending[^1].Work is null) pending[^1].Work = work;
        else inner.DeclareWork(work);
    }

    public void Sgemm(in GemmCall call)
    {
        if (!Enabled) { inner.Sgemm(call); OpsIssuedOneByOne++; return; }
        pending.Add(new Op(OpKind.Gemm) { Gemm = call });
    }

    public void Synchronize()
    {
        Flush();
        inner.Synchronize();
    }

    public void PushRange(string name)
    {
        if (Enabled) pending.Add(new Op(OpKind.PushRange) { Name = name });
        else inner.PushRange(name);
    }

    public void PopRange()
    {
        if (Enabled) pending.Add(new Op(OpKind.PopRange));
        else inner.PopRange();
    }

    /// <summary>Issues the held segment: as a graph when it repeats one seen before, else op by op (and remembers it).</summary>
    public void Flush()
    {
        if (pending.Count == 0) return;
        if (pending.All(o => o.Kind is OpKind.PushRange or OpKind.PopRange))   // no device work: nothing to replay
        {
            IssuePendingOneByOne();
            return;
        }
        int hash = Hash(pending);
        var match = segments.TryGetValue(hash, out var list) ? list.FirstOrDefault(s => Same(s.Ops, pending)) : null;
        if (match is null)
        {
            Remember(hash);
            IssuePendingOneByOne();
            return;
        }
        try
        {
            if (match.Graph is null) Capture(match);
            Replay(match);
        }
        catch (Exception e) when (e is CudaException or NotSupportedException or InvalidOperationException)
        {
            if (!warned) Console.Error.WriteLine($"warning: CUDA graph capture/replay failed ({e.Message.ReplaceLineEndings(" ")}); running op by op from now on");
            warned = true;
            Enabled = false;
            DropSegments();
            IssuePendingOneByOne();
            return;
        }
        pending.Clear();
    }

    void Remember(int hash)
    {
        if (segmentCount >= MaxSegments) DropSegments();
        if (!segments.TryGetValue(hash, out var list)) segments[hash] = list = [];
        list.Add(new Segment(pending.Select(o => o.Kind == OpKind.Upload ? o with { Data = null } : o).ToArray()));
        segmentCount++;
    }

    void Capture(Segment s)
    {
        var uploads = s.Ops.Where(o => o.Kind == OpKind.Upload).ToList();
        s.Staging = uploads.Select(o => StagingBytes(o.Bytes)).ToArray();
        inner.BeginCapture();
        try
        {
            int u = 0;
            foreach (var op in s.Ops) Issue(op, op.Kind == OpKind.Upload ? s.Staging[u++] : 0, capturing: true);
        }
        catch
        {
            try { inner.EndCapture().Dispose(); } catch (Exception e) when (e is CudaException or InvalidOperationException) { /* the first error is the one to report */ }
            throw;
        }
        s.Graph = inner.EndCapture();
        Captures++;
    }

    void Replay(Segment s)
    {
        int u = 0;
        foreach (var op in pending)   // this pass's upload bytes, into the graph's staging buffers
            if (op.Kind == OpKind.Upload) inner.CopyToDevice(s.Staging![u++], op.Data);
        inner.PushRange("graph");
        inner.LaunchGraph(s.Graph!);
        inner.PopRange();
        GraphLaunches++;
        OpsInGraphs += s.Ops.Count(o => o.Kind is OpKind.Kernel or OpKind.Gemm or OpKind.DeviceCopy or OpKind.Upload);
    }

    void IssuePendingOneByOne()
    {
        foreach (var op in pending) Issue(op, 0);
        pending.Clear();
    }

    /// <param name="op">The recorded op to issue on the inner runtime.</param>
    /// <param name="staging">For an upload inside a capture: the staging buffer the graph copies from.</param>
    /// <param name="capturing">True while a graph is being captured: the op is not counted as issued one by one.</param>
    unsafe void Issue(Op op, nint staging, bool capturing = false)
    {
        switch (op.Kind)
        {
            case OpKind.Kernel:
                Span<nint> pointers = stackalloc nint[op.Data!.Length / 8];
                fixed (byte* v = op.Data)
                {
                    for (int i = 0; i < pointers.Length; i++) pointers[i] = (nint)(v + 8 * i);
                    inner.Launch(op.Name!, op.Grid, op.Block, op.Shared, pointers);
                }
                if (op.Work is { } work) inner.DeclareWork(work);
                break;
            case OpKind.Gemm:
                inner.Sgemm(op.Gemm);
                if (op.Work is { } gemmWork) inner.DeclareWork(gemmWork);
                break;
            case OpKind.DeviceCopy: inner.CopyDeviceToDevice(op.Destination, op.Source, op.Bytes); break;
            case OpKind.Upload:
                if (staging != 0) inner.CopyDeviceToDevice(op.Destination, staging, op.Bytes);
                else inner.CopyToDevice(op.Destination, op.Data);
                break;
            case OpKind.PushRange: inner.PushRange(op.Name!); return;
            case OpKind.PopRange: inner.PopRange(); return;
        }
        if (!capturing) OpsIssuedOneByOne++;
    }

    // Staging for the uploads of captured graphs: bump-allocated from chunks taken outside the pool's cache
    // (DeviceMemoryPool.RentOutsideCache), never a cached block: a capture runs when its segment is issued, and a cached
    // block could be one the segment's own ops still use, and taking one changes which blocks the following passes get
    // (at 8B width the 4 MiB class is attention's score tensor), so their segments would never repeat.
    const long StagingChunkBytes = 4L << 20;
    readonly List<SafeHandle> stagingChunks = [];
    long stagingUsed, stagingCapacity;

    nint StagingBytes(long bytes)
    {
        long size = (bytes + 255) / 256 * 256;
        if (stagingChunks.Count == 0 || stagingUsed + size > stagingCapacity)
        {
            stagingCapacity = Math.Max(StagingChunkBytes, size);
            stagingChunks.Add(pool!.RentOutsideCache(stagingCapacity));
            stagingUsed = 0;
        }
        nint p = stagingChunks[^1].DangerousGetHandle() + (nint)stagingUsed;
        stagingUsed += size;
        return p;
    }

    int[]? ArgumentSizes(string kernel)
    {
        if (!argumentSizes.TryGetValue(kernel, out var sizes))
            argumentSizes[kernel] = sizes = Kernel.Signatures.TryGetValue(kernel, out var sig) ? sig.Select(p => p.Size).ToArray() : null;
        return sizes;
    }

    static int Hash(List<Op> ops)
    {
        var h = new HashCode();
        foreach (var o in ops)
        {
            h.Add(o.Kind); h.Add(o.Name); h.Add(o.Destination); h.Add(o.Source); h.Add(o.Bytes); h.Add(o.Grid); h.Add(o.Block);
            if (o.Kind == OpKind.Kernel) h.AddBytes(o.Data);
            if (o.Kind == OpKind.Gemm) h.Add(o.Gemm);
        }
        return h.ToHashCode();
    }

    /// <summary>The same work: everything but the bytes of uploads (which a replay writes to staging first).</summary>
    static bool Same(Op[] a, List<Op> b)
    {
        if (a.Length != b.Count) return false;
        for (int i = 0; i < a.Length; i++)
        {
            Op x = a[i], y = b[i];
            if (x.Kind != y.Kind || x.Name != y.Name || x.Destination != y.Destination || x.Source != y.Source || x.Bytes != y.Bytes
                || x.Grid != y.Grid || x.Block != y.Block || x.Shared != y.Shared || x.Gemm != y.Gemm) return false;
            if (x.Kind == OpKind.Kernel && !x.Data.AsSpan().SequenceEqual(y.Data)) return false;
        }
        return true;
    }

    void DropSegments()
    {
        if (segments.Count > 0) inner.Synchronize();   // graphs and staging buffers may still be in use on the stream
        foreach (var s in segments.Values.SelectMany(l => l)) s.Graph?.Dispose();
        foreach (var chunk in stagingChunks) chunk.Dispose();
        stagingChunks.Clear();
        stagingUsed = stagingCapacity = 0;
        segments.Clear();
        segmentCount = 0;
    }

    public void Dispose()
    {
        try { Flush(); } finally { DropSegments(); if (ownsInner) inner.Dispose(); }
    }

    enum OpKind { Kernel, Gemm, DeviceCopy, Upload, PushRange, PopRange }

    sealed record Op(OpKind Kind)
    {
        public string? Name { get; init; }
        public Dim3 Grid { get; init; }
        public Dim3 Block { get; init; }
        public int Shared { get; init; }
        /// <summary>Kernel: the parameter values in 8-byte slots; upload: the bytes to copy.</summary>
        public byte[]? Data { get; init; }
        public GemmCall Gemm { get; init; }
        public nint Destination { get; init; }
        public nint Source { get; init; }
        public long Bytes { get; init; }
        public OpWork? Work { get; set; }
    }

    sealed class Segment(Op[] ops)
    {
        public Op[] Ops { get; } = ops;
        public IDisposable? Graph { get; set; }
        public nint[]? Staging { get; set; }
    }
}
