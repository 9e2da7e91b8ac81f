using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>Causal grouped-query attention on the host; rows are b·T + t; query head h reads kv head h / group.</summary>
internal static unsafe partial class AttentionOps
{
    /// <summary>
    /// z and probs (zeros above the diagonal written). Work items are (batch, kv head), so the group's query heads
    /// share one transposed copy of the kv head's keys.
    /// </summary>
    /// <remarks>
    /// Small heads made a per-(query, key) loop all overhead (a dot product of 8 floats and its horizontal sum per key,
    /// five span calls per softmax row). Here keys are transposed to [headDim, T] so that a score vector covers 8 keys
    /// and costs headDim broadcast FMAs; four queries share each key load; the four rows' exps go through one vectorised
    /// Exp call; and P·V keeps four queries' accumulators in registers per 8-wide slice of the head.
    /// </remarks>
    public static void Forward(float[] q, float[] k, float[] v, AttentionShape s, float[] z, float[] probs)
    {
        int items = s.Batch * s.KvHeads;
        if (items == 0 || s.SeqLen == 0 || s.HeadDim == 0) return;
        if ((long)s.Rows * s.SeqLen * s.QWidth <= ForwardParallelWork)
        {
            for (int i = 0; i < items; i++) ForwardItem(q, k, v, s, z, probs, i);
            return;
        }
        Parallel.For(0, items, i => ForwardItem(q, k, v, s, z, probs, i));
    }

    /// <summary>Below this many score multiply-adds (rows · T · heads · headDim) attention runs on the calling thread.</summary>
    const long ParallelWork = 1L << 21;

    /// <summary>
    /// The forward runs serially up to and including this (the backward only below it): at stories260K's batch (8 × 64, 8 heads of 8, exactly 2^21) a
    /// parallel forward was no faster at best (259 vs 254 µs) and slower on average (585 vs 329 µs: hand-off jitter),
    /// while the backward, with about twice the work per item, still gains from two threads (372 vs 505 µs).
    /// </summary>
    const long ForwardParallelWork = 1L << 21;

    /// <summary>Query rows per block: they share every key and value load.</summary>
    const int QB = 4;

    [ThreadStatic] static float[]? _scratch;

    /// <summary>Row <paramref name="i"/> of a block of <see cref="QB"/> rows starting at <paramref name="t0"/>; rows past a
    /// short block's end repeat its last row, so the 4-row loops need no branches (their results are never stored).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float* BlockRow(float* rowsBase, int ld, int t0, int rows, int i) => rowsBase + (long)(t0 + Math.Min(i, rows - 1)) * ld;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ForwardItem(float[] q, float[] k, float[] v, AttentionShape s, float[] z, float[] probs, int item)
    {
        int T = s.SeqLen, hd = s.HeadDim, tp = (T + 7) & ~7;
        int b = item / s.KvHeads, kvh = item % s.KvHeads;
        int need = hd * tp + QB * tp;
        if (_scratch is null || _scratch.Length < need) _scratch = new float[need];
        float scale = 1f / MathF.Sqrt(hd);
        fixed (float* pq = q, pk = k, pv = v, pz = z, pp = probs, buf = _scratch)
        {
            float* kt = buf, sc = buf + hd * tp;
            // Kᵀ for this (batch, kv head), keys padded to a multiple of 8 with zeros (masked later).
            for (int u = 0; u < T; u++)
            {
                float* kr = pk + (long)(b * T + u) * s.KvWidth + kvh * hd;
                for (int d = 0; d < hd; d++) kt[d * tp + u] = kr[d];
            }
            for (int d = 0; d < hd; d++)
                for (int u = T; u < tp; u++) kt[d * tp + u] = 0f;
            float* vBase = pv + (long)b * T * s.KvWidth + kvh * hd;

            for (int h = kvh * s.Group; h < (kvh + 1) * s.Group; h++)
            {
                float* p = pp + (long)(b * s.Heads + h) * T * T;
                float* qBase = pq + (long)b * T * s.QWidth + h * hd;
                float* zBase = pz + (long)b * T * s.QWidth + h * hd;
                for (int t0 = 0; t0 < T; t0 += QB)
                {
                    int rows = Math.Min(QB, T - t0);
                    int keys = t0 + rows, width = (keys + 7) & ~7;
                    Scores(qBase, s.QWidth, t0, rows, kt, tp, hd, width, scale, sc);
                    Softmax(sc, width, t0, rows);
                    for (int i = 0; i < rows; i++)
                    {
                        float* src = sc + i * width, dst = p + (long)(t0 + i) * T;
                        int n = Math.Min(width, T);
                        new Span<float>(src, n).CopyTo(new Span<float>(dst, n));
                        if (n < T) new Span<float>(dst + n, T - n).Clear();
                    }
                    WeightedValues(sc, width, keys, rows, vBase, s.KvWidth, hd, zBase + (long)t0 * s.QWidth, s.QWidth);
                }
            }
        }
    }

    /// <summary>sc[i, u] = scale · q[t0 + i] · k[u] for u &lt; width (keys past the row's own position are masked later).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Scores(float* qBase, int ldq, int t0, int rows, float* kt, int tp, int hd, int width, float scale, float* sc)
    {
        float* q0 = BlockRow(qBase, ldq, t0, rows, 0), q1 = BlockRow(qBase, ldq, t0, rows, 1);
        float* q2 = BlockRow(qBase, ldq, t0, rows, 2), q3 = BlockRow(qBase, ldq, t0, rows, 3);
        var vs = Vector256.Create(scale);
        for (int u = 0; u < width; u += 8)
        {
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            float* kc = kt + u;
            for (int d = 0; d < hd; d++, kc += tp)
            {
                var kv = Vector256.Load(kc);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Create(q0[d]), kv, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Create(q1[d]), kv, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Create(q2[d]), kv, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Create(q3[d]), kv, a3);
            }
            Vector256.Store(a0 * vs, sc + u);
            if (rows > 1) Vector256.Store(a1 * vs, sc + width + u);
            if (rows > 2) Vector256.Store(a2 * vs, sc + 2 * width + u);
            if (rows > 3) Vector256.Store(a3 * vs, sc + 3 * width + u);
        }
    }

    /// <summary>Causal softmax of the block's rows in place: row i keeps keys 0..t0+i, every other entry becomes 0.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Softmax(float* sc, int width, int t0, int rows)
    {
        for (int i = 0; i < rows; i++)
        {
            float* r = sc + i * width;
            int keep = t0 + i + 1;
            for (int u = keep; u < width; u++) r[u] = float.NegativeInfinity;
            var m = Vector256.Create(float.NegativeInfinity);
            for (int u = 0; u < width; u += 8) m = Vector256.Max(m, Vector256.Load(r + u));
            float max = MaxAcross(m);
            var vm = Vector256.Create(max);
            for (int u = 0; u < width; u += 8) Vector256.Store(Vector256.Load(r + u) - vm, r + u);
        }
        SimdMath.ExpInPlace(new Span<float>(sc, rows * width));
        for (int i = 0; i < rows; i++)
        {
            float* r = sc + i * width;
            int keep = t0 + i + 1;
            // Masked entries came out of the clamped exp as ~1e-38; the zeros above the diagonal are part of the contract.
            for (int u = keep; u < width; u++) r[u] = 0f;
            var acc = Vector256<float>.Zero;
            for (int u = 0; u < width; u += 8) acc += Vector256.Load(r + u);
            var inv = Vector256.Create(1f / Vector256.Sum(acc));
            for (int u = 0; u < width; u += 8) Vector256.Store(Vector256.Load(r + u) * inv, r + u);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float MaxAcross(Vector256<float> v)
    {
        var m = Vector128.Max(v.GetLower(), v.GetUpper());
        float a = MathF.Max(m[0], m[1]), c = MathF.Max(m[2], m[3]);
        return MathF.Max(a, c);
    }

    /// <summary>z[i] = Σ_u p[i, u] v[u] over u &lt; keys for the block's rows (p is 0 past each row's position).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void WeightedValues(float* sc, int width, int keys, int rows, float* vBase, int ldv, int hd, float* z, int ldz)
    {
        // Missing rows read row 0's probabilities; their results are not stored.
        float* p0 = sc, p1 = sc + (rows > 1 ? width : 0), p2 = sc + (rows > 2 ? 2 * width : 0), p3 = sc + (rows > 3 ? 3 * width : 0);
        int d = 0;
        for (; d + 8 <= hd; d += 8)
        {
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            float* vr = vBase + d;
            for (int u = 0; u < keys; u++, vr += ldv)
            {
                var vv = Vector256.Load(vr);
                a0 = Vector256.FusedMultiplyAdd(Vector256.Create(p0[u]), vv, a0);
                a1 = Vector256.FusedMultiplyAdd(Vector256.Create(p1[u]), vv, a1);
                a2 = Vector256.FusedMultiplyAdd(Vector256.Create(p2[u]), vv, a2);
                a3 = Vector256.FusedMultiplyAdd(Vector256.Create(p3[u]), vv, a3);
            }
            Vector256.Store(a0, z + d);
            if (rows > 1) Vector256.Store(a1, z + ldz + d);
            if (rows > 2) Vector256.Store(a2, z + 2L * ldz + d);
            if (rows > 3) Vector256.Store(a3, z + 3L * ldz + d);
        }
        for (; d < hd; d++)
            for (int i = 0; i < rows; i++)
            {
                float* pi = sc + i * width;
                float sum = 0f;
                for (int u = 0; u < keys; u++) sum += pi[u] * vBase[(long)u * ldv + d];
                z[(long)i * ldz + d] = sum;
            }
    }
}
