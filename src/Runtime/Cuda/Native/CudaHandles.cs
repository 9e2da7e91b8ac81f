using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda.Native;

/// <summary>A retained primary context of one device; released (cuDevicePrimaryCtxRelease) when the last owner lets go.</summary>
internal sealed class CudaContextHandle : SafeHandle
{
    public CudaContextHandle(nint context, int device) : base(0, ownsHandle: true)
    {
        Device = device;
        SetHandle(context);
    }

    public int Device { get; }
    public override bool IsInvalid => handle == 0;

    /// <summary>Makes the context current on the calling thread; every driver call on its objects needs that.</summary>
    public void MakeCurrent() => CudaException.Check(CudaDriver.cuCtxSetCurrent(handle), "cuCtxSetCurrent");

    protected override bool ReleaseHandle() => CudaDriver.cuDevicePrimaryCtxRelease_v2(Device) == CudaDriver.Success;
}

/// <summary>
/// Base of the handles that live inside a context (memory, modules, streams, events, cuBLAS). Each keeps its context
/// alive (a reference on the context handle) and makes it current before releasing, since release may run on the
/// finalizer thread, where no context is current.
/// </summary>
internal abstract class CudaContextBoundHandle : SafeHandle
{
    readonly CudaContextHandle context;

    protected CudaContextBoundHandle(CudaContextHandle context, nint value) : base(0, ownsHandle: true)
    {
        this.context = context;
        if (value == 0) return;  // invalid: never released, so it takes no reference
        bool added = false;
        context.DangerousAddRef(ref added);
        SetHandle(value);
    }

    public override bool IsInvalid => handle == 0;

    protected sealed override bool ReleaseHandle()
    {
        try
        {
            return CudaDriver.cuCtxSetCurrent(context.DangerousGetHandle()) == CudaDriver.Success && Release(handle);
        }
        finally
        {
            context.DangerousRelease();
        }
    }

    protected abstract bool Release(nint value);
}

/// <summary>A cuMemAlloc buffer; the handle value is the device address.</summary>
internal sealed class CudaMemoryHandle(CudaContextHandle context, ulong pointer) : CudaContextBoundHandle(context, (nint)pointer)
{
    protected override bool Release(nint value) => CudaDriver.cuMemFree_v2((ulong)value) == CudaDriver.Success;
}

/// <summary>A cuMemHostAlloc buffer (page-locked host memory); the handle value is its host address.</summary>
internal sealed unsafe class CudaPinnedHostHandle(CudaContextHandle context, nint pointer) : CudaContextBoundHandle(context, pointer)
{
    protected override bool Release(nint value) => CudaDriver.cuMemFreeHost((void*)value) == CudaDriver.Success;
}

internal sealed class CudaModuleHandle(CudaContextHandle context, nint module) : CudaContextBoundHandle(context, module)
{
    protected override bool Release(nint value) => CudaDriver.cuModuleUnload(value) == CudaDriver.Success;
}

internal sealed class CudaStreamHandle(CudaContextHandle context, nint stream) : CudaContextBoundHandle(context, stream)
{
    protected override bool Release(nint value) => CudaDriver.cuStreamDestroy_v2(value) == CudaDriver.Success;
}

internal sealed class CudaEventHandle(CudaContextHandle context, nint evt) : CudaContextBoundHandle(context, evt)
{
    protected override bool Release(nint value) => CudaDriver.cuEventDestroy_v2(value) == CudaDriver.Success;
}

/// <summary>An instantiated CUDA graph (cuGraphInstantiate), launched with cuGraphLaunch.</summary>
internal sealed class CudaGraphExecHandle(CudaContextHandle context, nint exec) : CudaContextBoundHandle(context, exec)
{
    protected override bool Release(nint value) => CudaDriver.cuGraphExecDestroy(value) == CudaDriver.Success;
}

internal sealed class CublasHandle(CudaContextHandle context, nint cublas) : CudaContextBoundHandle(context, cublas)
{
    protected override bool Release(nint value) => Cublas.cublasDestroy_v2(value) == 0;
}
