using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda.Native;

/// <summary>
/// The CUDA driver API calls NeuronTrace uses (cuda.h), bound with source-generated P/Invoke. Signatures are
/// blittable: handles are <see cref="nint"/>, device pointers (CUdeviceptr) <see cref="ulong"/>, results the raw
/// CUresult <see cref="int"/> (checked by <see cref="CudaException.Check"/>). Versioned symbols are bound by their
/// exported names (cuMemAlloc_v2 …), which is what cuda.h's macros resolve to.
/// </summary>
internal static unsafe partial class CudaDriver
{
    public const string Library = "libcuda.so.1";

    public const int Success = 0;
    public const int ErrorOutOfMemory = 2;
    public const int ErrorNotFound = 500;

    public const int AttributeMultiprocessorCount = 16;
    public const int AttributeComputeCapabilityMajor = 75;
    public const int AttributeComputeCapabilityMinor = 76;

    [LibraryImport(Library, SetLastError = false)] public static partial int cuInit(uint flags);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuDriverGetVersion(int* version);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuGetErrorName(int error, byte** name);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuGetErrorString(int error, byte** text);

    [LibraryImport(Library, SetLastError = false)] public static partial int cuDeviceGetCount(int* count);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuDeviceGet(int* device, int ordinal);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuDeviceGetName(byte* name, int length, int device);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuDeviceGetAttribute(int* value, int attribute, int device);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuDeviceTotalMem_v2(nuint* bytes, int device);

    [LibraryImport(Library, SetLastError = false)] public static partial int cuDevicePrimaryCtxRetain(nint* context, int device);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuDevicePrimaryCtxRelease_v2(int device);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuCtxSetCurrent(nint context);

    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemAlloc_v2(ulong* pointer, nuint bytes);
    /// <summary>Free and total bytes of the current context's device.</summary>
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemGetInfo_v2(nuint* free, nuint* total);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemFree_v2(ulong pointer);
    /// <summary>Page-locked host memory the device's copy engines reach directly (flags 0: portable to this context only).</summary>
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemHostAlloc(void** pointer, nuint bytes, uint flags);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemFreeHost(void* pointer);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemcpyHtoD_v2(ulong destination, void* source, nuint bytes);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemcpyDtoH_v2(void* destination, ulong source, nuint bytes);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemcpyDtoD_v2(ulong destination, ulong source, nuint bytes);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemcpyHtoDAsync_v2(ulong destination, void* source, nuint bytes, nint stream);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemcpyDtoDAsync_v2(ulong destination, ulong source, nuint bytes, nint stream);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemcpyDtoHAsync_v2(void* destination, ulong source, nuint bytes, nint stream);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuMemsetD32_v2(ulong destination, uint value, nuint count);

    [LibraryImport(Library, SetLastError = false)] public static partial int cuStreamCreate(nint* stream, uint flags);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuStreamDestroy_v2(nint stream);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuStreamSynchronize(nint stream);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuStreamWaitEvent(nint stream, nint evt, uint flags);
    /// <summary>CU_EVENT_DISABLE_TIMING: an event only for ordering (cheaper to record and wait on).</summary>
    public const uint EventDisableTiming = 2;

    /// <summary>CU_STREAM_CAPTURE_MODE_RELAXED: other threads' calls (and cuMemAlloc) stay legal while a stream captures.</summary>
    public const int StreamCaptureModeRelaxed = 2;
    [LibraryImport(Library, SetLastError = false)] public static partial int cuStreamBeginCapture_v2(nint stream, int mode);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuStreamEndCapture(nint stream, nint* graph);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuGraphInstantiateWithFlags(nint* graphExec, nint graph, ulong flags);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuGraphLaunch(nint graphExec, nint stream);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuGraphDestroy(nint graph);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuGraphExecDestroy(nint graphExec);

    [LibraryImport(Library, SetLastError = false)] public static partial int cuEventCreate(nint* evt, uint flags);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuEventRecord(nint evt, nint stream);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuEventSynchronize(nint evt);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuEventElapsedTime(float* milliseconds, nint start, nint end);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuEventDestroy_v2(nint evt);

    /// <summary><paramref name="image"/> is a NUL-terminated PTX text (or a cubin).</summary>
    [LibraryImport(Library, SetLastError = false)] public static partial int cuModuleLoadData(nint* module, void* image);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuModuleUnload(nint module);
    [LibraryImport(Library, SetLastError = false)] public static partial int cuModuleGetFunction(nint* function, nint module, byte* name);

    /// <summary><paramref name="kernelParams"/>: one pointer per kernel parameter, each to a copy of its value.</summary>
    [LibraryImport(Library, SetLastError = false)]
    public static partial int cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemBytes, nint stream, void** kernelParams, void** extra);
}
