using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launchers of native/kernels/rmsnorm.cu: one block per row (<see cref="RowBlock"/> threads).</summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RmsNormForwardArgs(nint X, nint Weight, float Eps, nint Y, nint Rstd, int Rows, int Dim);
    internal static readonly Kernel<RmsNormForwardArgs> RmsNormForwardKernel = Kernel.Declare<RmsNormForwardArgs>("rmsnorm_forward");

    /// <param name="Exact">1 for <see cref="NormRule.Exact"/>, 0 for the frozen scale (rmsnorm.cu's encoding).</param>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct RmsNormBackwardArgs(nint Dy, nint X, nint Weight, nint Rstd, nint Dx, int Rows, int Dim, int Exact);
    internal static readonly Kernel<RmsNormBackwardArgs> RmsNormBackwardKernel = Kernel.Declare<RmsNormBackwardArgs>("rmsnorm_backward");

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd)
    {
        OpContracts.RmsNorm(x, weight, y, rstd);
        int rows = x.Rows, dim = x.Columns;
        if (rows == 0) return;
        using var _ = Range("rmsnorm_forward");
        Launch(RmsNormForwardKernel, new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0,
            new RmsNormForwardArgs(Dev(x), Dev(weight), eps, Dev(y), Dev(rstd), rows, dim), OpWork.Streaming(x.Length, 2, 4));
    }

    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, NormRule rule, Tensor dx)
    {
        bool exact = OpContracts.RmsNormBackward(dy, x, weight, rstd, rule, dx);
        int rows = x.Rows, dim = x.Columns;
        if (rows == 0) return;
        using var _ = Range("rmsnorm_backward");
        Launch(RmsNormBackwardKernel, new Dim3((uint)rows), new Dim3(RowBlock(dim)), 0,
            new RmsNormBackwardArgs(Dev(dy), Dev(x), Dev(weight), Dev(rstd), Dev(dx), rows, dim, exact ? 1 : 0), OpWork.Streaming(x.Length, 4, 8));
    }
}
