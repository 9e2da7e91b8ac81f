using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// The matrix products (cuBLAS through <see cref="IDeviceRuntime.Sgemm"/>, the row-major mapping in
/// <see cref="GemmCall"/>) and, for <see cref="GemmPrecision.Bf16"/>, the f32_to_bf16 conversion of
/// native/kernels/convert.cu that rounds their operands.
/// </summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct ConvertArgs(nint Source, nint Destination, long N);
    internal static readonly Kernel<ConvertArgs> F32ToBf16 = Kernel.Declare<ConvertArgs>("f32_to_bf16");

    public void MatMul(Tensor x, Tensor w, Tensor y, bool accumulate)
    {
        OpContracts.MatMul(x, w, y);
        using var _ = Range("matmul");
        Gemm(GemmCall.MatMul(Dev(x), Dev(w), Dev(y), x.Rows, w.Shape[0], w.Columns, accumulate), y, accumulate, w, x);
    }

    public void MatMulInputGrad(Tensor dy, Tensor w, Tensor dx, bool accumulate)
    {
        OpContracts.MatMulInputGrad(dy, w, dx);
        using var _ = Range("matmul_input_grad");
        Gemm(GemmCall.MatMulInputGrad(Dev(dy), Dev(w), Dev(dx), dy.Rows, w.Shape[0], w.Columns, accumulate), dx, accumulate, w, dy);
    }

    /// <summary>Both products have the weight as cuBLAS's A and the activation (x or dy) as B.</summary>
    void Gemm(in GemmCall call, Tensor c, bool accumulate, Tensor weight, Tensor activation)
    {
        if (call.M == 0 || call.N == 0) return;
        if (call.K == 0)  // an empty sum: BLAS leaves C alone only with beta = 1
        {
            if (!accumulate) Fill(c, 0f);
            return;
        }
        if (Precision == GemmPrecision.Bf16)
        {
            device.Sgemm(call with { Precision = Precision, A = WeightBf16(weight), B = ToBf16(activation, ref activationBf16, ref activationBf16Capacity) });
            return;
        }
        device.Sgemm(call with { Precision = Precision });
    }

    /// <summary>
    /// The bf16 copy of a weight: made once and kept for a tensor marked <see cref="CudaTensor.IsConstant"/> (the
    /// model's weights), else converted into a scratch buffer for this product only, since its values may change.
    /// </summary>
    nint WeightBf16(Tensor weight)
    {
        var w = (CudaTensor)weight;
        if (!w.IsConstant) return ToBf16(w, ref weightBf16, ref weightBf16Capacity);
        if (bf16Weights.TryGetValue(w, out var copy)) return copy.DangerousGetHandle();
        foreach (var gone in bf16Weights.Keys.Where(t => t.IsDisposed).ToList())  // a model disposed on a living backend
        {
            bf16Weights[gone].Dispose();
            bf16Weights.Remove(gone);
        }
        copy = device.Allocate(Math.Max(2, w.Length * 2));
        ConvertToBf16(w.Pointer, copy.DangerousGetHandle(), w.Length);
        bf16Weights[w] = copy;
        return copy.DangerousGetHandle();
    }

    nint ToBf16(Tensor t, ref SafeHandle? scratch, ref long capacity)
    {
        nint p = Stage(ref scratch, ref capacity, t.Length * 2);
        ConvertToBf16(Dev(t), p, t.Length);
        return p;
    }

    void ConvertToBf16(nint source, nint destination, long n)
    {
        if (n == 0) return;
        using var _ = Range("f32_to_bf16");
        Launch(F32ToBf16, GridFor(n), new Dim3(ElementwiseBlock), 0, new ConvertArgs(source, destination, n), new OpWork(0, n * 6.0));
    }
}
