using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>The backward of <see cref="AttentionOps.Forward"/> under an <see cref="AttentionRule"/>.</summary>
internal static unsafe partial class AttentionOps
{
    /// <summary>
    /// Overwrites every element of dq, dk and dv (their previous contents are never read). Work items are
    /// (batch, kv head): the group's query heads accumulate into one kv head's dk and dv, so items never race.
    /// Only the causal lower triangle of <paramref name="probs"/> is read.
    /// </summary>
    /// <remarks>
    /// With dp[t,u] = dz[t]·v[u] and ds[t,u] = scale · p[t,u] (dp[t,u] − Σ_w p[t,w] dp[t,w]):
    /// dv[u] = Σ_t p[t,u] dz[t], dq[t] = Σ_u ds[t,u] k[u], dk[u] = Σ_t ds[t,u] q[t]; FreezePattern keeps dv only.
    /// Like the forward, the item's V is transposed to [headDim, T] so a vector covers 8 keys: dp for 4 queries costs
    /// headDim broadcast FMAs per 8 keys, and dv and dk are accumulated transposed the same way (vector over keys,
    /// broadcast dz or q) in scratch, then written out once per item. dq reuses the forward's P·V loop on ds and K.
    /// A per-(query, key) loop of 8-float dot products and axpys was all call and horizontal-sum overhead at head dim 8.
    /// </remarks>
    public static void Backward(float[] dz, float[] q, float[] k, float[] v, float[] probs, AttentionShape s, AttentionRule rule,
        float[] dq, float[] dk, float[] dv)
    {
        if (rule is not (AttentionRule.Gradient or AttentionRule.FreezePattern)) throw new ArgumentOutOfRangeException(nameof(rule));
        int items = s.Batch * s.KvHeads;
        if (items == 0 || s.SeqLen == 0 || s.HeadDim == 0) return;
        bool gradient = rule == AttentionRule.Gradient;
        // About twice the forward's multiply-adds per score; the same threshold keeps small ops off the thread pool.
        if ((long)s.Rows * s.SeqLen * s.QWidth < ParallelWork)
        {
            for (int i = 0; i < items; i++) BackwardItem(dz, q, k, v, probs, s, gradient, dq, dk, dv, i);
            return;
        }
        Parallel.For(0, items, i => BackwardItem(dz, q, k, v, probs, s, gradient, dq, dk, dv, i));
    }

    [ThreadStatic] static float[]? _backwardScratch;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void BackwardItem(float[] dz, float[] q, float[] k, float[] v, float[] probs, AttentionShape s, bool gradient,
        float[] dq, float[] dk, float[] dv, int item)
    {
        int T = s.SeqLen, hd = s.HeadDim, tp = (T + 7) & ~7;
        int b = item / s.KvHeads, kvh = item % s.KvHeads;
        int need = 3 * hd * tp + 2 * QB * tp;
        if (_backwardScratch is null || _backwardScratch.Length < need) _backwardScratch = new float[need];
        float scale = 1f / MathF.Sqrt(hd);
        fixed (float* pdz = dz, pq = q, pk = k, pv = v, pp = probs, pdq = dq, pdk = dk, pdv = dv, buf = _backwardScratch)
        {
            // vᵀ, dvᵀ, dkᵀ: [hd, tp]; the pattern block and dp/ds block: [QB, tp].
            float* vt = buf, dvt = vt + hd * tp, dkt = dvt + hd * tp, pb = dkt + hd * tp, db = pb + QB * tp;
            long kvOff = (long)b * T * s.KvWidth + kvh * hd;
            float* kBase = pk + kvOff, vBase = pv + kvOff;
            for (int u = 0; u < T; u++)
            {
                float* vr = vBase + (long)u * s.KvWidth;
                for (int d = 0; d < hd; d++) vt[d * tp + u] = vr[d];
            }
            // Padded keys: v = 0 keeps dp finite there (it is multiplied by p = 0 and then zeroed anyway).
            for (int d = 0; d < hd; d++)
                for (int u = T; u < tp; u++) vt[d * tp + u] = 0f;
            new Span<float>(dvt, 2 * hd * tp).Clear();

            for (int h = kvh * s.Group; h < (kvh + 1) * s.Group; h++)
            {
                float* p = pp + (long)(b * s.Heads + h) * T * T;
                long qOff = (long)b * T * s.QWidth + h * hd;
                float* qBase = pq + qOff, dzBase = pdz + qOff, dqBase = pdq + qOff;
                if (!gradient)
                    for (int t = 0; t < T; t++) new Span<float>(dqBase + (long)t * s.QWidth, hd).Clear();
                for (int t0 = 0; t0 < T; t0 += QB)
                {
                    int rows = Math.Min(QB, T - t0);
                    int keys = t0 + rows, width = (keys + 7) & ~7;
                    LoadPattern(p, T, t0, rows, width, pb, tp);
                    if (!gradient)
                    {
                        AccumulateTransposed(pb, tp, dzBase, s.QWidth, t0, rows, dvt, hd, width);
                        continue;
                    }
                    ValueGradientsAndDp(pb, tp, dzBase, s.QWidth, t0, rows, vt, dvt, hd, width, db);
                    ScoreGradients(pb, db, tp, t0, rows, width, scale);
                    WeightedValues(db, tp, keys, rows, kBase, s.KvWidth, hd, dqBase + (long)t0 * s.QWidth, s.QWidth);
                    AccumulateTransposed(db, tp, qBase, s.QWidth, t0, rows, dkt, hd, width);
                }
            }

            // Under FreezePattern dkt stayed zero: dk is written as zeros.
            for (int u = 0; u < T; u++)
            {
                float* dvr = pdv + kvOff + (long)u * s.KvWidth, dkr = pdk + kvOff + (long)u * s.KvWidth;
                for (int d = 0; d < hd; d++)
                {
                    dvr[d] = dvt[d * tp + u];
                    dkr[d] = dkt[d * tp + u];
                }
            }
        }
    }

    /// <summary>
    /// pb[i, u] = p[t0 + i, u] for u ≤ t0 + i and 0 up to width; rows past the block's end are all 0, so their
    /// (repeated) dz and q rows contribute nothing. The masked triangle of p is never read.
    /// </summary>
    static void LoadPattern(float* p, int T, int t0, int rows, int width, float* pb, int tp)
    {
        for (int i = 0; i < QB; i++)
        {
            float* dst = pb + i * tp;
            int keep = i < rows ? t0 + i + 1 : 0;
            if (keep > 0) new Span<float>(p + (long)(t0 + i) * T, keep).CopyTo(new Span<float>(dst, keep));
            new Span<float>(dst + keep, width - keep).Clear();
        }
    }

    /// <summary>
    /// targetᵀ[:, u] += Σ_i x[t0 + i] w[i, u] for the block's rows and u &lt; width: dvᵀ from dz and the pattern p
    /// (FreezePattern), dkᵀ from q and ds (w rows past the block's end are 0).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void AccumulateTransposed(float* pb, int tp, float* dzBase, int ldz, int t0, int rows, float* dvt, int hd, int width)
    {
        float* z0 = BlockRow(dzBase, ldz, t0, rows, 0), z1 = BlockRow(dzBase, ldz, t0, rows, 1);
        float* z2 = BlockRow(dzBase, ldz, t0, rows, 2), z3 = BlockRow(dzBase, ldz, t0, rows, 3);
        for (int u = 0; u < width; u += 8)
        {
            var p0 = Vector256.Load(pb + u);
            var p1 = Vector256.Load(pb + tp + u);
            var p2 = Vector256.Load(pb + 2 * tp + u);
            var p3 = Vector256.Load(pb + 3 * tp + u);
            float* dc = dvt + u;
            for (int d = 0; d < hd; d++, dc += tp)
            {
                var acc = Vector256.FusedMultiplyAdd(p0, Vector256.Create(z0[d]), Vector256.Load(dc));
                acc = Vector256.FusedMultiplyAdd(p1, Vector256.Create(z1[d]), acc);
                acc = Vector256.FusedMultiplyAdd(p2, Vector256.Create(z2[d]), acc);
                acc = Vector256.FusedMultiplyAdd(p3, Vector256.Create(z3[d]), acc);
                Vector256.Store(acc, dc);
            }
        }
    }

    /// <summary>
    /// As <see cref="AccumulateTransposed"/> for dv, and db[i, u] = dz[t0 + i]·v[u] (dp) in the same pass over vᵀ, which both read
    /// the same broadcast dz values.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ValueGradientsAndDp(float* pb, int tp, float* dzBase, int ldz, int t0, int rows, float* vt, float* dvt, int hd,
        int width, float* db)
    {
        float* z0 = BlockRow(dzBase, ldz, t0, rows, 0), z1 = BlockRow(dzBase, ldz, t0, rows, 1);
        float* z2 = BlockRow(dzBase, ldz, t0, rows, 2), z3 = BlockRow(dzBase, ldz, t0, rows, 3);
        for (int u = 0; u < width; u += 8)
        {
            var p0 = Vector256.Load(pb + u);
            var p1 = Vector256.Load(pb + tp + u);
            var p2 = Vector256.Load(pb + 2 * tp + u);
            var p3 = Vector256.Load(pb + 3 * tp + u);
            var a0 = Vector256<float>.Zero; var a1 = a0; var a2 = a0; var a3 = a0;
            float* vc = vt + u, dc = dvt + u;
            for (int d = 0; d < hd; d++, vc += tp, dc += tp)
            {
                var vv = Vector256.Load(vc);
                var b0 = Vector256.Create(z0[d]);
                var b1 = Vector256.Create(z1[d]);
                var b2 = Vector256.Create(z2[d]);
                var b3 = Vector256.Create(z3[d]);
                a0 = Vector256.FusedMultiplyAdd(b0, vv, a0);
                a1 = Vector256.FusedMultiplyAdd(b1, vv, a1);
                a2 = Vector256.FusedMultiplyAdd(b2, vv, a2);
                a3 = Vector256.FusedMultiplyAdd(b3, vv, a3);
                var acc = Vector256.FusedMultiplyAdd(p0, b0, Vector256.Load(dc));
                acc = Vector256.FusedMultiplyAdd(p1, b1, acc);
                acc = Vector256.FusedMultiplyAdd(p2, b2, acc);
                acc = Vector256.FusedMultiplyAdd(p3, b3, acc);
                Vector256.Store(acc, dc);
            }
            Vector256.Store(a0, db + u);
            Vector256.Store(a1, db + tp + u);
            Vector256.Store(a2, db + 2 * tp + u);
            Vector256.Store(a3, db + 3 * tp + u);
        }
    }

    /// <summary>
    /// db[i, u] = scale · p[i, u] (dp[i, u] − Σ_w p[i, w] dp[i, w]) in place: the softmax gradient. Entries past each
    /// row's position, and rows past the block's end, come out 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ScoreGradients(float* pb, float* db, int tp, int t0, int rows, int width, float scale)
    {
        var vs = Vector256.Create(scale);
        for (int i = 0; i < QB; i++)
        {
            float* pr = pb + i * tp, dr = db + i * tp;
            int keep = i < rows ? t0 + i + 1 : 0;
            // dp past the row's position is a real product (or 0 on padded keys); zero it so that a non-finite dz·v
            // there cannot leak through p = 0 into the sum or into ds.
            new Span<float>(dr + keep, width - keep).Clear();
            if (keep == 0) continue;
            var acc = Vector256<float>.Zero;
            for (int u = 0; u < width; u += 8) acc = Vector256.FusedMultiplyAdd(Vector256.Load(pr + u), Vector256.Load(dr + u), acc);
            var pdp = Vector256.Create(Vector256.Sum(acc));
            for (int u = 0; u < width; u += 8)
                Vector256.Store(Vector256.Load(pr + u) * (Vector256.Load(dr + u) - pdp) * vs, dr + u);
        }
    }
}
