using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// Vectorised exp and the element-wise loops of the CPU ops, compiled fully optimised on first call.
/// </summary>
/// <remarks>
/// TensorPrimitives' generic kernels start as unoptimised tier-0 (or ReadyToRun) code and reach tier 1 only after
/// the runtime's call counting and a background recompile: measured here, Exp over 4096 floats took 400 µs at first,
/// 64 µs for the next ~0.3 s and 5–13 µs only after about 0.4–0.8 s (longer on a loaded machine). A whole
/// stories260K forward takes a few milliseconds, so short jobs and benchmarks ran mostly on the slow code. These
/// loops are <see cref="MethodImplOptions.AggressiveOptimization"/> instead, which the JIT compiles at full
/// optimisation immediately.
/// </remarks>
internal static class SimdMath
{
    // Cephes expf: e^x = 2^n · e^r with n = round(x·log2 e), r = x − n·ln 2 (ln 2 split in two for exactness),
    // e^r by a degree-6 polynomial on |r| ≤ ln2/2; about 1 ulp. Inputs are clamped to [−87.3, 88]: the result stays a
    // normal float (2^n is built from the exponent bits), so e^x below e^−87.3 comes out as about 1.2e−38, not 0.
    const float ExpHi = 88.0f, ExpLo = -87.33654f;
    const float Log2E = 1.44269504088896341f, Ln2Hi = 0.693359375f, Ln2Lo = -2.12194440e-4f;
    const float P0 = 1.9875691500e-4f, P1 = 1.3981999507e-3f, P2 = 8.3334519073e-3f, P3 = 4.1665795894e-2f,
        P4 = 1.6666665459e-1f, P5 = 5.0000001201e-1f;

    /// <summary>e^x per lane (NaN stays NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp(Vector256<float> x)
    {
        // Max/Min propagate NaN (IEEE 754-2019 semantics), so a NaN input gives a NaN result.
        x = Vector256.Min(Vector256.Max(x, Vector256.Create(ExpLo)), Vector256.Create(ExpHi));
        var n = Vector256.Floor(Vector256.FusedMultiplyAdd(x, Vector256.Create(Log2E), Vector256.Create(0.5f)));
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-Ln2Hi), x);
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-Ln2Lo), r);
        var p = Vector256.Create(P0);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P1));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P2));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P3));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P4));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(P5));
        p = Vector256.FusedMultiplyAdd(p, r * r, r + Vector256<float>.One);
        var scale = (Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23;
        return p * scale.AsSingle();
    }

    /// <summary>Scalar twin of <see cref="Exp(Vector256{float})"/> (same clamps and polynomial), for tails.</summary>
    public static float Exp(float x) => Exp(Vector256.Create(x)).ToScalar();

    /// <summary>x = e^x in place.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void ExpInPlace(Span<float> x)
    {
        fixed (float* p = x)
        {
            int i = 0, n = x.Length;
            for (; i + 8 <= n; i += 8) Vector256.Store(Exp(Vector256.Load(p + i)), p + i);
            for (; i < n; i++) p[i] = Exp(p[i]);
        }
    }

    /// <summary>h = silu(g) ⊙ u = g·σ(g)·u, σ(g) = 1/(1 + e^−g).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void SiluTimes(ReadOnlySpan<float> gate, ReadOnlySpan<float> up, Span<float> h)
    {
        if (up.Length != gate.Length || h.Length != gate.Length) throw new ArgumentException("SwiGLU operands differ in length");
        fixed (float* g = gate, u = up, o = h)
        {
            int i = 0, n = gate.Length;
            var one = Vector256<float>.One;
            for (; i + 8 <= n; i += 8)
            {
                var gv = Vector256.Load(g + i);
                var sig = one / (one + Exp(-gv));
                Vector256.Store(gv * sig * Vector256.Load(u + i), o + i);
            }
            for (; i < n; i++) o[i] = g[i] / (1f + Exp(-g[i])) * u[i];
        }
    }

    /// <summary>d += s.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void AddInPlace(Span<float> d, ReadOnlySpan<float> s)
    {
        if (s.Length != d.Length) throw new ArgumentException("Add operands differ in length");
        fixed (float* pd = d, ps = s)
        {
            int i = 0, n = d.Length;
            for (; i + 8 <= n; i += 8) Vector256.Store(Vector256.Load(pd + i) + Vector256.Load(ps + i), pd + i);
            for (; i < n; i++) pd[i] += ps[i];
        }
    }

    /// <summary>d = a + b.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Sum(ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> d)
    {
        if (a.Length != d.Length || b.Length != d.Length) throw new ArgumentException("Sum operands differ in length");
        fixed (float* pd = d, pa = a, pb = b)
        {
            int i = 0, n = d.Length;
            for (; i + 8 <= n; i += 8) Vector256.Store(Vector256.Load(pa + i) + Vector256.Load(pb + i), pd + i);
            for (; i < n; i++) pd[i] = pa[i] + pb[i];
        }
    }

    /// <summary>x = x ⊙ scale + offset with one rounding per element (a fused multiply-add, like the CUDA kernel's fmaf).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void FusedMultiplyAddInPlace(Span<float> x, ReadOnlySpan<float> scale, ReadOnlySpan<float> offset)
    {
        if (scale.Length != x.Length || offset.Length != x.Length) throw new ArgumentException("Intervene operands differ in length");
        fixed (float* px = x, ps = scale, po = offset)
        {
            int i = 0, n = x.Length;
            for (; i + 8 <= n; i += 8)
                Vector256.Store(Vector256.FusedMultiplyAdd(Vector256.Load(px + i), Vector256.Load(ps + i), Vector256.Load(po + i)), px + i);
            for (; i < n; i++) px[i] = MathF.FusedMultiplyAdd(px[i], ps[i], po[i]);
        }
    }

    /// <summary>x ⊙= scale.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void MultiplyInPlace(Span<float> x, ReadOnlySpan<float> scale)
    {
        if (scale.Length != x.Length) throw new ArgumentException("Multiply operands differ in length");
        fixed (float* px = x, ps = scale)
        {
            int i = 0, n = x.Length;
            for (; i + 8 <= n; i += 8) Vector256.Store(Vector256.Load(px + i) * Vector256.Load(ps + i), px + i);
            for (; i < n; i++) px[i] *= ps[i];
        }
    }
}
