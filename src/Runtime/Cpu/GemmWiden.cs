using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// Widening of 16-bit weights (bf16, f16) to fp32, exact in both cases. The packers and the few-row kernels call
/// <see cref="Widen8"/> on the fly, so that 16-bit weights are read from memory at half the bytes of fp32 ones and the
/// fp32 micro-kernels run unchanged: a product over 16-bit weights equals, bit for bit, the same product over the
/// widened weights.
/// </summary>
/// <remarks>
/// .NET 10 exposes no AVX-512 BF16 intrinsics (there is no <c>Avx512Bf16</c> class and <c>Avx10v1</c>/<c>Avx10v2</c>
/// carry no <c>vdpbf16ps</c>), so there is no bf16 dot-product path; the widening path is the only one.
/// </remarks>
internal static unsafe partial class Gemm
{
    /// <summary>Widens <paramref name="source"/> into <paramref name="destination"/> (same length).</summary>
    public static void WidenHalf(ReadOnlySpan<ushort> source, HalfFormat format, Span<float> destination)
    {
        if (source.Length != destination.Length) throw new ArgumentException($"widening {source.Length} values into {destination.Length}");
        fixed (ushort* s = source)
        fixed (float* d = destination)
            WidenRow(s, d, source.Length, format);
    }

    /// <summary>d[0..count) = widen(s[0..count)).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void WidenRow(ushort* s, float* d, int count, HalfFormat format)
    {
        int i = 0;
        if (Avx2.IsSupported)
            for (; i + 8 <= count; i += 8) Avx.Store(d + i, Widen8(s + i, format));
        for (; i < count; i++) d[i] = WidenOne(s[i], format);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static float WidenOne(ushort bits, HalfFormat format) => HalfWeights.Widen(bits, format);

    /// <summary>Eight 16-bit values at <paramref name="s"/> widened to fp32 (AVX2 only).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> Widen8(ushort* s, HalfFormat format)
    {
        var u = Avx2.ConvertToVector256Int32(Sse2.LoadVector128(s));   // zero-extends each 16-bit value
        if (format == HalfFormat.BFloat16) return Avx2.ShiftLeftLogical(u, 16).AsSingle();
        // binary16 → binary32: exponent and mantissa shifted into place and scaled by 2^112 (exact for normals and
        // subnormals); infinities and NaNs get the all-ones exponent; the sign is put back last.
        var magnitude = Avx2.And(u, Vector256.Create(0x7FFF));
        var shifted = Avx2.ShiftLeftLogical(magnitude, 13);
        var scaled = Avx.Multiply(shifted.AsSingle(), Vector256.Create(0x77800000).AsSingle());   // 2^112
        var special = Avx2.CompareGreaterThan(magnitude, Vector256.Create(0x7BFF));
        var infNan = Avx2.Or(shifted, Vector256.Create(0x7F800000)).AsSingle();
        var value = Avx.BlendVariable(scaled, infNan, special.AsSingle());
        var sign = Avx2.ShiftLeftLogical(Avx2.And(u, Vector256.Create(0x8000)), 16);
        return Avx.Or(value, sign.AsSingle());
    }

    /// <summary><see cref="PackBRows"/> over 16-bit B: the same panels, each value widened as it is packed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackBRowsHalf(ushort* b, HalfFormat f, int ldb, int j0, int nc, int p0, int kc, float* dst)
    {
        for (int jr = 0; jr < nc; jr += NR, dst += NR * kc)
        {
            for (int half = 0; half < NR; half += 8)
            {
                int rows = Math.Min(8, nc - jr - half);
                ushort* src = b + (long)(j0 + jr + half) * ldb + p0;
                float* d0 = dst + half;
                if (rows <= 0)
                {
                    for (int p = 0; p < kc; p++) new Span<float>(d0 + p * NR, 8).Clear();
                    continue;
                }
                int pDone = 0;
                if (rows == 8 && Avx2.IsSupported)
                {
                    ushort* s0 = src, s1 = s0 + ldb, s2 = s1 + ldb, s3 = s2 + ldb, s4 = s3 + ldb, s5 = s4 + ldb, s6 = s5 + ldb, s7 = s6 + ldb;
                    int p = 0;
                    for (; p + 8 <= kc; p += 8)
                    {
                        if ((p & 24) == 0)
                        {
                            // Eight rows read at once, a row stride apart: a 64-byte line holds 32 values here.
                            Sse.Prefetch0(s0 + p + PrefetchAhead); Sse.Prefetch0(s1 + p + PrefetchAhead);
                            Sse.Prefetch0(s2 + p + PrefetchAhead); Sse.Prefetch0(s3 + p + PrefetchAhead);
                            Sse.Prefetch0(s4 + p + PrefetchAhead); Sse.Prefetch0(s5 + p + PrefetchAhead);
                            Sse.Prefetch0(s6 + p + PrefetchAhead); Sse.Prefetch0(s7 + p + PrefetchAhead);
                        }
                        Transpose8x8(Widen8(s0 + p, f), Widen8(s1 + p, f), Widen8(s2 + p, f), Widen8(s3 + p, f),
                            Widen8(s4 + p, f), Widen8(s5 + p, f), Widen8(s6 + p, f), Widen8(s7 + p, f),
                            out var c0, out var c1, out var c2, out var c3, out var c4, out var c5, out var c6, out var c7);
                        float* d = d0 + p * NR;
                        Avx.StoreAligned(d, c0);
                        Avx.StoreAligned(d + NR, c1);
                        Avx.StoreAligned(d + 2 * NR, c2);
                        Avx.StoreAligned(d + 3 * NR, c3);
                        Avx.StoreAligned(d + 4 * NR, c4);
                        Avx.StoreAligned(d + 5 * NR, c5);
                        Avx.StoreAligned(d + 6 * NR, c6);
                        Avx.StoreAligned(d + 7 * NR, c7);
                    }
                    pDone = p;
                }
                for (int p = pDone; p < kc; p++)
                {
                    float* d = d0 + p * NR;
                    int jj = 0;
                    for (; jj < rows; jj++) d[jj] = WidenOne(src[(long)jj * ldb + p], f);
                    for (; jj < 8; jj++) d[jj] = 0f;
                }
            }
        }
    }

    /// <summary><see cref="PackBColumns"/> over 16-bit B: the same panels, each value widened as it is packed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackBColumnsHalf(ushort* b, HalfFormat f, int ldb, int j0, int nc, int p0, int kc, float* dst)
    {
        int full = Avx2.IsSupported ? nc / NR * NR : 0;
        for (int pb = 0; pb < kc; pb += 8)
        {
            int pe = Math.Min(kc, pb + 8);
            ushort* src0 = b + (long)(p0 + pb) * ldb + j0;
            for (int jr = 0; jr < full; jr += NR)
            {
                ushort* src = src0 + jr;
                float* d = dst + (long)jr * kc + pb * NR;
                for (int p = pb; p < pe; p++, src += ldb, d += NR)
                {
                    Avx.Store(d, Widen8(src, f));
                    Avx.Store(d + 8, Widen8(src + 8, f));
                }
            }
            for (int jr = full; jr < nc; jr += NR)
            {
                int nr = Math.Min(NR, nc - jr);
                ushort* src = src0 + jr;
                float* d = dst + (long)jr * kc + pb * NR;
                for (int p = pb; p < pe; p++, src += ldb, d += NR)
                {
                    int jj = 0;
                    for (; jj < nr; jj++) d[jj] = WidenOne(src[jj], f);
                    for (; jj < NR; jj++) d[jj] = 0f;
                }
            }
        }
    }
}
