using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launchers of native/kernels/elementwise.cu: fill, add, intervene, multiply, row gather and scatter-add.</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct FillArgs(nint X, float Value, long N);
    internal static readonly Kernel<FillArgs> FillKernel = Kernel.Declare<FillArgs>("fill_f32");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct AddArgs(nint Destination, nint Source, long N);
    internal static readonly Kernel<AddArgs> AddKernel = Kernel.Declare<AddArgs>("add_inplace");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct AddIntoArgs(nint Sum, nint A, nint B, long N);
    internal static readonly Kernel<AddIntoArgs> AddIntoKernel = Kernel.Declare<AddIntoArgs>("add_into");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct InterveneArgs(nint X, nint Scale, nint Offset, long N);
    internal static readonly Kernel<InterveneArgs> InterveneKernel = Kernel.Declare<InterveneArgs>("intervene_inplace");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct MultiplyArgs(nint X, nint Scale, long N);
    internal static readonly Kernel<MultiplyArgs> MultiplyKernel = Kernel.Declare<MultiplyArgs>("multiply_inplace");

    /// <summary>gather_rows and scatter_add_rows take the same parameters.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RowsArgs(nint Source, nint Rows, nint Destination, int Count, int Width, int TableRows);
    internal static readonly Kernel<RowsArgs> GatherRowsKernel = Kernel.Declare<RowsArgs>("gather_rows");
    internal static readonly Kernel<RowsArgs> ScatterAddRowsKernel = Kernel.Declare<RowsArgs>("scatter_add_rows");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct ScatterBf16Args(nint Source, nint Rows, nint Destination, nint Destination16, int Count, int Width, int DestinationRows);
    internal static readonly Kernel<ScatterBf16Args> ScatterAddRowsBf16Kernel = Kernel.Declare<ScatterBf16Args>("scatter_add_rows_bf16");

    /// <summary>Under Bf16 a scatter of at most this many rows also writes its destination's bf16 shadow (every element walks
    /// the row list, so a long list would cost more than the conversion it saves): the backward head's one row per example.</summary>
    public const int ScatterBf16MaxRows = 64;

    public void Fill(Tensor tensor, float value)
    {
        var p = Dev(tensor);
        if (tensor.Length == 0) return;
        using var _ = Range("fill");
        Launch(FillKernel, GridFor(tensor.Length), new Dim3(ElementwiseBlock), 0, new FillArgs(p, value, tensor.Length), OpWork.Streaming(tensor.Length, 1));
    }

    public void Add(Tensor destination, Tensor source)
    {
        OpContracts.Add(destination, source);
        long n = destination.Length;
        if (n == 0) return;
        using var _ = Range("add");
        Launch(AddKernel, GridFor(n), new Dim3(ElementwiseBlock), 0, new AddArgs(Dev(destination), In(source), n), OpWork.Streaming(n, 3, 1));
    }

    /// <summary><see cref="IBackend.AddInto"/> in one launch (add_into): the bits of Copy then Add.</summary>
    public void AddInto(Tensor a, Tensor b, Tensor sum)
    {
        OpContracts.Add(sum, a);
        OpContracts.Add(sum, b);
        long n = sum.Length;
        if (n == 0) return;
        nint pa = In(a), pb = In(b);   // read before Dev(sum) marks sum written (a or b may be sum itself)
        using var _ = Range("add");
        Launch(AddIntoKernel, GridFor(n), new Dim3(ElementwiseBlock), 0, new AddIntoArgs(Dev(sum), pa, pb, n), OpWork.Streaming(n, 3, 1));
    }

    public void Intervene(Tensor x, Tensor scale, Tensor offset)
    {
        OpContracts.Intervene(x, scale, offset);
        if (x.Length == 0) return;
        using var _ = Range("intervene");
        Launch(InterveneKernel, GridFor(x.Length), new Dim3(ElementwiseBlock), 0,
            new InterveneArgs(Dev(x), Dev(scale), Dev(offset), x.Length), OpWork.Streaming(x.Length, 4, 2));
    }

    public void Multiply(Tensor x, Tensor scale)
    {
        OpContracts.Multiply(x, scale);
        if (x.Length == 0) return;
        using var _ = Range("multiply");
        Launch(MultiplyKernel, GridFor(x.Length), new Dim3(ElementwiseBlock), 0, new MultiplyArgs(Dev(x), Dev(scale), x.Length), OpWork.Streaming(x.Length, 3, 1));
    }

    public void GatherRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        OpContracts.GatherRows(source, rows, destination);
        int width = source.Columns;
        if (rows.Length == 0 || width == 0) return;
        using var _ = Range("gather_rows");
        long n = (long)rows.Length * width;
        Launch(GatherRowsKernel, GridFor(n), new Dim3(ElementwiseBlock), 0,
            new RowsArgs(In(source), Indices(rows), Dev(destination), rows.Length, width, source.Rows), OpWork.Streaming(n, 2));
    }

    public void ScatterAddRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        int destinationRows = OpContracts.ScatterAddRows(source, rows, destination);
        int width = source.Columns;
        if (destinationRows == 0) return;
        using var _ = Range("scatter_add_rows");
        if (Precision == GemmPrecision.Bf16 && rows.Length <= ScatterBf16MaxRows)
        {
            // The destination's bf16 shadow written on the way (the next product's operand: no conversion there).
            long n = (long)destinationRows * width;
            var slot = ShadowSlot(destination);
            Launch(ScatterAddRowsBf16Kernel, GridFor(n), new Dim3(ElementwiseBlock), 0,
                new ScatterBf16Args(In(source), Indices(rows), Dev(destination), slot.Address, rows.Length, width, destinationRows),
                new OpWork(n, n * 10.0 + (long)rows.Length * width * 4.0));
            Publish(slot, destination);
            return;
        }
        // One thread per column walks the rows in order, so repeated rows add without atomics (and deterministically).
        Launch(ScatterAddRowsKernel, GridFor(width), new Dim3(ElementwiseBlock), 0,
            new RowsArgs(In(source), Indices(rows), Dev(destination), rows.Length, width, destinationRows),
            OpWork.Streaming((long)rows.Length * width, 3, 1));
    }
}
