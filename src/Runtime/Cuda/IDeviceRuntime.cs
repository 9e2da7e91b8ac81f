using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// What <see cref="CudaBackend"/> needs from a device: memory, copies, kernel launches by name, a column-major
/// SGEMM and profiling ranges. <see cref="CudaDevice"/> is the GPU (driver API, PTX modules, cuBLAS, NVTX). The
/// tests supply a second one that runs the host build of the same kernel sources on the CPU, so the backend's
/// launch configurations and argument packing are exercised without a GPU.
/// Not thread-safe: one thread at a time per runtime.
/// </summary>
internal interface IDeviceRuntime : IDisposable
{
    /// <summary>For messages: the GPU's name, or what stands in for it.</summary>
    string Name { get; }

    /// <summary>A device buffer of <paramref name="bytes"/> bytes (contents undefined); the handle's value is its address. Zero bytes gives an invalid (null) handle.</summary>
    SafeHandle Allocate(long bytes);
    /// <summary>
    /// Queues a copy of <paramref name="source"/> after all work launched so far; <paramref name="source"/> may be reused
    /// as soon as this returns (the driver stages it), but the host does not wait for the device.
    /// </summary>
    void CopyToDevice(nint destination, ReadOnlySpan<byte> source);
    /// <summary>Waits for all launched work, then copies.</summary>
    void CopyToHost(nint source, Span<byte> destination);
    /// <summary>
    /// Page-locked host memory of <paramref name="bytes"/> bytes (cuMemHostAlloc): what <see cref="CopyToHostAsync"/>
    /// copies into. The handle's value is the host address; disposing it frees the memory. This default is ordinary
    /// native memory, right for a runtime whose device memory is host memory (the emulator).
    /// </summary>
    SafeHandle AllocatePinnedHost(long bytes) => new NativeHostMemory(bytes);

    /// <summary>
    /// Queues a copy of <paramref name="bytes"/> bytes from <paramref name="source"/> into page-locked host memory
    /// (<see cref="AllocatePinnedHost"/>) after all work launched so far, and returns at once: the bytes are there after
    /// the next <see cref="Synchronize"/>. A download from pageable memory (<see cref="CopyToHost"/>) waits and goes
    /// through the driver's staging buffer at a fraction of the bandwidth. This default waits and copies.
    /// </summary>
    unsafe void CopyToHostAsync(nint destination, nint source, long bytes)
    {
        Synchronize();
        CopyToHost(source, new Span<byte>((void*)destination, checked((int)bytes)));
    }

    /// <summary>
    /// Queues a copy of <paramref name="bytes"/> bytes from <paramref name="source"/> into page-locked host memory on the
    /// copy stream, a second stream, and returns at once. An event recorded on the compute stream after all work launched
    /// so far, which the copy stream waits for, orders the copy after the kernels that produce the bytes; the compute
    /// stream goes on meanwhile, so the copy engine runs beside the kernels that follow. Neither buffer may be touched
    /// until the next <see cref="Synchronize"/>, which waits for both streams (one host wait). This default is
    /// <see cref="CopyToHostAsync"/>: one stream, the copy in order with the kernels, nothing overlapped.
    /// </summary>
    void CopyToHostOnCopyStream(nint destination, nint source, long bytes) => CopyToHostAsync(destination, source, bytes);

    /// <summary>Queued after all work launched so far, like a kernel; the host does not wait.</summary>
    void CopyDeviceToDevice(nint destination, nint source, long bytes);

    /// <summary>
    /// Launches kernel <paramref name="kernel"/> (its extern "C" name). <paramref name="arguments"/> is cuLaunchKernel's
    /// kernelParams: one pointer per parameter, each to a copy of the value (see <see cref="KernelArgs"/>).
    /// </summary>
    void Launch(string kernel, Dim3 grid, Dim3 block, int sharedBytes, ReadOnlySpan<nint> arguments);

    /// <summary>
    /// The declared arithmetic and memory traffic of the kernel just launched, for a runtime that keeps a ledger
    /// (<see cref="RecordingDeviceRuntime"/>); a device that runs the kernel ignores it.
    /// </summary>
    void DeclareWork(OpWork work) { }

    /// <summary>Column-major C = α op(A) op(B) + β C (BLAS semantics), fp32 data, computed as <see cref="GemmCall.Precision"/> says.</summary>
    void Sgemm(in GemmCall call);

    /// <summary>Waits for all launched work, on both streams (see <see cref="CopyToHostOnCopyStream"/>).</summary>
    void Synchronize();

    /// <summary>
    /// Bytes a new allocation could still get: the driver's free memory (cuMemGetInfo) plus the idle blocks of this
    /// runtime's pool; null for a runtime without a limit. The memory plan compares its prediction with this.
    /// </summary>
    long? FreeBytes => null;

    void PushRange(string name);
    void PopRange();

    /// <summary>
    /// Whether <see cref="BeginCapture"/> works: the launches, products and device copies issued until
    /// <see cref="EndCapture"/> are recorded into a graph instead of run (CUDA stream capture), and
    /// <see cref="LaunchGraph"/> runs them all as one launch. <see cref="GraphReplayRuntime"/> drives it.
    /// </summary>
    bool SupportsGraphs => false;
    /// <summary>Starts recording; until <see cref="EndCapture"/> nothing issued runs, and host copies are not allowed.</summary>
    void BeginCapture() => throw new NotSupportedException($"{Name} cannot capture graphs");
    /// <summary>Ends recording and returns the executable graph (disposing it frees it).</summary>
    IDisposable EndCapture() => throw new NotSupportedException($"{Name} cannot capture graphs");
    /// <summary>Queues <paramref name="graph"/> (from this runtime's <see cref="EndCapture"/>) after all work launched so far.</summary>
    void LaunchGraph(IDisposable graph) => throw new NotSupportedException($"{Name} cannot capture graphs");
}

/// <summary>Zeroed native memory standing in for page-locked memory where the "device" is the host.</summary>
internal sealed unsafe class NativeHostMemory : SafeHandle
{
    public NativeHostMemory(long bytes) : base(0, ownsHandle: true)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bytes);
        SetHandle((nint)NativeMemory.AllocZeroed((nuint)bytes));
    }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        NativeMemory.Free((void*)handle);
        return true;
    }
}

/// <summary>A grid or block size.</summary>
internal readonly record struct Dim3(uint X, uint Y = 1, uint Z = 1)
{
    public override string ToString() => $"({X},{Y},{Z})";
}
