using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// A dense fp32 tensor in device memory, owned by a <see cref="CudaBackend"/>, or — a weight matrix uploaded under
/// <see cref="GemmPrecision.Bf16"/> — a bf16 one (<see cref="IsBf16"/>), which only the products and row lookups read.
/// <see cref="Span"/> throws: device memory is reached only through the backend (Upload, Download, the ops).
/// </summary>
internal sealed class CudaTensor : Tensor
{
    readonly SafeHandle memory;

    internal CudaTensor(SafeHandle memory, IDeviceRuntime device, int[] shape, bool bf16 = false) : base(shape)
    {
        this.memory = memory;
        Device = device;
        IsBf16 = bf16;
    }

    /// <summary>Elements are bf16 (2 bytes), not fp32: a constant weight stored once in the precision its products read.</summary>
    public bool IsBf16 { get; }

    /// <summary>The runtime whose memory this is.</summary>
    public IDeviceRuntime Device { get; }

    /// <summary>The device address (0 for an empty tensor).</summary>
    public nint Pointer
    {
        get
        {
            ObjectDisposedException.ThrowIf(memory.IsClosed, this);
            return memory.DangerousGetHandle();
        }
    }

    public long Bytes => Length * (IsBf16 ? 2 : sizeof(float));

    /// <summary>
    /// Set on tensors whose values never change after upload (the model's weights), so a backend may keep derived
    /// copies of them (the bf16 copy of <see cref="GemmPrecision.Bf16"/>). Never set it on a tensor that is written.
    /// </summary>
    public bool IsConstant { get; set; }

    public bool IsDisposed => memory.IsClosed;

    /// <summary>
    /// Bumped by <see cref="CudaBackend"/> whenever an op may write this tensor (every use but a declared read): a bf16
    /// shadow made at another version is stale (Ops/Bf16Operands.cs).
    /// </summary>
    internal long Version;

    public override Span<float> Span =>
        throw new NotSupportedException($"{this} lives in device memory ({Device.Name}); use IBackend.Download");

    public override void Dispose()
    {
        memory.Dispose();
        base.Dispose();
    }

    /// <summary>
    /// <see cref="IRowViews.ViewLeading"/>: slices [first, first + count) of the leading dimension, this tensor's memory
    /// at an offset. The view holds a reference on the memory (<see cref="SafeHandle.DangerousAddRef"/>), so the block
    /// goes back to the pool when the last of this tensor and its views is disposed.
    /// </summary>
    internal CudaTensor ViewLeading(int first, int count)
    {
        if (Rank == 0 || first < 0 || count < 1 || first > Shape[0] - count)
            throw new ArgumentOutOfRangeException(nameof(first), $"slices {first}..{first + count - 1} of {this}");
        ObjectDisposedException.ThrowIf(memory.IsClosed, this);
        var shape = Shape.ToArray();
        shape[0] = count;
        long sliceBytes = Length / Shape[0] * (IsBf16 ? 2 : sizeof(float));
        return new CudaTensor(new ViewMemory(memory, checked(first * sliceBytes)), Device, shape, IsBf16);
    }

    /// <summary>An address inside another block's memory, keeping that block alive while it is open.</summary>
    sealed class ViewMemory : SafeHandle
    {
        readonly SafeHandle block;

        public ViewMemory(SafeHandle block, long offset) : base(0, ownsHandle: true)
        {
            bool added = false;
            block.DangerousAddRef(ref added);
            this.block = block;
            SetHandle(block.DangerousGetHandle() + (nint)offset);
        }

        // Never "invalid": a view of a block at address 0 (the recording runtime's first) must still release its reference.
        public override bool IsInvalid => false;

        protected override bool ReleaseHandle()
        {
            block.DangerousRelease();
            return true;
        }
    }

    public override string ToString() => $"CudaTensor[{string.Join(", ", Shape)}]";
}
