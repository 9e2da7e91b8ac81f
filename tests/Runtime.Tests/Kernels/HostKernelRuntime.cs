using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// An <see cref="IDeviceRuntime"/> over libneurontrace_kernels_host.so: the kernel sources of native/kernels compiled
/// for the CPU, each grid run by the fiber emulator (native/host/nt_emulator.cpp). "Device" memory is native heap
/// memory, filled with NaN bytes on allocation as a GPU's would hold garbage; the SGEMM is a plain column-major
/// reference with BLAS semantics, including cuBLAS's argument checks. Lets every kernel, and CudaBackend itself, run
/// in the ordinary test suite.
/// </summary>
internal sealed unsafe class HostKernelRuntime : IDeviceRuntime
{
    public const string LibraryFile = "libneurontrace_kernels_host.so";
    public const string EnvironmentVariable = "NT_KERNELS_HOST_LIB";

    static readonly Lazy<nint> Library = new(Load);
    readonly Dictionary<string, nint> launchers = [];

    /// <summary>The library the tests load: $NT_KERNELS_HOST_LIB, else native/build/ in the checkout.</summary>
    public static string LibraryPath =>
        Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } p ? p : Path.Combine(RepoPaths.Root, "native", "build", LibraryFile);

    public string Name => "host emulation";

    /// <summary>Names pushed with <see cref="PushRange"/>, in order (the NVTX ranges a GPU run would show).</summary>
    public List<string> Ranges { get; } = [];
    public int OpenRanges { get; private set; }
    public int Launches { get; private set; }

    static nint Load()
    {
        string path = LibraryPath;
        if (!File.Exists(path))
            throw new InvalidOperationException($"{path} is missing: run `bash native/build.sh` first (it builds the host kernel library the kernel tests load)");
        return NativeLibrary.Load(path);
    }

    readonly DeviceMemoryPool? pool;

    /// <param name="pooled">Allocate through a <see cref="DeviceMemoryPool"/>, as <see cref="CudaDevice"/> does.</param>
    public HostKernelRuntime(bool pooled = false)
    {
        if (pooled) pool = new DeviceMemoryPool(AllocateRaw);
    }

    /// <summary>The caching allocator, when made with pooled: true.</summary>
    public DeviceMemoryPool? Pool => pool;
    /// <summary>Blocks taken from native memory (the stand-in for cuMemAlloc).</summary>
    public int RawAllocations { get; private set; }

    public SafeHandle Allocate(long bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(bytes);
        if (bytes == 0) return new HostMemory(0);
        if (pool is not null) return pool.Rent(bytes);
        return AllocateRaw(bytes);
    }

    SafeHandle AllocateRaw(long bytes)
    {
        void* p = NativeMemory.AlignedAlloc((nuint)bytes, 256);
        NativeMemory.Fill(p, (nuint)bytes, 0xff);
        RawAllocations++;
        return new HostMemory((nint)p);
    }

    public void CopyToDevice(nint destination, ReadOnlySpan<byte> source)
    {
        NotCapturing("CopyToDevice");
        source.CopyTo(new Span<byte>((void*)destination, source.Length));
    }

    public void CopyToHost(nint source, Span<byte> destination)
    {
        NotCapturing("CopyToHost");
        DrainCopyStream();
        new ReadOnlySpan<byte>((void*)source, destination.Length).CopyTo(destination);
    }

    /// <summary>Downloads into "page-locked" memory (native memory here); the emulator runs every op at once, so the copy is done on return.</summary>
    public int PinnedDownloads { get; private set; }

    public void CopyToHostAsync(nint destination, nint source, long bytes)
    {
        NotCapturing("CopyToHostAsync");
        PinnedDownloads++;
        Buffer.MemoryCopy((void*)source, (void*)destination, bytes, bytes);
    }

    /// <summary>
    /// The copy stream at its latest: a copy queued there reads its source only at the next host wait
    /// (<see cref="Synchronize"/>, a download), so a caller that reads the destination early, or lets later work change
    /// the source before the wait, gets other bytes than it expects and its test fails.
    /// </summary>
    public void CopyToHostOnCopyStream(nint destination, nint source, long bytes)
    {
        NotCapturing("CopyToHostOnCopyStream");
        PinnedDownloads++;
        CopyStreamDownloads++;
        copyStream.Add((destination, source, bytes));
    }

    public int CopyStreamDownloads { get; private set; }
    /// <summary>Host waits that found copies pending on the copy stream.</summary>
    public int CopyStreamWaits { get; private set; }
    readonly List<(nint Destination, nint Source, long Bytes)> copyStream = [];

    void DrainCopyStream()
    {
        if (copyStream.Count == 0) return;
        CopyStreamWaits++;
        foreach (var (d, s, n) in copyStream) Buffer.MemoryCopy((void*)s, (void*)d, n, n);
        copyStream.Clear();
    }

    public void CopyDeviceToDevice(nint destination, nint source, long bytes)
    {
        if (capture is not null) { capture.Add(() => Buffer.MemoryCopy((void*)source, (void*)destination, bytes, bytes)); return; }
        Buffer.MemoryCopy((void*)source, (void*)destination, bytes, bytes);
    }

    // ---- graphs: a captured graph is the list of its ops, run in order by LaunchGraph ----
    List<Action>? capture;

    /// <summary>Graphs launched, and the ops they ran.</summary>
    public int GraphLaunches { get; private set; }
    public int OpsInGraphs { get; private set; }

    public bool SupportsGraphs => true;

    public void BeginCapture()
    {
        if (capture is not null) throw new InvalidOperationException("already capturing");
        capture = [];
    }

    public IDisposable EndCapture()
    {
        var graph = new HostGraph(capture ?? throw new InvalidOperationException("EndCapture without BeginCapture"));
        capture = null;
        return graph;
    }

    public void LaunchGraph(IDisposable graph)
    {
        NotCapturing("LaunchGraph");
        var g = (HostGraph)graph;
        foreach (var op in g.Ops) op();
        GraphLaunches++;
        OpsInGraphs += g.Ops.Count;
    }

    void NotCapturing(string what)
    {
        if (capture is not null) throw new InvalidOperationException($"{what} while capturing a graph (CUDA forbids it)");
    }

    sealed class HostGraph(List<Action> ops) : IDisposable
    {
        public List<Action> Ops { get; } = ops;
        public void Dispose() { }
    }

    public void Launch(string kernel, Dim3 grid, Dim3 block, int sharedBytes, ReadOnlySpan<nint> arguments)
    {
        if (capture is not null)
        {
            // A graph node keeps copies of the parameter values (cuLaunchKernel's rule): 8-byte slots, sizes from the declaration.
            var sizes = Kernel.Signatures[kernel];
            var values = new byte[8 * arguments.Length];
            for (int i = 0; i < arguments.Length; i++) new ReadOnlySpan<byte>((void*)arguments[i], sizes[i].Size).CopyTo(values.AsSpan(8 * i));
            capture.Add(() =>
            {
                var pointers = new nint[values.Length / 8];
                fixed (byte* v = values)
                {
                    for (int i = 0; i < pointers.Length; i++) pointers[i] = (nint)(v + 8 * i);
                    Run(kernel, grid, block, sharedBytes, pointers);
                }
            });
            return;
        }
        Run(kernel, grid, block, sharedBytes, arguments);
    }

    void Run(string kernel, Dim3 grid, Dim3 block, int sharedBytes, ReadOnlySpan<nint> arguments)
    {
        if (!launchers.TryGetValue(kernel, out nint f))
        {
            if (!NativeLibrary.TryGetExport(Library.Value, "nt_launch_" + kernel, out f))
                throw new InvalidOperationException($"kernel {kernel}: no nt_launch_{kernel} in {LibraryPath} (missing NT_HOST_LAUNCHER, or a stale build)");
            launchers[kernel] = f;
        }
        var launch = (delegate* unmanaged<uint, uint, uint, uint, uint, uint, uint, nint*, int>)f;
        int rc;
        fixed (nint* args = arguments)
            rc = launch(grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, (uint)sharedBytes, args);
        Launches++;
        if (rc != 0) throw new HostKernelException(rc, LastError());
    }

    static string LastError()
    {
        var f = (delegate* unmanaged<sbyte*>)NativeLibrary.GetExport(Library.Value, "nt_host_last_error");
        return new string(f());
    }

    public void Sgemm(in GemmCall c)
    {
        if (capture is not null) { var call = c; capture.Add(() => ReferenceSgemm(call)); return; }
        ReferenceSgemm(c);
    }

    /// <summary>
    /// Column-major C = α op(A) op(B) + β C as BLAS defines it; β = 0 never reads C. Under
    /// <see cref="GemmPrecision.Tf32"/> each factor is first rounded to TF32, as tensor cores read it; under
    /// <see cref="GemmPrecision.Bf16"/> A and B are arrays of bf16 values.
    /// </summary>
    public static void ReferenceSgemm(in GemmCall c)
    {
        bool tf32 = c.Precision == GemmPrecision.Tf32;
        // cuBLAS rejects these (CUBLAS_STATUS_INVALID_VALUE); so must the stand-in.
        if (c.M < 0 || c.N < 0 || c.K < 0) throw new ArgumentException($"negative gemm size in {c}");
        if (c.Lda < Math.Max(1, c.TransposeA ? c.K : c.M)) throw new ArgumentException($"lda too small in {c}");
        if (c.Ldb < Math.Max(1, c.TransposeB ? c.N : c.K)) throw new ArgumentException($"ldb too small in {c}");
        if (c.Ldc < Math.Max(1, c.M)) throw new ArgumentException($"ldc too small in {c}");
        bool bf16 = c.Precision == GemmPrecision.Bf16;   // A and B are bf16 arrays, C is fp32
        float* a = (float*)c.A, b = (float*)c.B, y = (float*)c.C;
        ushort* a16 = (ushort*)c.A, b16 = (ushort*)c.B;
        for (int j = 0; j < c.N; j++)
            for (int i = 0; i < c.M; i++)
            {
                float sum = 0f;
                for (int l = 0; l < c.K; l++)
                {
                    long ai = c.TransposeA ? l + (long)i * c.Lda : i + (long)l * c.Lda;
                    long bi = c.TransposeB ? j + (long)l * c.Ldb : l + (long)j * c.Ldb;
                    float av = bf16 ? BitConverter.Int32BitsToSingle(a16[ai] << 16) : a[ai];
                    float bv = bf16 ? BitConverter.Int32BitsToSingle(b16[bi] << 16) : b[bi];
                    if (tf32) { av = RoundToTf32(av); bv = RoundToTf32(bv); }
                    sum += av * bv;
                }
                long o = i + (long)j * c.Ldc;
                y[o] = c.Alpha * sum + (c.Beta == 0f ? 0f : c.Beta * y[o]);
            }
    }

    /// <summary>x with its mantissa rounded (to nearest) to TF32's 10 bits; the low 13 bits of the fp32 mantissa cleared.</summary>
    public static float RoundToTf32(float x)
    {
        if (!float.IsFinite(x)) return x;
        uint bits = BitConverter.SingleToUInt32Bits(x);
        return BitConverter.UInt32BitsToSingle((bits + 0x1000u) & ~0x1FFFu);
    }

    public void Synchronize()
    {
        NotCapturing("Synchronize");
        DrainCopyStream();
    }

    public void PushRange(string name)
    {
        Ranges.Add(name);
        OpenRanges++;
    }

    public void PopRange()
    {
        if (OpenRanges == 0) throw new InvalidOperationException("PopRange without PushRange");
        OpenRanges--;
    }

    public void Dispose() => pool?.Dispose();

    sealed class HostMemory : SafeHandle
    {
        public HostMemory(nint p) : base(0, true) => SetHandle(p);
        public override bool IsInvalid => handle == 0;
        protected override bool ReleaseHandle()
        {
            NativeMemory.AlignedFree((void*)handle);
            return true;
        }
    }
}

/// <summary>A launch the emulator refused or a kernel that broke the execution model (message from nt_host_last_error).</summary>
internal sealed class HostKernelException(int code, string message) : Exception(message)
{
    public int Code { get; } = code;
}
