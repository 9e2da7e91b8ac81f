using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>RMSNorm forward and backward (exact, or the RelP LN-rule with the scale held constant).</summary>
internal static class RmsNormOps
{
    /// <remarks>
    /// The sum of squares is accumulated in double, four lanes at a time (the order differs from a serial sum only at
    /// double rounding, far below what reaches the float result).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> y, Span<float> rstd, int rows, int dim)
    {
        if (x.Length < rows * dim || y.Length < rows * dim || weight.Length < dim || rstd.Length < rows)
            throw new ArgumentException("RmsNorm operands are smaller than rows × dim");
        fixed (float* px = x, pw = weight, py = y)
        {
            for (int r = 0; r < rows; r++)
            {
                float* xr = px + (long)r * dim, yr = py + (long)r * dim;
                int i = 0;
                var acc = Vector256<double>.Zero;
                for (; i + 8 <= dim; i += 8)
                {
                    var (lo, hi) = Vector256.Widen(Vector256.Load(xr + i));
                    acc = Vector256.FusedMultiplyAdd(lo, lo, acc);
                    acc = Vector256.FusedMultiplyAdd(hi, hi, acc);
                }
                double ss = Vector256.Sum(acc);
                for (; i < dim; i++) ss += (double)xr[i] * xr[i];
                float s = (float)(1.0 / Math.Sqrt(ss / dim + eps));
                rstd[r] = s;
                var vs = Vector256.Create(s);
                i = 0;
                for (; i + 8 <= dim; i += 8) Vector256.Store(Vector256.Load(pw + i) * (Vector256.Load(xr + i) * vs), yr + i);
                for (; i < dim; i++) yr[i] = pw[i] * (xr[i] * s);
            }
        }
    }

    /// <summary>dx += ∂y/∂x ᵀ dy. Exact: s·w⊙dy − s³/d · x · Σ w dy x. FrozenScale: s·w⊙dy.</summary>
    public static void Backward(ReadOnlySpan<float> dy, ReadOnlySpan<float> x, ReadOnlySpan<float> weight, ReadOnlySpan<float> rstd,
        NormRule rule, Span<float> dx, int rows, int dim)
    {
        for (int r = 0; r < rows; r++)
        {
            var dyr = dy.Slice(r * dim, dim);
            var xr = x.Slice(r * dim, dim);
            var dxr = dx.Slice(r * dim, dim);
            float s = rstd[r];
            float c = 0f;
            if (rule == NormRule.Exact)
            {
                double dot = 0;
                for (int i = 0; i < dim; i++) dot += (double)weight[i] * dyr[i] * xr[i];
                c = (float)(dot * s * s * s / dim);
            }
            for (int i = 0; i < dim; i++) dxr[i] += s * weight[i] * dyr[i] - c * xr[i];
        }
    }
}
