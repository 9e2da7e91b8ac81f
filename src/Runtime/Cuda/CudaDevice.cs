using System.Runtime.InteropServices;
using System.Text;
using NeuronTrace.Runtime.Cuda.Native;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// One GPU, ready to run NeuronTrace's kernels: its primary context, a stream, the PTX modules and a cuBLAS handle.
/// Open with <see cref="TryOpen(out string)"/>, which never throws: on a machine without a driver or device it
/// returns null and a one-line reason. All work goes to one stream, in order; copies to and from the host wait for
/// it. Not thread-safe (one thread at a time; the context is made current on whichever thread calls).
/// </summary>
internal sealed unsafe partial class CudaDevice : IDeviceRuntime
{
    readonly CudaContextHandle context;
    readonly CudaStreamHandle stream;
    readonly CublasHandle cublas;
    readonly List<(string File, CudaModuleHandle Module)> modules = [];
    readonly Dictionary<string, CudaModuleHandle> moduleOfKernel = [];
    readonly Dictionary<string, nint> functions = [];
    readonly Dictionary<string, byte[]> rangeNames = [];
    readonly DeviceMemoryPool pool;

    CudaDevice(int ordinal, CudaContextHandle context, CudaStreamHandle stream, CublasHandle cublas)
    {
        Ordinal = ordinal;
        this.context = context;
        this.stream = stream;
        this.cublas = cublas;
        pool = new DeviceMemoryPool(AllocateRaw);
    }

    /// <summary>The caching allocator behind <see cref="Allocate"/> (for statistics and <see cref="DeviceMemoryPool.Trim"/>).</summary>
    public DeviceMemoryPool MemoryPool => pool;

    public int Ordinal { get; }
    public string Name { get; private set; } = "";
    public (int Major, int Minor) ComputeCapability { get; private set; }
    public int MultiprocessorCount { get; private set; }
    public long TotalMemory { get; private set; }
    public int DriverVersion { get; private set; }
    /// <summary>What the host asked of the device so far (the GPU benchmark's per-pass counts; the same as <see cref="RecordingDeviceRuntime"/>'s): kernel launches and products and graph launches, stream waits, downloads (pinned ones among them) and uploads, and their bytes.</summary>
    public long Launches { get; private set; }
    public long GraphLaunches { get; private set; }
    public long HostSyncs { get; private set; }
    public long Downloads { get; private set; }
    public long PinnedDownloads { get; private set; }
    /// <summary>Of <see cref="PinnedDownloads"/>, those on the copy stream (<see cref="CopyToHostOnCopyStream"/>).</summary>
    public long CopyStreamDownloads { get; private set; }
    public long Uploads { get; private set; }
    public long BytesToHost { get; private set; }
    public long BytesToDevice { get; private set; }

    /// <summary>The folder the PTX modules were loaded from.</summary>
    public string PtxDirectory { get; private set; } = "";

    /// <summary>The driver's free bytes on this device plus the idle (cached) blocks of <see cref="MemoryPool"/>.</summary>
    public long? FreeBytes
    {
        get
        {
            context.MakeCurrent();
            nuint free, total;
            CudaException.Check(CudaDriver.cuMemGetInfo_v2(&free, &total), "cuMemGetInfo_v2");
            return (long)free + pool.CachedBytes;
        }
    }

    /// <summary>
    /// Free and total bytes of device <paramref name="ordinal"/> without opening it (no PTX, no cuBLAS: the primary
    /// context is retained for the query and released), so a run can be planned before its weights are read; false
    /// with a one-line <paramref name="whyNot"/> when there is no driver or no such device. Never throws for those.
    /// </summary>
    public static bool TryQueryMemory(int ordinal, out long free, out long total, out string whyNot)
    {
        free = total = 0;
        if (!NativeLibrary.TryLoad(CudaDriver.Library, out _))
        {
            whyNot = $"no CUDA driver: {CudaDriver.Library} cannot be loaded (no NVIDIA driver on this machine)";
            return false;
        }
        try
        {
            int r = CudaDriver.cuInit(0);
            if (r != CudaDriver.Success) { whyNot = Describe("cuInit", r); return false; }
            int count, device;
            CudaException.Check(CudaDriver.cuDeviceGetCount(&count), "cuDeviceGetCount");
            if (ordinal < 0 || ordinal >= count) { whyNot = $"no CUDA device {ordinal} (the driver reports {count})"; return false; }
            CudaException.Check(CudaDriver.cuDeviceGet(&device, ordinal), "cuDeviceGet");
            nint ctx;
            CudaException.Check(CudaDriver.cuDevicePrimaryCtxRetain(&ctx, device), "cuDevicePrimaryCtxRetain");
            using var context = new CudaContextHandle(ctx, device);
            context.MakeCurrent();
            nuint f, t;
            CudaException.Check(CudaDriver.cuMemGetInfo_v2(&f, &t), "cuMemGetInfo_v2");
            (free, total, whyNot) = ((long)f, (long)t, "");
            return true;
        }
        catch (Exception e)
        {
            whyNot = (e is CudaException ? e.Message : $"{e.GetType().Name}: {e.Message}").ReplaceLineEndings(" ");
            return false;
        }
    }

    /// <summary>Opens device 0 with the PTX found by <see cref="PtxLocator"/>.</summary>
    public static CudaDevice? TryOpen(out string whyNot) => TryOpen(0, null, out whyNot);

    /// <summary>
    /// Opens device <paramref name="ordinal"/> and loads the PTX modules; null with a one-line
    /// <paramref name="whyNot"/> when there is no driver, no such device, no cuBLAS or no PTX. Never throws for those.
    /// </summary>
    public static CudaDevice? TryOpen(int ordinal, string? ptxDirectory, out string whyNot)
    {
        if (!NativeLibrary.TryLoad(CudaDriver.Library, out _))
        {
            whyNot = $"no CUDA driver: {CudaDriver.Library} cannot be loaded (no NVIDIA driver on this machine)";
            return null;
        }
        CudaContextHandle? context = null;
        CudaStreamHandle? stream = null;
        CublasHandle? cublas = null;
        CudaDevice? opened = null;
        try
        {
            int r = CudaDriver.cuInit(0);
            if (r != CudaDriver.Success) { whyNot = Describe("cuInit", r); return null; }
            int count, device, version;
            CudaException.Check(CudaDriver.cuDeviceGetCount(&count), "cuDeviceGetCount");
            if (count == 0) { whyNot = "the CUDA driver reports no device"; return null; }
            if (ordinal < 0 || ordinal >= count) { whyNot = $"no CUDA device {ordinal} (the driver reports {count})"; return null; }
            CudaException.Check(CudaDriver.cuDriverGetVersion(&version), "cuDriverGetVersion");
            CudaException.Check(CudaDriver.cuDeviceGet(&device, ordinal), "cuDeviceGet");

            if (!NativeLibraries.TryLoad(Cublas.Library, out string tried)) { whyNot = $"cuBLAS not found (tried {tried})"; return null; }
            string? dir = PtxLocator.Find(ptxDirectory, out string searched);
            if (dir is null) { whyNot = $"no PTX modules found (looked in {searched}); run native/build.sh or set {PtxLocator.EnvironmentVariable}"; return null; }

            nint ctx;
            CudaException.Check(CudaDriver.cuDevicePrimaryCtxRetain(&ctx, device), "cuDevicePrimaryCtxRetain");
            context = new CudaContextHandle(ctx, device);
            context.MakeCurrent();
            nint s;
            CudaException.Check(CudaDriver.cuStreamCreate(&s, 0), "cuStreamCreate");  // 0: ordered with the legacy default stream
            stream = new CudaStreamHandle(context, s);
            nint h;
            CudaException.CheckCublas(Cublas.cublasCreate_v2(&h), "cublasCreate_v2");
            cublas = new CublasHandle(context, h);
            CudaException.CheckCublas(Cublas.cublasSetStream_v2(h, s), "cublasSetStream_v2");

            opened = new CudaDevice(ordinal, context, stream, cublas) { DriverVersion = version, PtxDirectory = dir };
            opened.ReadProperties(device);
            opened.LoadModules(dir);
            whyNot = "";
            return opened;
        }
        catch (Exception e)  // TryOpen's promise is a reason, never an exception: a broken install is a reason too
        {
            if (opened is not null) foreach (var (_, module) in opened.modules) module.Dispose();
            cublas?.Dispose();
            stream?.Dispose();
            context?.Dispose();
            whyNot = (e is CudaException ? e.Message : $"{e.GetType().Name}: {e.Message}").ReplaceLineEndings(" ");
            return null;
        }
    }

    static string Describe(string call, int result) => CudaException.FromDriver(result, call).Message;

    void ReadProperties(int device)
    {
        byte* name = stackalloc byte[256];
        CudaException.Check(CudaDriver.cuDeviceGetName(name, 256, device), "cuDeviceGetName");
        Name = new string((sbyte*)name);
        int major, minor, sms;
        CudaException.Check(CudaDriver.cuDeviceGetAttribute(&major, CudaDriver.AttributeComputeCapabilityMajor, device), "cuDeviceGetAttribute");
        CudaException.Check(CudaDriver.cuDeviceGetAttribute(&minor, CudaDriver.AttributeComputeCapabilityMinor, device), "cuDeviceGetAttribute");
        CudaException.Check(CudaDriver.cuDeviceGetAttribute(&sms, CudaDriver.AttributeMultiprocessorCount, device), "cuDeviceGetAttribute");
        nuint bytes;
        CudaException.Check(CudaDriver.cuDeviceTotalMem_v2(&bytes, device), "cuDeviceTotalMem_v2");
        ComputeCapability = (major, minor);
        MultiprocessorCount = sms;
        TotalMemory = (long)bytes;
    }

    void LoadModules(string dir)
    {
        foreach (string file in Directory.EnumerateFiles(dir, "*.ptx").Order())
        {
            byte[] text = File.ReadAllBytes(file);
            var image = new byte[text.Length + 1];  // the driver reads PTX up to a NUL
            text.CopyTo(image, 0);
            nint module;
            fixed (byte* p = image)
            {
                int r = CudaDriver.cuModuleLoadData(&module, p);
                if (r != CudaDriver.Success) throw CudaException.FromDriver(r, $"cuModuleLoadData({Path.GetFileName(file)})");
            }
            var handle = new CudaModuleHandle(context, module);
            modules.Add((file, handle));
            foreach (string kernel in PtxEntries.Names(Encoding.ASCII.GetString(text))) moduleOfKernel[kernel] = handle;
        }
    }

    nint Function(string kernel)
    {
        if (functions.TryGetValue(kernel, out nint f)) return f;
        // Looked up in the one module whose PTX declares it: probing every module would make the driver report
        // "named symbol not found" errors that compute-sanitizer counts.
        if (!moduleOfKernel.TryGetValue(kernel, out var module))
            throw new InvalidOperationException($"kernel {kernel} is in none of the PTX modules in {PtxDirectory}; rebuild them (native/build.sh)");
        byte[] name = Encoding.ASCII.GetBytes(kernel + "\0");
        fixed (byte* n = name) CudaException.Check(CudaDriver.cuModuleGetFunction(&f, module.DangerousGetHandle(), n), $"cuModuleGetFunction({kernel})");
        functions[kernel] = f;
        return f;
    }

    /// <summary>
    /// From the caching pool: no cuMemAlloc (nor the device-wide synchronisation of cuMemFree) per tensor. With
    /// $NEURONTRACE_CUDA_POOL=off every buffer is its own exact-size cuMemAlloc, so compute-sanitizer's memcheck sees
    /// an access past a tensor's end (inside a pooled block it would not).
    /// </summary>
    public SafeHandle Allocate(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (bytes == 0) return new CudaMemoryHandle(context, 0);
        if (PoolDisabled)
            return AllocateRaw(bytes) ?? throw CudaException.FromDriver(CudaDriver.ErrorOutOfMemory, $"cuMemAlloc_v2({bytes} bytes)");
        return pool.Rent(bytes);
    }

    internal static readonly bool PoolDisabled =
        string.Equals(Environment.GetEnvironmentVariable("NEURONTRACE_CUDA_POOL"), "off", StringComparison.OrdinalIgnoreCase);

    SafeHandle? AllocateRaw(long bytes)
    {
        context.MakeCurrent();
        ulong p;
        int r = CudaDriver.cuMemAlloc_v2(&p, (nuint)bytes);
        if (r == CudaDriver.ErrorOutOfMemory) return null;   // the pool frees its cache and tries again
        CudaException.Check(r, $"cuMemAlloc_v2({bytes} bytes)");
        return new CudaMemoryHandle(context, p);
    }

    // Uploads and device copies go on our stream, in order with the kernels (an upload cannot overwrite a buffer a
    // queued kernel still reads), without the host waiting: from pageable memory cuMemcpyHtoDAsync returns once the
    // driver has staged the bytes, so the caller may reuse them at once (CUDA driver API, "API synchronization behavior").
    public void CopyToDevice(nint destination, ReadOnlySpan<byte> source)
    {
        if (source.IsEmpty) return;
        context.MakeCurrent();
        Uploads++;
        BytesToDevice += source.Length;
        fixed (byte* s = source)
            CudaException.Check(CudaDriver.cuMemcpyHtoDAsync_v2((ulong)destination, s, (nuint)source.Length, stream.DangerousGetHandle()), "cuMemcpyHtoDAsync_v2");
    }

    public void CopyToHost(nint source, Span<byte> destination)
    {
        if (destination.IsEmpty) return;
        Synchronize();
        Downloads++;
        BytesToHost += destination.Length;
        fixed (byte* d = destination)
            CudaException.Check(CudaDriver.cuMemcpyDtoH_v2(d, (ulong)source, (nuint)destination.Length), "cuMemcpyDtoH_v2");
    }

    public SafeHandle AllocatePinnedHost(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        context.MakeCurrent();
        void* p;
        CudaException.Check(CudaDriver.cuMemHostAlloc(&p, (nuint)bytes, 0), $"cuMemHostAlloc({bytes} bytes)");
        return new CudaPinnedHostHandle(context, (nint)p);
    }

    // Into page-locked memory the copy engine writes directly and the call returns at once (the stream orders it after
    // the kernels that produce the bytes); Synchronize is the one wait.
    public void CopyToHostAsync(nint destination, nint source, long bytes)
    {
        if (bytes == 0) return;
        context.MakeCurrent();
        Downloads++;
        PinnedDownloads++;
        BytesToHost += bytes;
        CudaException.Check(CudaDriver.cuMemcpyDtoHAsync_v2((void*)destination, (ulong)source, (nuint)bytes, stream.DangerousGetHandle()), "cuMemcpyDtoHAsync_v2");
    }

    // The copy stream (made on first use) and the one event that orders its copies after the compute stream's work:
    // cuStreamWaitEvent waits for the event's latest record as of the call, so the event is recorded again per copy.
    CudaStreamHandle? copyStream;
    CudaEventHandle? computeReached;
    bool copyStreamPending;

    public void CopyToHostOnCopyStream(nint destination, nint source, long bytes)
    {
        if (bytes == 0) return;
        context.MakeCurrent();
        if (copyStream is null)
        {
            nint s, e;
            CudaException.Check(CudaDriver.cuStreamCreate(&s, 0), "cuStreamCreate (copy stream)");
            copyStream = new CudaStreamHandle(context, s);
            CudaException.Check(CudaDriver.cuEventCreate(&e, CudaDriver.EventDisableTiming), "cuEventCreate");
            computeReached = new CudaEventHandle(context, e);
        }
        Downloads++;
        PinnedDownloads++;
        CopyStreamDownloads++;
        BytesToHost += bytes;
        nint ev = computeReached!.DangerousGetHandle(), cs = copyStream.DangerousGetHandle();
        CudaException.Check(CudaDriver.cuEventRecord(ev, stream.DangerousGetHandle()), "cuEventRecord");
        CudaException.Check(CudaDriver.cuStreamWaitEvent(cs, ev, 0), "cuStreamWaitEvent");
        CudaException.Check(CudaDriver.cuMemcpyDtoHAsync_v2((void*)destination, (ulong)source, (nuint)bytes, cs), "cuMemcpyDtoHAsync_v2 (copy stream)");
        copyStreamPending = true;
    }

    public void CopyDeviceToDevice(nint destination, nint source, long bytes)
    {
        if (bytes == 0) return;
        context.MakeCurrent();
        Launches++;
        if (TimeRanges) DeclareWork(new OpWork(0, 2.0 * bytes));
        CudaException.Check(CudaDriver.cuMemcpyDtoDAsync_v2((ulong)destination, (ulong)source, (nuint)bytes, stream.DangerousGetHandle()), "cuMemcpyDtoDAsync_v2");
    }

    public void Launch(string kernel, Dim3 grid, Dim3 block, int sharedBytes, ReadOnlySpan<nint> arguments)
    {
        context.MakeCurrent();
        Launches++;
        nint f = Function(kernel);
        fixed (nint* args = arguments)
        {
            int r = CudaDriver.cuLaunchKernel(f, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)sharedBytes,
                stream.DangerousGetHandle(), (void**)args, null);
            if (r != CudaDriver.Success) throw CudaException.FromDriver(r, $"cuLaunchKernel({kernel}, grid {grid}, block {block}, {sharedBytes} B shared)");
        }
    }

    public void Sgemm(in GemmCall c)
    {
        context.MakeCurrent();
        Launches++;
        if (TimeRanges) DeclareWork(RecordingDeviceRuntime.GemmWork(c));
        float alpha = c.Alpha, beta = c.Beta;
        if (c.Precision != GemmPrecision.Fp32)
        {
            // TF32: fp32 operands, tensor-core compute type. Bf16: A and B hold bf16 values (see CudaBackend.Gemm),
            // fp32 compute. C is fp32 either way.
            var (inputType, compute) = c.Precision == GemmPrecision.Bf16
                ? (Cublas.DataTypeR16BF, Cublas.ComputeType32F)
                : (Cublas.DataTypeR32F, Cublas.ComputeType32FFastTf32);
            CudaException.CheckCublas(Cublas.cublasGemmEx(cublas.DangerousGetHandle(),
                c.TransposeA ? Cublas.OpT : Cublas.OpN, c.TransposeB ? Cublas.OpT : Cublas.OpN, c.M, c.N, c.K,
                &alpha, (ulong)c.A, inputType, c.Lda, (ulong)c.B, inputType, c.Ldb,
                &beta, (ulong)c.C, Cublas.DataTypeR32F, c.Ldc, compute, Cublas.GemmDefault),
                $"cublasGemmEx({c.Precision}, m={c.M}, n={c.N}, k={c.K})");
            return;
        }
        CudaException.CheckCublas(Cublas.cublasSgemm_v2(cublas.DangerousGetHandle(),
            c.TransposeA ? Cublas.OpT : Cublas.OpN, c.TransposeB ? Cublas.OpT : Cublas.OpN, c.M, c.N, c.K,
            &alpha, (ulong)c.A, c.Lda, (ulong)c.B, c.Ldb, &beta, (ulong)c.C, c.Ldc), $"cublasSgemm_v2(m={c.M}, n={c.N}, k={c.K})");
    }

    public void Synchronize()
    {
        context.MakeCurrent();
        HostSyncs++;
        CudaException.Check(CudaDriver.cuStreamSynchronize(stream.DangerousGetHandle()), "cuStreamSynchronize");
        if (copyStreamPending)
        {
            // The copies wait for compute work the wait above has seen finish: this only waits for the copies' own tail.
            CudaException.Check(CudaDriver.cuStreamSynchronize(copyStream!.DangerousGetHandle()), "cuStreamSynchronize (copy stream)");
            copyStreamPending = false;
        }
    }

    /// <summary>GPU time of <paramref name="work"/> in milliseconds, between two events recorded on the stream.</summary>
    public float Time(Action work)
    {
        context.MakeCurrent();
        nint a, b;
        CudaException.Check(CudaDriver.cuEventCreate(&a, 0), "cuEventCreate");
        using var start = new CudaEventHandle(context, a);
        CudaException.Check(CudaDriver.cuEventCreate(&b, 0), "cuEventCreate");
        using var end = new CudaEventHandle(context, b);
        CudaException.Check(CudaDriver.cuEventRecord(a, stream.DangerousGetHandle()), "cuEventRecord");
        work();
        context.MakeCurrent();
        CudaException.Check(CudaDriver.cuEventRecord(b, stream.DangerousGetHandle()), "cuEventRecord");
        CudaException.Check(CudaDriver.cuEventSynchronize(b), "cuEventSynchronize");
        float ms;
        CudaException.Check(CudaDriver.cuEventElapsedTime(&ms, a, b), "cuEventElapsedTime");
        return ms;
    }

    // ---- CUDA graphs (driven by GraphReplayRuntime) ------------------------------------------------------------

    SafeHandle? cublasWorkspace;
    /// <summary>cuBLAS's workspace while capturing: 32 MiB, what NVIDIA suggests for Hopper.</summary>
    const long CublasWorkspaceBytes = 32L << 20;

    public bool SupportsGraphs => true;

    public void BeginCapture()
    {
        context.MakeCurrent();
        if (cublasWorkspace is null)
        {
            // Outside the pool's cache: a cached block could be one the segment being captured still uses.
            cublasWorkspace = pool.RentOutsideCache(CublasWorkspaceBytes);
            CudaException.CheckCublas(Cublas.cublasSetWorkspace_v2(cublas.DangerousGetHandle(), (ulong)cublasWorkspace.DangerousGetHandle(), (nuint)CublasWorkspaceBytes), "cublasSetWorkspace_v2");
        }
        CudaException.Check(CudaDriver.cuStreamBeginCapture_v2(stream.DangerousGetHandle(), CudaDriver.StreamCaptureModeRelaxed), "cuStreamBeginCapture");
        capturing = true;
    }

    public IDisposable EndCapture()
    {
        context.MakeCurrent();
        nint graph, exec;
        capturing = false;
        CudaException.Check(CudaDriver.cuStreamEndCapture(stream.DangerousGetHandle(), &graph), "cuStreamEndCapture");
        try
        {
            CudaException.Check(CudaDriver.cuGraphInstantiateWithFlags(&exec, graph, 0), "cuGraphInstantiateWithFlags");
        }
        finally
        {
            CudaDriver.cuGraphDestroy(graph);   // the executable graph keeps what it needs
        }
        return new CudaGraphExecHandle(context, exec);
    }

    public void LaunchGraph(IDisposable graph)
    {
        context.MakeCurrent();
        var exec = graph as CudaGraphExecHandle ?? throw new ArgumentException("not a graph of this device", nameof(graph));
        Launches++;
        GraphLaunches++;
        CudaException.Check(CudaDriver.cuGraphLaunch(exec.DangerousGetHandle(), stream.DangerousGetHandle()), "cuGraphLaunch");
    }

    public void PushRange(string name)
    {
        if (TimeRanges)
        {
            if (capturing) openTimed.Push(-1);
            else
            {
                context.MakeCurrent();
                int parent = -1;
                foreach (int open in openTimed) if (open >= 0) { parent = open; break; }
                openTimed.Push(timed.Count);
                timed.Add((name, parent, RecordEvent(), -1, 0, 0));
            }
        }
        if (!Nvtx.Available) return;
        if (!rangeNames.TryGetValue(name, out byte[]? bytes)) rangeNames[name] = bytes = Encoding.UTF8.GetBytes(name + "\0");
        fixed (byte* p = bytes) Nvtx.nvtxRangePushA(p);
    }

    public void PopRange()
    {
        if (TimeRanges && openTimed.TryPop(out int i) && i >= 0)
        {
            context.MakeCurrent();
            timed[i] = timed[i] with { End = RecordEvent() };
        }
        if (Nvtx.Available) Nvtx.nvtxRangePop();
    }

    public void Dispose()
    {
        if (context.IsClosed) return;
        try { Synchronize(); } catch (CudaException) { /* a failed kernel: free what we can anyway */ }
        cublasWorkspace?.Dispose();
        foreach (var e in events) e.Dispose();
        pool.Dispose();   // cached blocks now; tensors still alive free theirs directly when disposed
        cublas.Dispose();
        foreach (var (_, module) in modules) module.Dispose();
        computeReached?.Dispose();
        copyStream?.Dispose();
        stream.Dispose();
        context.Dispose();
    }

    public override string ToString() =>
        $"{Name} (device {Ordinal}, sm_{ComputeCapability.Major}{ComputeCapability.Minor}, {MultiprocessorCount} SMs, {TotalMemory >> 20} MiB)";
}
