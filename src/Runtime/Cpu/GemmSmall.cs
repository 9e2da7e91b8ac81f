using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace NeuronTrace.Runtime.Cpu;

internal static unsafe partial class Gemm
{
    readonly struct SmallJob(Problem problem, int chunk)
    {
        public readonly Problem P = problem;
        public readonly int Chunk = chunk;
    }

    /// <summary>
    /// Few rows of A: no packing, B is streamed once, in order. Tasks split the columns of C, that is the output
    /// columns of the weight matrix: the rows of B for A·Bᵀ, a column range of every row of B for A·B. No task sums
    /// into scratch, so the result does not depend on how many cores share the product.
    /// </summary>
    static void RunSmallM(in Problem p)
    {
        int workers = Workers(p.MultiplyAdds);
        if (p.TransposedB)
        {
            int chunk = p.N;
            if (workers > 1)
            {
                // Two or more pieces per worker so that a busy core does not hold the product up.
                int pieces = Math.Min(CeilDiv(p.N, 4), Math.Max(2 * workers, CeilDiv(p.N, 4096)));
                chunk = RoundUp(CeilDiv(p.N, pieces), 4);
            }
            ForEach(CeilDiv(p.N, chunk), new SmallJob(p, chunk), static (job, index) =>
            {
                int j0 = index * job.Chunk;
                if (job.P.BHalf == null) SmallTransposedB(in job.P, j0, Math.Min(job.P.N, j0 + job.Chunk), null);
                else
                {
                    // 16-bit B: each group of four rows is widened into L1/L2 scratch just before its dot products.
                    var ws = RentWorkspace();
                    try
                    {
                        ws.Reserve(0, 4 * job.P.K);
                        SmallTransposedB(in job.P, j0, Math.Min(job.P.N, j0 + job.Chunk), ws.BPack);
                    }
                    finally { ReturnWorkspace(ws); }
                }
            });
            return;
        }

        // A·B: tasks split the columns of C (the columns of B), each streaming its part of every row of B, so B is
        // still read once in all, and every element of C is summed in k order by one task whatever the core count.
        int columnChunk = p.N;
        if (workers > 1)
        {
            int pieces = Math.Min(CeilDiv(p.N, 64), 2 * workers);
            // Multiples of 8 columns: each column keeps the vector or tail arithmetic it has in a one-task product.
            columnChunk = RoundUp(CeilDiv(p.N, Math.Max(1, pieces)), 8);
        }
        ForEach(CeilDiv(p.N, columnChunk), new SmallJob(p, columnChunk), static (job, index) =>
        {
            int j0 = index * job.Chunk;
            SmallPlain(in job.P, j0, Math.Min(job.P.N, j0 + job.Chunk));
        });
    }

    /// <summary>
    /// C[:, j0..j1) of A·Bᵀ as dot products of A rows with B rows, 2 rows of A × 4 rows of B at a time. k is cut into
    /// chunks so that the chunk of all rows of A plus the chunk of four B rows stay in L1; partial sums stay as vectors
    /// until the group of four B rows is done. With 16-bit B, <paramref name="widened"/> (4·k floats) receives each
    /// group of four rows widened to fp32, and the same dot products run on it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SmallTransposedB(in Problem p, int j0, int j1, float* widened)
    {
        int k = p.K, n = p.N, m = p.M, pairs = (m + 1) / 2;
        int chunk = Math.Max(64, Math.Min(k, 6144 / (m + 4) / 8 * 8));   // (m + 4) · chunk floats ≤ 24 KiB
        var partial = stackalloc Vector256<float>[pairs * 8];
        float* sums = stackalloc float[4];
        for (int j = j0; j < j1; j += 4)
        {
            int nj = Math.Min(4, j1 - j);
            float* rows = p.B + (long)j * k;
            if (widened != null)
            {
                WidenRow(p.BHalf + (long)j * k, widened, nj * k, p.BFormat);
                rows = widened;
            }
            // Short groups repeat their last row; the duplicate results are discarded.
            float* b0 = rows;
            float* b1 = rows + (long)Math.Min(1, nj - 1) * k;
            float* b2 = rows + (long)Math.Min(2, nj - 1) * k;
            float* b3 = rows + (long)Math.Min(3, nj - 1) * k;
            new Span<Vector256<float>>(partial, pairs * 8).Clear();
            // With several passes over these rows, the passes also walk a prefetch cursor through the next four rows
            // of B (contiguous), a line per step, so that DRAM streams while this group is being reused from L1.
            // (16-bit B is read sequentially by the widening, which the hardware prefetchers follow on their own.)
            float* pf = b0 + 4L * k, pfEnd = widened == null && pairs > 1 && j + 8 <= j1 ? pf + 4L * k : pf;
            int pc = 0;
            for (; pc + 8 <= k; pc += chunk)
            {
                int kc = Math.Min(chunk, k - pc) & ~7;
                for (int pair = 0; pair < pairs; pair++)
                {
                    float* a0 = p.A + (long)(2 * pair) * k + pc;
                    float* a1 = 2 * pair + 1 < m ? a0 + k : a0;
                    pf = Dot2x4(kc, a0, a1, b0 + pc, b1 + pc, b2 + pc, b3 + pc, partial + pair * 8, pf, pfEnd);
                }
                if (kc < chunk) { pc += kc; break; }
            }
            for (int pair = 0; pair < pairs; pair++)
                for (int ii = 0; ii < 2 && 2 * pair + ii < m; ii++)
                {
                    int i = 2 * pair + ii;
                    float* a = p.A + (long)i * k;
                    float* dst = p.C + (long)i * n + j;
                    Sum4(partial + pair * 8 + ii * 4, sums);
                    for (int jj = 0; jj < nj; jj++)
                    {
                        float* b = rows + (long)jj * k;
                        float sum = sums[jj];
                        for (int q = pc; q < k; q++) sum += a[q] * b[q];
                        dst[jj] = p.Accumulate ? dst[jj] + sum : sum;
                    }
                }
        }
    }

    /// <summary>sums[q] = horizontal sum of v[q], q = 0..3.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Sum4(Vector256<float>* v, float* sums)
    {
        if (Avx.IsSupported)
        {
            var h = Avx.HorizontalAdd(Avx.HorizontalAdd(v[0], v[1]), Avx.HorizontalAdd(v[2], v[3]));
            Sse.Store(sums, Sse.Add(h.GetLower(), h.GetUpper()));
        }
        else
            for (int q = 0; q < 4; q++) sums[q] = Vector256.Sum(v[q]);
    }

    /// <summary>
    /// acc[i·4 + j] += a_i ⊙ b_j summed over 8-float steps (kc a multiple of 8): eight accumulators, four B vectors
    /// and one A vector in registers.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float* Dot2x4(int kc, float* a0, float* a1, float* b0, float* b1, float* b2, float* b3, Vector256<float>* acc,
        float* prefetch, float* prefetchEnd)
    {
        var s00 = acc[0]; var s01 = acc[1]; var s02 = acc[2]; var s03 = acc[3];
        var s10 = acc[4]; var s11 = acc[5]; var s12 = acc[6]; var s13 = acc[7];
        for (int p = 0; p < kc; p += 8)
        {
            if (Sse.IsSupported && prefetch < prefetchEnd)
            {
                Sse.Prefetch0(prefetch);
                prefetch += 16;
            }
            var x0 = Vector256.Load(b0 + p); var x1 = Vector256.Load(b1 + p);
            var x2 = Vector256.Load(b2 + p); var x3 = Vector256.Load(b3 + p);
            var y = Vector256.Load(a0 + p);
            s00 = MulAdd(y, x0, s00); s01 = MulAdd(y, x1, s01); s02 = MulAdd(y, x2, s02); s03 = MulAdd(y, x3, s03);
            y = Vector256.Load(a1 + p);
            s10 = MulAdd(y, x0, s10); s11 = MulAdd(y, x1, s11); s12 = MulAdd(y, x2, s12); s13 = MulAdd(y, x3, s13);
        }
        acc[0] = s00; acc[1] = s01; acc[2] = s02; acc[3] = s03;
        acc[4] = s10; acc[5] = s11; acc[6] = s12; acc[7] = s13;
        return prefetch;
    }

    /// <summary>
    /// Columns [j0, j1) of c[m, n] (+)= A · B by streaming rows of B: c[i, j0..j1) += Σ a[i, q]·b[q, j0..j1), four rows
    /// of B and two rows of C at a time (C stays in L1/L2 for the few rows this path serves).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SmallPlain(in Problem p, int j0, int j1)
    {
        if (p.BHalf == null) { SmallPlain(in p, j0, j1, null); return; }
        // 16-bit B: each group of four row pieces of B is widened into L1/L2 scratch before the axpys read it.
        var ws = RentWorkspace();
        try
        {
            ws.Reserve(0, 4 * (j1 - j0));
            SmallPlain(in p, j0, j1, ws.BPack);
        }
        finally { ReturnWorkspace(ws); }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SmallPlain(in Problem p, int j0, int j1, float* widened)
    {
        int m = p.M, n = p.N, k = p.K, w = j1 - j0;
        float* c = p.C + j0;
        if (!p.Accumulate)
            for (int i = 0; i < m; i++) new Span<float>(c + (long)i * n, w).Clear();
        // A widened piece is packed: its rows lie w apart; rows of B itself lie n apart.
        int ldb = widened != null ? w : n;

        int q = 0;
        for (; q + 4 <= k; q += 4)
        {
            float* b = p.B + (long)q * n + j0;
            if (widened != null)
            {
                for (int r = 0; r < 4; r++) WidenRow(p.BHalf + (long)(q + r) * n + j0, widened + r * w, w, p.BFormat);
                b = widened;
            }
            // With several passes over these rows, the passes also walk a prefetch cursor through the next four rows
            // of B (contiguous, 4n floats, when this task has all the columns), a line per step; a single pass, or a
            // piece of each row, streams well enough on its own.
            float* pf = b + 4L * n, pfEnd = widened == null && w == n && m > 2 && q + 8 <= k ? pf + 4L * n : pf;
            for (int i = 0; i < m; i += 2)
            {
                float* a0 = p.A + (long)i * k + q;
                float* c0 = c + (long)i * n;
                if (i + 1 < m) pf = Axpy4x2(w, ldb, b, a0, a0 + k, c0, c0 + n, pf, pfEnd);
                else pf = Axpy4x1(w, ldb, b, a0, c0, pf, pfEnd);
            }
        }
        for (; q < k; q++)
        {
            float* b = p.B + (long)q * n + j0;
            if (widened != null)
            {
                WidenRow(p.BHalf + (long)q * n + j0, widened, w, p.BFormat);
                b = widened;
            }
            for (int i = 0; i < m; i++)
            {
                float s = p.A[(long)i * k + q];
                float* c0 = c + (long)i * n;
                int j = 0;
                var vs = Vector256.Create(s);
                for (; j + 8 <= w; j += 8) Vector256.Store(MulAdd(vs, Vector256.Load(b + j), Vector256.Load(c0 + j)), c0 + j);
                for (; j < w; j++) c0[j] += s * b[j];
            }
        }
    }

    /// <summary>c0[0..w) += Σq a0[q]·b[q·ldb + ..], c1 likewise with a1, for q = 0..3.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float* Axpy4x2(int w, int ldb, float* b, float* a0, float* a1, float* c0, float* c1, float* prefetch, float* prefetchEnd)
    {
        var x0 = Vector256.Create(a0[0]); var x1 = Vector256.Create(a0[1]); var x2 = Vector256.Create(a0[2]); var x3 = Vector256.Create(a0[3]);
        var y0 = Vector256.Create(a1[0]); var y1 = Vector256.Create(a1[1]); var y2 = Vector256.Create(a1[2]); var y3 = Vector256.Create(a1[3]);
        float* r0 = b, r1 = b + ldb, r2 = r1 + ldb, r3 = r2 + ldb;
        int j = 0;
        for (; j + 8 <= w; j += 8)
        {
            if (Sse.IsSupported && prefetch < prefetchEnd)
            {
                Sse.Prefetch0(prefetch);
                prefetch += 16;
            }
            var v0 = Vector256.Load(r0 + j); var v1 = Vector256.Load(r1 + j); var v2 = Vector256.Load(r2 + j); var v3 = Vector256.Load(r3 + j);
            // Both C loads before either store: the rows are often a multiple of 4 KiB apart, and a load behind a
            // store to the same address bits would wait on a false dependency.
            var s = Vector256.Load(c0 + j);
            var t = Vector256.Load(c1 + j);
            s = MulAdd(x0, v0, s); s = MulAdd(x1, v1, s); s = MulAdd(x2, v2, s); s = MulAdd(x3, v3, s);
            t = MulAdd(y0, v0, t); t = MulAdd(y1, v1, t); t = MulAdd(y2, v2, t); t = MulAdd(y3, v3, t);
            Vector256.Store(s, c0 + j);
            Vector256.Store(t, c1 + j);
        }
        for (; j < w; j++)
        {
            c0[j] += a0[0] * r0[j] + a0[1] * r1[j] + a0[2] * r2[j] + a0[3] * r3[j];
            c1[j] += a1[0] * r0[j] + a1[1] * r1[j] + a1[2] * r2[j] + a1[3] * r3[j];
        }        return prefetch;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static float* Axpy4x1(int w, int ldb, float* b, float* a0, float* c0, float* prefetch, float* prefetchEnd)
    {
        var x0 = Vector256.Create(a0[0]); var x1 = Vector256.Create(a0[1]); var x2 = Vector256.Create(a0[2]); var x3 = Vector256.Create(a0[3]);
        float* r0 = b, r1 = b + ldb, r2 = r1 + ldb, r3 = r2 + ldb;
        int j = 0;
        for (; j + 8 <= w; j += 8)
        {
            if (Sse.IsSupported && prefetch < prefetchEnd)
            {
                Sse.Prefetch0(prefetch);
                prefetch += 16;
            }
            var s = Vector256.Load(c0 + j);
            s = MulAdd(x0, Vector256.Load(r0 + j), s); s = MulAdd(x1, Vector256.Load(r1 + j), s);
            s = MulAdd(x2, Vector256.Load(r2 + j), s); s = MulAdd(x3, Vector256.Load(r3 + j), s);
            Vector256.Store(s, c0 + j);
        }
        for (; j < w; j++) c0[j] += a0[0] * r0[j] + a0[1] * r1[j] + a0[2] * r2[j] + a0[3] * r3[j];
        return prefetch;
    }
}
