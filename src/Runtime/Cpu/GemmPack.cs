using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace NeuronTrace.Runtime.Cpu;

internal static unsafe partial class Gemm
{
    /// <summary>How far ahead (floats) the packers prefetch along a row.</summary>
    const int PrefetchAhead = 128;

    /// <summary>
    /// Packs rows [i0, i0+mc) × columns [p0, p0+kc) of row-major A (leading dimension lda) into row panels of MR rows:
    /// panel r holds A[i0 + r·MR + ii, p0 + p] at dst[r·MR·kc + p·MR + ii]; rows past mc are zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackA(float* a, int lda, int i0, int mc, int p0, int kc, float* dst)
    {
        for (int ir = 0; ir < mc; ir += MR, dst += MR * kc)
        {
            int mr = Math.Min(MR, mc - ir);
            float* src = a + (long)(i0 + ir) * lda + p0;
            if (mr == MR)
            {
                float* r0 = src, r1 = r0 + lda, r2 = r1 + lda, r3 = r2 + lda, r4 = r3 + lda, r5 = r4 + lda;
                int p = 0;
                if (Avx.IsSupported)
                {
                    // 8 columns at a time: transpose a 6×8 block (as 8×8 with two don't-care rows) into eight
                    // 6-float columns; each 8-float store overlaps the next column's start, which is rewritten next.
                    float* d = dst;
                    for (; p + 8 <= kc; p += 8, d += 8 * MR)
                    {
                        if (Sse.IsSupported && (p & 8) == 0)
                        {
                            Sse.Prefetch0(r0 + p + PrefetchAhead); Sse.Prefetch0(r1 + p + PrefetchAhead);
                            Sse.Prefetch0(r2 + p + PrefetchAhead); Sse.Prefetch0(r3 + p + PrefetchAhead);
                            Sse.Prefetch0(r4 + p + PrefetchAhead); Sse.Prefetch0(r5 + p + PrefetchAhead);
                        }
                        Transpose8x8(Avx.LoadVector256(r0 + p), Avx.LoadVector256(r1 + p), Avx.LoadVector256(r2 + p),
                            Avx.LoadVector256(r3 + p), Avx.LoadVector256(r4 + p), Avx.LoadVector256(r5 + p),
                            Vector256<float>.Zero, Vector256<float>.Zero,
                            out var c0, out var c1, out var c2, out var c3, out var c4, out var c5, out var c6, out var c7);
                        Avx.Store(d, c0);
                        Avx.Store(d + MR, c1);
                        Avx.Store(d + 2 * MR, c2);
                        Avx.Store(d + 3 * MR, c3);
                        Avx.Store(d + 4 * MR, c4);
                        Avx.Store(d + 5 * MR, c5);
                        Avx.Store(d + 6 * MR, c6);
                        Avx.Store(d + 7 * MR, c7); // spills 2 floats into the next column/panel or the buffer slack
                    }
                }
                for (; p < kc; p++)
                {
                    float* d = dst + p * MR;
                    d[0] = r0[p]; d[1] = r1[p]; d[2] = r2[p]; d[3] = r3[p]; d[4] = r4[p]; d[5] = r5[p];
                }
            }
            else
            {
                for (int p = 0; p < kc; p++)
                {
                    float* d = dst + p * MR;
                    int ii = 0;
                    for (; ii < mr; ii++) d[ii] = src[(long)ii * lda + p];
                    for (; ii < MR; ii++) d[ii] = 0f;
                }
            }
        }
    }

    /// <summary>
    /// A·Bᵀ: packs B rows [j0, j0+nc) (row-major [n, k], leading dimension ldb) × columns [p0, p0+kc) into panels of
    /// NR rows: panel r holds B[j0 + r·NR + jj, p0 + p] at dst[r·NR·kc + p·NR + jj]; rows past nc are zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackBRows(float* b, int ldb, int j0, int nc, int p0, int kc, float* dst)
    {
        for (int jr = 0; jr < nc; jr += NR, dst += NR * kc)
        {
            for (int half = 0; half < NR; half += 8)
            {
                int rows = Math.Min(8, nc - jr - half);
                float* src = b + (long)(j0 + jr + half) * ldb + p0;
                float* d0 = dst + half;
                if (rows <= 0)
                {
                    for (int p = 0; p < kc; p++) Vector256.Store(Vector256<float>.Zero, d0 + p * NR);
                    continue;
                }
                int pDone = 0;
                if (rows == 8 && Avx.IsSupported)
                {
                    float* s0 = src, s1 = s0 + ldb, s2 = s1 + ldb, s3 = s2 + ldb, s4 = s3 + ldb, s5 = s4 + ldb, s6 = s5 + ldb, s7 = s6 + ldb;
                    int p = 0;
                    for (; p + 8 <= kc; p += 8)
                    {
                        if (Sse.IsSupported && (p & 8) == 0)
                        {
                            // Eight rows are read at once, a row stride apart; help the prefetchers along.
                            Sse.Prefetch0(s0 + p + PrefetchAhead); Sse.Prefetch0(s1 + p + PrefetchAhead);
                            Sse.Prefetch0(s2 + p + PrefetchAhead); Sse.Prefetch0(s3 + p + PrefetchAhead);
                            Sse.Prefetch0(s4 + p + PrefetchAhead); Sse.Prefetch0(s5 + p + PrefetchAhead);
                            Sse.Prefetch0(s6 + p + PrefetchAhead); Sse.Prefetch0(s7 + p + PrefetchAhead);
                        }
                        Transpose8x8(Avx.LoadVector256(s0 + p), Avx.LoadVector256(s1 + p), Avx.LoadVector256(s2 + p),
                            Avx.LoadVector256(s3 + p), Avx.LoadVector256(s4 + p), Avx.LoadVector256(s5 + p),
                            Avx.LoadVector256(s6 + p), Avx.LoadVector256(s7 + p),
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
                    for (; jj < rows; jj++) d[jj] = src[(long)jj * ldb + p];
                    for (; jj < 8; jj++) d[jj] = 0f;
                }
            }
        }
    }

    /// <summary>
    /// A·B: packs B rows [p0, p0+kc) (row-major [k, n], leading dimension ldb) × columns [j0, j0+nc) into panels of NR
    /// columns, same layout as <see cref="PackBRows"/>; columns past nc are zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackBColumns(float* b, int ldb, int j0, int nc, int p0, int kc, float* dst)
    {
        // Eight rows of B at a time across all panels: B is read as eight sequential streams rather than down
        // columns (a power-of-two row stride would make a column walk thrash the caches).
        int full = nc / NR * NR;
        for (int pb = 0; pb < kc; pb += 8)
        {
            int pe = Math.Min(kc, pb + 8);
            float* src0 = b + (long)(p0 + pb) * ldb + j0;
            for (int jr = 0; jr < full; jr += NR)
            {
                float* src = src0 + jr, d = dst + (long)jr * kc + pb * NR;
                for (int p = pb; p < pe; p++, src += ldb, d += NR)
                {
                    Vector256.Store(Vector256.Load(src), d);
                    Vector256.Store(Vector256.Load(src + 8), d + 8);
                }
            }
            if (full < nc)
            {
                int nr = nc - full;
                float* src = src0 + full, d = dst + (long)full * kc + pb * NR;
                for (int p = pb; p < pe; p++, src += ldb, d += NR)
                {
                    int jj = 0;
                    for (; jj < nr; jj++) d[jj] = src[jj];
                    for (; jj < NR; jj++) d[jj] = 0f;
                }
            }
        }
    }

    /// <summary>8×8 transpose: output column q holds lane q of inputs r0..r7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Transpose8x8(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7,
        out Vector256<float> c0, out Vector256<float> c1, out Vector256<float> c2, out Vector256<float> c3,
        out Vector256<float> c4, out Vector256<float> c5, out Vector256<float> c6, out Vector256<float> c7)
    {
        // t: pairs of rows interleaved; s: quads of rows; c: 128-bit lanes recombined.
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE);
        var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE);
        var s4 = Avx.Shuffle(t4, t6, 0x44); var s5 = Avx.Shuffle(t4, t6, 0xEE);
        var s6 = Avx.Shuffle(t5, t7, 0x44); var s7 = Avx.Shuffle(t5, t7, 0xEE);
        c0 = Avx.Permute2x128(s0, s4, 0x20); c1 = Avx.Permute2x128(s1, s5, 0x20);
        c2 = Avx.Permute2x128(s2, s6, 0x20); c3 = Avx.Permute2x128(s3, s7, 0x20);
        c4 = Avx.Permute2x128(s0, s4, 0x31); c5 = Avx.Permute2x128(s1, s5, 0x31);
        c6 = Avx.Permute2x128(s2, s6, 0x31); c7 = Avx.Permute2x128(s3, s7, 0x31);
    }
}
