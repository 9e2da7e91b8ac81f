using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

public static unsafe partial class Gemm
{
    /// <summary>Columns of C per task in the few-rows paths (multiple of 16).</summary>
    const int SmallChunk = 512;

    readonly struct SmallJob(Problem problem, int chunk)
    {
        public readonly Problem P = problem;
        public readonly int Chunk = chunk;
    }

    /// <summary>Few rows of A: no packing, B is streamed once; tasks split the columns of C.</summary>
    static void RunSmallM(in Problem p)
    {
        int workers = Workers(p.MultiplyAdds);
        int chunk = p.N;
        if (workers > 1)
        {
            // At least 2 chunks per worker so a busy core does not hold the product up; each a multiple of 16.
            int pieces = Math.Min(CeilDiv(p.N, 16), Math.Max(2 * workers, CeilDiv(p.N, 4096)));
            chunk = RoundUp(CeilDiv(p.N, pieces), 16);
        }
        int tasks = CeilDiv(p.N, chunk);
        ForEach(tasks, new SmallJob(p, chunk), static (job, index) =>
        {
            int j0 = index * job.Chunk, j1 = Math.Min(job.P.N, j0 + job.Chunk);
            if (job.P.TransposedB) SmallTransposedB(in job.P, j0, j1);
            else SmallPlain(in job.P, j0, j1);
        });
    }

    /// <summary>C[:, j0..j1) of A·Bᵀ as dot products of A rows with B rows: 3 rows of A × 4 rows of B at a time.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SmallTransposedB(in Problem p, int j0, int j1)
    {
        int k = p.K, n = p.N;
        float* sums = stackalloc float[12];
        for (int j = j0; j < j1; j += 4)
        {
            int nj = Math.Min(4, j1 - j);
            // Short groups repeat their last row; the duplicate results are discarded.
            float* b0 = p.B + (long)j * k;
            float* b1 = p.B + (long)(j + Math.Min(1, nj - 1)) * k;
            float* b2 = p.B + (long)(j + Math.Min(2, nj - 1)) * k;
            float* b3 = p.B + (long)(j + Math.Min(3, nj - 1)) * k;
            for (int i = 0; i < p.M; i += 3)
            {
                int ni = Math.Min(3, p.M - i);
                float* a0 = p.A + (long)i * k;
                float* a1 = p.A + (long)(i + Math.Min(1, ni - 1)) * k;
                float* a2 = p.A + (long)(i + Math.Min(2, ni - 1)) * k;
                Dot3x4(k, a0, a1, a2, b0, b1, b2, b3, sums);
                for (int ii = 0; ii < ni; ii++)
                {
                    float* dst = p.C + (long)(i + ii) * n + j;
                    for (int jj = 0; jj < nj; jj++)
                        dst[jj] = p.Accumulate ? dst[jj] + sums[ii * 4 + jj] : sums[ii * 4 + jj];
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Dot3x4(int k, float* a0, float* a1, float* a2, float* b0, float* b1, float* b2, float* b3, float* sums)
    {
        var s00 = Vector256<float>.Zero; var s01 = s00; var s02 = s00; var s03 = s00;
        var s10 = s00; var s11 = s00; var s12 = s00; var s13 = s00;
        var s20 = s00; var s21 = s00; var s22 = s00; var s23 = s00;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var x0 = Vector256.Load(b0 + p); var x1 = Vector256.Load(b1 + p);
            var x2 = Vector256.Load(b2 + p); var x3 = Vector256.Load(b3 + p);
            var y = Vector256.Load(a0 + p);
            s00 = MulAdd(y, x0, s00); s01 = MulAdd(y, x1, s01); s02 = MulAdd(y, x2, s02); s03 = MulAdd(y, x3, s03);
            y = Vector256.Load(a1 + p);
            s10 = MulAdd(y, x0, s10); s11 = MulAdd(y, x1, s11); s12 = MulAdd(y, x2, s12); s13 = MulAdd(y, x3, s13);
            y = Vector256.Load(a2 + p);
            s20 = MulAdd(y, x0, s20); s21 = MulAdd(y, x1, s21); s22 = MulAdd(y, x2, s22); s23 = MulAdd(y, x3, s23);
        }
        sums[0] = Vector256.Sum(s00); sums[1] = Vector256.Sum(s01); sums[2] = Vector256.Sum(s02); sums[3] = Vector256.Sum(s03);
        sums[4] = Vector256.Sum(s10); sums[5] = Vector256.Sum(s11); sums[6] = Vector256.Sum(s12); sums[7] = Vector256.Sum(s13);
        sums[8] = Vector256.Sum(s20); sums[9] = Vector256.Sum(s21); sums[10] = Vector256.Sum(s22); sums[11] = Vector256.Sum(s23);
        for (; p < k; p++)
        {
            float v0 = b0[p], v1 = b1[p], v2 = b2[p], v3 = b3[p], w0 = a0[p], w1 = a1[p], w2 = a2[p];
            sums[0] += w0 * v0; sums[1] += w0 * v1; sums[2] += w0 * v2; sums[3] += w0 * v3;
            sums[4] += w1 * v0; sums[5] += w1 * v1; sums[6] += w1 * v2; sums[7] += w1 * v3;
            sums[8] += w2 * v0; sums[9] += w2 * v1; sums[10] += w2 * v2; sums[11] += w2 * v3;
        }
    }

    /// <summary>
    /// C[:, j0..j1) of A·B by streaming rows of B: c[i, :] += Σ a[i, p] b[p, :], four rows of B and two rows of C at a time,
    /// over column blocks small enough that the C block and four B row pieces stay in L1.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SmallPlain(in Problem p, int j0, int j1)
    {
        int m = p.M, n = p.N, k = p.K;
        if (!p.Accumulate)
            for (int i = 0; i < m; i++) new Span<float>(p.C + (long)i * n + j0, j1 - j0).Clear();

        int block = Math.Max(64, 6144 / (4 + m) / 8 * 8);
        for (int jb = j0; jb < j1; jb += block)
        {
            int w = Math.Min(block, j1 - jb);
            int pp = 0;
            for (; pp + 4 <= k; pp += 4)
            {
                float* b = p.B + (long)pp * n + jb;
                for (int i = 0; i < m; i += 2)
                {
                    float* a0 = p.A + (long)i * k + pp;
                    float* c0 = p.C + (long)i * n + jb;
                    if (i + 1 < m) Axpy4x2(w, n, b, a0, a0 + k, c0, c0 + n);
                    else Axpy4x1(w, n, b, a0, c0);
                }
            }
            for (; pp < k; pp++)
            {
                float* b = p.B + (long)pp * n + jb;
                for (int i = 0; i < m; i++)
                {
                    float s = p.A[(long)i * k + pp];
                    float* c0 = p.C + (long)i * n + jb;
                    int j = 0;
                    var vs = Vector256.Create(s);
                    for (; j + 8 <= w; j += 8) Vector256.Store(MulAdd(vs, Vector256.Load(b + j), Vector256.Load(c0 + j)), c0 + j);
                    for (; j < w; j++) c0[j] += s * b[j];
                }
            }
        }
    }

    /// <summary>c0[0..w) += Σq a0[q]·b[q·ldb + ..], c1 likewise with a1, for q = 0..3.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Axpy4x2(int w, int ldb, float* b, float* a0, float* a1, float* c0, float* c1)
    {
        var x0 = Vector256.Create(a0[0]); var x1 = Vector256.Create(a0[1]); var x2 = Vector256.Create(a0[2]); var x3 = Vector256.Create(a0[3]);
        var y0 = Vector256.Create(a1[0]); var y1 = Vector256.Create(a1[1]); var y2 = Vector256.Create(a1[2]); var y3 = Vector256.Create(a1[3]);
        float* r0 = b, r1 = b + ldb, r2 = r1 + ldb, r3 = r2 + ldb;
        int j = 0;
        for (; j + 8 <= w; j += 8)
        {
            var v0 = Vector256.Load(r0 + j); var v1 = Vector256.Load(r1 + j); var v2 = Vector256.Load(r2 + j); var v3 = Vector256.Load(r3 + j);
            var s = Vector256.Load(c0 + j);
            s = MulAdd(x0, v0, s); s = MulAdd(x1, v1, s); s = MulAdd(x2, v2, s); s = MulAdd(x3, v3, s);
            Vector256.Store(s, c0 + j);
            var t = Vector256.Load(c1 + j);
            t = MulAdd(y0, v0, t); t = MulAdd(y1, v1, t); t = MulAdd(y2, v2, t); t = MulAdd(y3, v3, t);
            Vector256.Store(t, c1 + j);
        }
        for (; j < w; j++)
        {
            c0[j] += a0[0] * r0[j] + a0[1] * r1[j] + a0[2] * r2[j] + a0[3] * r3[j];
            c1[j] += a1[0] * r0[j] + a1[1] * r1[j] + a1[2] * r2[j] + a1[3] * r3[j];
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Axpy4x1(int w, int ldb, float* b, float* a0, float* c0)
    {
        var x0 = Vector256.Create(a0[0]); var x1 = Vector256.Create(a0[1]); var x2 = Vector256.Create(a0[2]); var x3 = Vector256.Create(a0[3]);
        float* r0 = b, r1 = b + ldb, r2 = r1 + ldb, r3 = r2 + ldb;
        int j = 0;
        for (; j + 8 <= w; j += 8)
        {
            var s = Vector256.Load(c0 + j);
            s = MulAdd(x0, Vector256.Load(r0 + j), s); s = MulAdd(x1, Vector256.Load(r1 + j), s);
            s = MulAdd(x2, Vector256.Load(r2 + j), s); s = MulAdd(x3, Vector256.Load(r3 + j), s);
            Vector256.Store(s, c0 + j);
        }
        for (; j < w; j++) c0[j] += a0[0] * r0[j] + a0[1] * r1[j] + a0[2] * r2[j] + a0[3] * r3[j];
    }
}
