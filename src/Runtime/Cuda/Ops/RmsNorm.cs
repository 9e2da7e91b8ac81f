using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launchers of native/kernels/rmsnorm.cu: one block per row (<see cref="RowBlock"/> threads). Under Bf16 the
/// forwards also write the normed rows' bf16 shadow (Ops/Bf16Operands.cs), the operand of the products that follow.</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RmsNormForwardArgs(nint X, nint Weight, float Eps, nint Y, nint Rstd, int Rows, int Dim);
    internal static readonly Kernel<RmsNormForwardArgs> RmsNormForwardKernel = Kernel.Declare<RmsNormForwardArgs>("rmsnorm_forward");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RmsNormForwardBf16Args(nint X, nint Weight, float Eps, nint Y, nint Rstd, nint Y16, int Rows, int Dim);
    internal static readonly Kernel<RmsNormForwardBf16Args> RmsNormForwardBf16Kernel = Kernel.Declare<RmsNormForwardBf16Args>("rmsnorm_forward_bf16");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct AddRmsNormArgs(nint X, nint Delta, nint Weight, float Eps, nint Sum, nint Y, nint Rstd, nint Y16, int Rows, int Dim);
    internal static readonly Kernel<AddRmsNormArgs> AddRmsNormKernel = Kernel.Declare<AddRmsNormArgs>("add_rmsnorm_forward");

    /// <param name="Dy">Device pointer to the gradient of the normalised output, [Rows, Dim].</param>
    /// <param name="X">Device pointer to the forward's input, [Rows, Dim].</param>
    /// <param name="Weight">Device pointer to the norm's gain, [Dim].</param>
    /// <param name="Rstd">Device pointer to the forward's 1/rms of each row, [Rows].</param>
    /// <param name="Dx">Device pointer to the input gradient, [Rows, Dim]; the kernel adds to it.</param>
    /// <param name="Rows">Rows (tokens of the batch).</param>
    /// <param name="Dim">Channels per row.</param>
    /// <param name="Exact">1 for <see cref="NormRule.Exact"/>, 0 for the frozen scale (rmsnorm.cu's encoding).</param>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RmsNormBackwardArgs(nint Dy, nint X, nint Weight, nint Rstd, nint Dx, int Rows, int Dim, int Exact);
    internal static readonly Kernel<RmsNormBackwardArgs> RmsNormBackwardKernel = Kernel.Declare<RmsNormBackwardArgs>("rmsnorm_backward");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RmsNormBackwardBf16Args(nint Dy, nint X, nint Weight, nint Rstd, nint Dx, nint Dx16, int Rows, int Dim, int Exact);
    internal static readonly Kernel<RmsNormBackwardBf16Args> RmsNormBackwardBf16Kernel = Kernel.Declare<RmsNormBackwardBf16Args>("rmsnorm_backward_bf16");

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd)
    {
        OpContracts.RmsNorm(x, weight, y, rstd);
        int rows = x.Rows, dim = x.Columns;
        if (rows == 0) return;
        using var _ = Range("rmsnorm_forward");
        if (Precision == GemmPrecision.Bf16)
        {
            // The normed rows feed products: their bf16 operand is written here, beside the fp32 output the backward reads.
            var slot = ShadowSlot(y);
            Launch(RmsNormForwardBf16Kernel, new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0,
                new RmsNormForwardBf16Args(Dev(x), Dev(weight), eps, Dev(y), Dev(rstd), slot.Address, rows, dim), OpWork.Streaming(x.Length, 2, 4) with { Bytes = x.Length * 10.0 });
            Publish(slot, y);
            return;
        }
        Launch(RmsNormForwardKernel, new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0,
            new RmsNormForwardArgs(Dev(x), Dev(weight), eps, Dev(y), Dev(rstd), rows, dim), OpWork.Streaming(x.Length, 2, 4));
    }

    /// <summary>sum = x + delta and y = RMSNorm(sum) in one launch (add_rmsnorm_forward), bit-identical to Copy, Add, RmsNorm.</summary>
    public void AddRmsNorm(Tensor x, Tensor delta, Tensor sum, Tensor weight, float eps, Tensor y, Tensor rstd)
    {
        OpContracts.Add(sum, delta);
        OpContracts.Copy(x, sum);
        OpContracts.RmsNorm(sum, weight, y, rstd);
        if (ReferenceEquals(sum, x) || ReferenceEquals(sum, delta) || ReferenceEquals(y, sum))
            throw new ArgumentException("AddRmsNorm: the sum must be a tensor of its own (not x, delta or y)");
        int rows = x.Rows, dim = x.Columns;
        if (rows == 0) return;
        using var _ = Range("add_rmsnorm_forward");
        Shadow? slot = Precision == GemmPrecision.Bf16 ? ShadowSlot(y) : null;   // y feeds products: its bf16 operand too
        Launch(AddRmsNormKernel, new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0,
            new AddRmsNormArgs(Dev(x), Dev(delta), Dev(weight), eps, Dev(sum), Dev(y), Dev(rstd), slot?.Address ?? 0, rows, dim),
            new OpWork(x.Length * 4.0, x.Length * (slot is null ? 16.0 : 18.0)));
        if (slot is not null) Publish(slot, y);
    }

    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, NormRule rule, Tensor dx)
    {
        bool exact = OpContracts.RmsNormBackward(dy, x, weight, rstd, rule, dx);
        int rows = x.Rows, dim = x.Columns;
        if (rows == 0) return;
        using var _ = Range("rmsnorm_backward");
        if (Precision == GemmPrecision.Bf16)
        {
            // dx is the residual gradient the next input-gradient products (down, o) read: its bf16 operand too.
            var slot = ShadowSlot(dx);
            Launch(RmsNormBackwardBf16Kernel, new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0,
                new RmsNormBackwardBf16Args(Dev(dy), Dev(x), Dev(weight), Dev(rstd), Dev(dx), slot.Address, rows, dim, exact ? 1 : 0),
                OpWork.Streaming(x.Length, 4, 8) with { Bytes = x.Length * 18.0 });
            Publish(slot, dx);
            return;
        }
        Launch(RmsNormBackwardKernel, new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0,
            new RmsNormBackwardArgs(Dev(dy), Dev(x), Dev(weight), Dev(rstd), Dev(dx), rows, dim, exact ? 1 : 0), OpWork.Streaming(x.Length, 4, 8));
    }
}
