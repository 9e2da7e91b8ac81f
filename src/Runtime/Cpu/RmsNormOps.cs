namespace NeuronTrace.Runtime.Cpu;

/// <summary>RMSNorm forward and backward (exact, or the RelP LN-rule with the scale held constant).</summary>
public static class RmsNormOps
{
    public static void Forward(ReadOnlySpan<float> x, ReadOnlySpan<float> weight, float eps, Span<float> y, Span<float> rstd, int rows, int dim)
    {
        for (int r = 0; r < rows; r++)
        {
            var xr = x.Slice(r * dim, dim);
            double ss = 0;
            for (int i = 0; i < dim; i++) ss += (double)xr[i] * xr[i];
            float s = (float)(1.0 / Math.Sqrt(ss / dim + eps));
            rstd[r] = s;
            var yr = y.Slice(r * dim, dim);
            for (int i = 0; i < dim; i++) yr[i] = weight[i] * (xr[i] * s);
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
