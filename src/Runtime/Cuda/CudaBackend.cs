using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// The IBackend op set on a GPU: our PTX kernels (native/kernels) for everything but the matrix products, which go
/// to cuBLAS. This file holds memory, scratch buffers and the launch driver; each kernel family's launchers, typed
/// kernel handles and argument structs sit in Ops/ (Ops/RmsNorm.cs beside native/kernels/rmsnorm.cu). Each op
/// checks shapes with <see cref="OpContracts"/> first (a kernel cannot throw), chooses the launch configuration its
/// kernel documents, and declares its work (<see cref="OpWork"/>) for the launch ledger. Every op is an NVTX range
/// of the same name as the kernel family, for Nsight.
/// Semantics are exactly <see cref="Cpu.CpuBackend"/>'s (fresh tensors are zero, accumulate ops add); results
/// differ only by floating-point summation order and the fast exp of softmax / sigmoid.
/// Not thread-safe: one thread at a time, like the device it runs on.
/// </summary>
internal sealed partial class CudaBackend : IBackend, IRowViews
{
    /// <summary>Threads per block of the grid-stride (elementwise) kernels.</summary>
    public const int ElementwiseBlock = 256;
    /// <summary>At most this many blocks for grid-stride kernels: about two waves on an H100 (132 SMs × 2048 threads).</summary>
    public const int MaxGridStrideBlocks = 1024;
    const int MaxDynamicShared = 48 * 1024;

    readonly IDeviceRuntime device;
    readonly bool ownsDevice;
    // Host data an op needs on the device (token ids, row lists, ablation masks) goes through these reusable buffers.
    // The uploads are queued on the stream, so reusing a buffer for the next op waits for the kernel that reads it.
    SafeHandle? indexScratch;   // token ids / row indices uploaded for one op
    long indexCapacity;
    SafeHandle? maskScratch;    // MeanAblate's keep bits
    long maskCapacity;
    SafeHandle? scoreScratch;   // attention backward ds [B, H, T, T]
    long scoreCapacity;
    // GemmPrecision.Bf16: bf16 copies of fp32 constant weights (uploaded under another precision), scratch for
    // operands rounded per product, and fp32 scratch for a bf16-stored weight read by an fp32 / TF32 product.
    readonly Dictionary<CudaTensor, SafeHandle> bf16Weights = new(ReferenceEqualityComparer.Instance);
    SafeHandle? activationBf16, weightBf16, weightF32;
    long activationBf16Capacity, weightBf16Capacity, weightF32Capacity;

    /// <param name="device">The device runtime every op is issued to (a GPU, its graph-replaying wrapper, the recording ledger, or the tests' host emulator).</param>
    /// <param name="ownsDevice">Whether disposing the backend disposes <paramref name="device"/>.</param>
    /// <param name="precision">How matrix products are computed: exact fp32 (the default, what the CPU checks compare
    /// against), TF32 or bf16 tensor cores.</param>
    public CudaBackend(IDeviceRuntime device, bool ownsDevice = true, GemmPrecision precision = GemmPrecision.Fp32)
    {
        this.device = device;
        this.ownsDevice = ownsDevice;
        Precision = precision;
    }

    /// <summary>A backend on GPU 0, or null with the one-line reason from <see cref="CudaDevice.TryOpen(out string)"/>.</summary>
    public static CudaBackend? TryCreate(out string whyNot, GemmPrecision precision = GemmPrecision.Fp32) => TryCreate(0, out whyNot, precision);

    /// <summary>The backend on device <paramref name="ordinal"/> (as numbered under CUDA_VISIBLE_DEVICES), or null and why not.</summary>
    public static CudaBackend? TryCreate(int ordinal, out string whyNot, GemmPrecision precision = GemmPrecision.Fp32)
    {
        var d = CudaDevice.TryOpen(ordinal, null, out whyNot);
        if (d is null) return null;
        IDeviceRuntime runtime = GraphsRequested ? new GraphReplayRuntime(d, CudaDevice.PoolDisabled ? null : d.MemoryPool) : d;
        return new CudaBackend(runtime, ownsDevice: true, precision);
    }

    /// <summary>NEURONTRACE_CUDA_GRAPHS=1: repeated work runs as CUDA Graphs (<see cref="GraphReplayRuntime"/>). Off by default until timed on a GPU.</summary>
    public const string GraphsVariable = "NEURONTRACE_CUDA_GRAPHS";
    static bool GraphsRequested => Environment.GetEnvironmentVariable(GraphsVariable) == "1";

    public string Name => "cuda";
    public IDeviceRuntime Device => device;
    /// <summary>How matrix products are computed from now on; settable so one model upload can be timed both ways.</summary>
    public GemmPrecision Precision { get; set; }

    // ---- memory ------------------------------------------------------------------------------------------------

    /// <summary>A zero-filled tensor, as on the CPU backend.</summary>
    public Tensor Allocate(params int[] shape)
    {
        var t = Create(shape);
        Fill(t, 0f);
        return t;
    }

    /// <summary>Contents undefined (whatever the pooled block held): for outputs an op overwrites entirely.</summary>
    public Tensor AllocateUninitialized(params int[] shape) => Create(shape);

    /// <summary>
    /// Uploads and marks the tensor <see cref="CudaTensor.IsConstant"/>. Under <see cref="GemmPrecision.Bf16"/> a
    /// matrix is stored as bf16 only (no fp32 copy on the device; products and row lookups read it as it is); vectors,
    /// and everything in the other precisions, stay fp32 (a bf16 product then keeps one converted copy).
    /// </summary>
    public Tensor UploadConstant(float[] data, params int[] shape)
    {
        if (StoresBf16(shape))
        {
            OpContracts.Upload(data.Length, shape);
            return UploadBf16(shape, data.Length, (at, part) => data.AsSpan(checked((int)at), part.Length).CopyTo(part));
        }
        var t = (CudaTensor)Upload(data, shape);
        t.IsConstant = true;
        return t;
    }

    /// <summary>A view of <paramref name="t"/>'s leading slices, no copy and no launch (<see cref="IRowViews"/>).</summary>
    public Tensor ViewLeading(Tensor t, int first, int count) =>
        t is CudaTensor c && ReferenceEquals(c.Device, device) ? c.ViewLeading(first, count)
            : throw new ArgumentException($"{t} is not a tensor of this CUDA backend");

    public Tensor AllocateConstant(params int[] shape)
    {
        var t = StoresBf16(shape) ? CreateBf16(shape) : Create(shape);
        t.IsConstant = true;
        return t;
    }

    public Tensor Upload(ReadOnlySpan<float> data, params int[] shape)
    {
        OpContracts.Upload(data.Length, shape);
        var t = Create(shape);
        using (Range("upload")) device.CopyToDevice(t.Pointer, MemoryMarshal.AsBytes(data));
        return t;
    }

    public void Download(Tensor source, Span<float> destination)
    {
        var s = In(source);
        OpContracts.Download(source, destination.Length);
        using (Range("download")) device.CopyToHost(s, MemoryMarshal.AsBytes(destination[..checked((int)source.Length)]));
    }

    /// <summary>Into the page-locked buffer this backend keeps (grown as needed): one queued copy, one wait.</summary>
    public unsafe void ReadOnHost(Tensor source, HostValuesReader read)
    {
        var s = In(source);
        long bytes = source.Length * sizeof(float);
        if (pinnedHost is null || pinnedHostBytes < bytes)
        {
            pinnedHost?.Dispose();
            pinnedHost = device.AllocatePinnedHost(bytes);
            pinnedHostBytes = bytes;
        }
        nint p = pinnedHost.DangerousGetHandle();
        using (Range("download"))
        {
            device.CopyToHostAsync(p, s, bytes);
            device.Synchronize();
        }
        read(new ReadOnlySpan<float>((void*)p, checked((int)source.Length)));
    }

    SafeHandle? pinnedHost;   // ReadOnHost's destination, kept between calls (cuMemHostAlloc is slow)
    long pinnedHostBytes;

    public void Copy(Tensor source, Tensor destination)
    {
        var s = In(source);
        var d = Dev(destination);
        OpContracts.Copy(source, destination);
        using var _ = Range("copy");
        device.CopyDeviceToDevice(d, s, source.Length * sizeof(float));
    }

    public void Dispose()
    {
        indexScratch?.Dispose();
        maskScratch?.Dispose();
        scoreScratch?.Dispose();
        pinnedHost?.Dispose();
        DisposeScoreReadout();
        sparseRows?.Dispose();
        sparseRows = null;
        indexScratch = maskScratch = scoreScratch = null;
        pinnedHost = null;
        scoreGroups?.Dispose();
        scoreGroups = null;
        scoreGroupsKey = null;
        activationBf16?.Dispose(); weightBf16?.Dispose(); weightF32?.Dispose(); stackedOutput?.Dispose();
        activationBf16 = weightBf16 = weightF32 = stackedOutput = null;
        DisposeShadows();
        DisposeStreamingScratch();
        foreach (var copy in bf16Weights.Values) copy.Dispose();
        bf16Weights.Clear();
        if (ownsDevice) device.Dispose();
    }

    // ---- launch configuration -----------------------------------------------------------------------------------

    /// <summary>Grid of a grid-stride kernel over <paramref name="n"/> items.</summary>
    public static Dim3 GridFor(long n) => new((uint)Math.Clamp((n + ElementwiseBlock - 1) / ElementwiseBlock, 1, MaxGridStrideBlocks));

    /// <summary>Block of the one-block-per-row kernels (RMSNorm): the row width rounded up to a warp, 32..256.</summary>
    public static uint RowBlock(int dim) => (uint)Math.Clamp((dim + 31) / 32 * 32, 32, 256);

    /// <summary>
    /// Launches <paramref name="kernel"/> with the parameters in <paramref name="args"/> and declares its work to the
    /// runtime. Which tensors it may write the launcher said while building <paramref name="args"/> (<see cref="Dev"/>
    /// against <see cref="In"/>).
    /// </summary>
    unsafe void Launch<[System.Diagnostics.CodeAnalysis.DynamicallyAccessedMembers(System.Diagnostics.CodeAnalysis.DynamicallyAccessedMemberTypes.PublicFields | System.Diagnostics.CodeAnalysis.DynamicallyAccessedMemberTypes.NonPublicFields)] T>(Kernel<T> kernel, Dim3 grid, Dim3 block, int sharedBytes, T args, OpWork work) where T : unmanaged
    {
        Span<nint> pointers = stackalloc nint[KernelParameters<T>.Offsets.Length];
        KernelParameters<T>.Pointers(&args, pointers);
        device.Launch(kernel.Name, grid, block, sharedBytes, pointers);
        device.DeclareWork(work);
    }

    /// <summary>Every kernel this backend launches, with its parameter layout (see <see cref="Kernel.Signatures"/>).</summary>
    public static IReadOnlyDictionary<string, (int Size, bool IsFloat)[]> KernelSignatures()
    {
        _ = FillKernel;  // initialises this type, so every Ops/ file has declared its kernels
        return Kernel.Signatures;
    }

    // ---- helpers ------------------------------------------------------------------------------------------------

    CudaTensor Create(int[] shape)
    {
        long n = 1;
        foreach (int dim in shape)
        {
            if (dim < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape)}]");
            n = checked(n * dim);
        }
        return new CudaTensor(device.Allocate(checked(n * sizeof(float))), device, shape);
    }

    /// <summary>
    /// The device address of an fp32 tensor an op may write: its <see cref="CudaTensor.Version"/> is bumped, so a bf16
    /// shadow of it goes stale. Launchers pass the tensors they only read through <see cref="In"/> instead; one left on
    /// Dev costs a conversion at most, never a stale operand.
    /// </summary>
    nint Dev(Tensor t)
    {
        var c = Fp32(t);
        c.Version++;
        return c.Pointer;
    }

    /// <summary>The device address of an fp32 tensor the op only reads (its bf16 shadow stays valid).</summary>
    nint In(Tensor t) => Fp32(t).Pointer;

    CudaTensor Fp32(Tensor t) =>
        t is CudaTensor c && ReferenceEquals(c.Device, device)
            ? c.IsBf16 ? throw new ArgumentException($"{t} holds bf16 weights, which only matrix products and row lookups read") : c
            : throw new ArgumentException($"{t} is not a tensor of this CUDA backend");

    /// <summary>Uploads indices into the reusable index buffer (grown as needed) and returns its address.</summary>
    nint Indices(ReadOnlySpan<int> values)
    {
        nint p = Stage(ref indexScratch, ref indexCapacity, (long)values.Length * sizeof(int));
        device.CopyToDevice(p, MemoryMarshal.AsBytes(values));
        return p;
    }

    /// <summary>The address of a reusable buffer of at least <paramref name="bytes"/> bytes, grown (doubling) as needed.</summary>
    nint Stage(ref SafeHandle? buffer, ref long capacity, long bytes)
    {
        if (buffer is null || capacity < bytes)
        {
            buffer?.Dispose();
            capacity = Math.Max(bytes, Math.Max(4096, capacity * 2));
            buffer = device.Allocate(capacity);
        }
        return buffer.DangerousGetHandle();
    }

    nint Scores(long floats)
    {
        if (scoreScratch is null || scoreCapacity < floats)
        {
            scoreScratch?.Dispose();
            scoreCapacity = floats;
            scoreScratch = device.Allocate(floats * sizeof(float));
        }
        return scoreScratch.DangerousGetHandle();
    }

    public void PushRange(string name) => device.PushRange(name);
    public void PopRange() => device.PopRange();

    RangeScope Range(string name)
    {
        device.PushRange(name);
        if (OpProfile is null) return new RangeScope(this, null, 0);
        device.Synchronize();
        return new RangeScope(this, name, System.Diagnostics.Stopwatch.GetTimestamp());
    }

    /// <summary>
    /// When set, every op waits for the device before and after itself and adds its wall time (milliseconds, host
    /// launch overhead included; nested ranges counted in both) and a call count here, by NVTX range name. A quick
    /// per-op profile where Nsight is not at hand; the waits slow the run, so never time throughput with it on.
    /// </summary>
    public Dictionary<string, (long Calls, double Milliseconds)>? OpProfile { get; set; }

    readonly struct RangeScope(CudaBackend backend, string? name, long started) : IDisposable
    {
        public void Dispose()
        {
            if (name is not null && backend.OpProfile is { } profile)
            {
                backend.device.Synchronize();
                var (calls, ms) = profile.GetValueOrDefault(name);
                profile[name] = (calls + 1, ms + System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            }
            backend.device.PopRange();
        }
    }
}
