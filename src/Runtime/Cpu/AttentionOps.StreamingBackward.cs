using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>The backward of <see cref="AttentionOps.StreamingForward"/>: the pattern recomputed from L, tile by tile.</summary>
internal static unsafe partial class AttentionOps
{
    /// <summary>
    /// Overwrites dq, dk and dv. <paramref name="o"/> is the forward's z before any edit (D = rowsum(dz ∘ o) under
    /// <see cref="AttentionRule.Gradient"/>; unread under <see cref="AttentionRule.FreezePattern"/>, which keeps dv only
    /// and writes dq = dk = 0). <paramref name="lse"/> is the forward's L [batch, heads, T].
    /// </summary>
    /// <remarks>
    /// P_tu = e^(c·q_t·k_u − L_t) is recomputed per tile of <see cref="StreamKeyTile"/> keys for blocks of
    /// <see cref="QB"/> queries; dv_u += Σ_t P_tu dz_t; dP = dz·vᵀ; dS = c·P ∘ (dP − D); dq_t += Σ_u dS_tu k_u;
    /// dk_u += Σ_t dS_tu q_t. A work item is one (batch, kv head) and owns the dq rows of its group's heads and its dk,
    /// dv rows, so one pass in a fixed order is deterministic without atomics (the GPU kernel needs two passes for
    /// that). dk and dv accumulate transposed ([hd, T] per item: O(T·hd)), as in <see cref="Backward"/>.
    /// </remarks>
    public static void StreamingBackward(float[] dz, float[] q, float[] k, float[] v, float[] o, float[] lse, AttentionShape s,
        AttentionRule rule, float[] dq, float[] dk, float[] dv)
    {
        if (rule is not (AttentionRule.Gradient or AttentionRule.FreezePattern)) throw new ArgumentOutOfRangeException(nameof(rule));
        CheckStreaming(q, k, v, s, o, lse);
        if (dz.Length < (long)s.Rows * s.QWidth || dq.Length < (long)s.Rows * s.QWidth || dk.Length < (long)s.Rows * s.KvWidth ||
            dv.Length < (long)s.Rows * s.KvWidth)
            throw new ArgumentException("streaming attention backward: dz/dq need [rows, heads·hd], dk/dv [rows, kv heads·hd]");
        int items = s.Batch * s.KvHeads;
        if (items == 0 || s.SeqLen == 0 || s.HeadDim == 0) return;
        bool gradient = rule == AttentionRule.Gradient;
        if ((long)s.Rows * s.SeqLen * s.QWidth < ParallelWork)
        {
            for (int i = 0; i < items; i++) StreamingBackwardItem(dz, q, k, v, o, lse, s, gradient, dq, dk, dv, i);
            return;
        }
        Parallel.For(0, items, i => StreamingBackwardItem(dz, q, k, v, o, lse, s, gradient, dq, dk, dv, i));
    }

    [ThreadStatic] static float[]? _streamBackwardScratch;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void StreamingBackwardItem(float[] dz, float[] q, float[] k, float[] v, float[] o, float[] lse, AttentionShape s,
        bool gradient, float[] dq, float[] dk, float[] dv, int item)
    {
        int T = s.SeqLen, hd = s.HeadDim, tp = (T + 7) & ~7;
        int b = item / s.KvHeads, kvh = item % s.KvHeads;
        // kᵀ, vᵀ, dvᵀ, dkᵀ [hd, tp]; pattern and dp/ds rows [QB, tp] (a tile is written at its key offset so the
        // transposed accumulators and the rows share one stride); score tile [QB, KT]; dq part and accumulator [QB, hd].
        int need = 4 * hd * tp + 2 * QB * tp + QB * StreamKeyTile + 2 * QB * hd;
        if (_streamBackwardScratch is null || _streamBackwardScratch.Length < need) _streamBackwardScratch = new float[need];
        float scale = 1f / MathF.Sqrt(hd);
        Span<float> dRow = stackalloc float[QB];
        fixed (float* pdz = dz, pq = q, pk = k, pv = v, po = o, pl = lse, pdq = dq, pdk = dk, pdv = dv, buf = _streamBackwardScratch)
        {
            float* kt = buf, vt = kt + hd * tp, dvt = vt + hd * tp, dkt = dvt + hd * tp;
            float* pb = dkt + hd * tp, db = pb + QB * tp, sc = db + QB * tp, part = sc + QB * StreamKeyTile, dqAcc = part + QB * hd;
            long kvOff = (long)b * T * s.KvWidth + kvh * hd;
            float* kBase = pk + kvOff;
            TransposeKeys(kBase, s.KvWidth, T, hd, tp, kt);
            TransposeKeys(pv + kvOff, s.KvWidth, T, hd, tp, vt);
            new Span<float>(dvt, 2 * hd * tp).Clear();

            for (int h = kvh * s.Group; h < (kvh + 1) * s.Group; h++)
            {
                long qOff = (long)b * T * s.QWidth + h * hd;
                float* qBase = pq + qOff, dzBase = pdz + qOff, dqBase = pdq + qOff, lBase = pl + (long)(b * s.Heads + h) * T;
                for (int t0 = 0; t0 < T; t0 += QB)
                {
                    int rows = Math.Min(QB, T - t0), keys = t0 + rows;
                    if (gradient)
                    {
                        for (int i = 0; i < rows; i++)
                        {
                            float* zi = dzBase + (long)(t0 + i) * s.QWidth, oi = po + qOff + (long)(t0 + i) * s.QWidth;
                            float acc = 0f;
                            for (int d = 0; d < hd; d++) acc = MathF.FusedMultiplyAdd(zi[d], oi[d], acc);
                            dRow[i] = acc;
                        }
                        new Span<float>(dqAcc, QB * hd).Clear();
                    }
                    for (int j0 = 0; j0 < keys; j0 += StreamKeyTile)
                    {
                        int tileKeys = Math.Min(StreamKeyTile, keys - j0), width = (tileKeys + 7) & ~7;
                        Scores(qBase, s.QWidth, t0, rows, kt + j0, tp, hd, width, scale, sc);
                        RecomputePattern(sc, width, lBase, t0, rows, j0, pb + j0, tp);
                        if (!gradient)
                        {
                            AccumulateTransposed(pb + j0, tp, dzBase, s.QWidth, t0, rows, dvt + j0, hd, width);
                            continue;
                        }
                        ValueGradientsAndDp(pb + j0, tp, dzBase, s.QWidth, t0, rows, vt + j0, dvt + j0, hd, width, db + j0);
                        TileScoreGradients(pb + j0, db + j0, tp, t0, rows, j0, width, dRow, scale);
                        WeightedValues(db + j0, tp, tileKeys, rows, kBase + (long)j0 * s.KvWidth, s.KvWidth, hd, part, hd);
                        for (int e = 0; e < rows * hd; e++) dqAcc[e] += part[e];
                        AccumulateTransposed(db + j0, tp, qBase, s.QWidth, t0, rows, dkt + j0, hd, width);
                    }
                    for (int i = 0; i < rows; i++)
                    {
                        var dst = new Span<float>(dqBase + (long)(t0 + i) * s.QWidth, hd);
                        if (gradient) new Span<float>(dqAcc + i * hd, hd).CopyTo(dst);
                        else dst.Clear();
                    }
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
    /// pb[i, u] = e^(sc[i, u] − L[t0 + i]) for keys j0 + u ≤ t0 + i, else 0, over the tile's width; rows past the
    /// block's end are all 0 (their repeated dz and q rows then contribute nothing).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void RecomputePattern(float* sc, int width, float* lBase, int t0, int rows, int j0, float* pb, int ldp)
    {
        for (int i = 0; i < QB; i++)
        {
            float* dst = pb + i * ldp;
            int keep = i < rows ? Math.Clamp(t0 + i + 1 - j0, 0, width) : 0;
            if (keep > 0)
            {
                float* r = sc + i * width;
                var vl = Vector256.Create(lBase[t0 + i]);
                int u = 0;
                for (; u + 8 <= keep; u += 8) Vector256.Store(SimdMath.Exp(Vector256.Load(r + u) - vl), dst + u);
                for (; u < keep; u++) dst[u] = SimdMath.Exp(r[u] - lBase[t0 + i]);
            }
            new Span<float>(dst + keep, width - keep).Clear();
        }
    }

    /// <summary>db[i, u] = scale · p[i, u] (dp[i, u] − D_i) in place over the tile; 0 past each row's position and past the block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void TileScoreGradients(float* pb, float* db, int ld, int t0, int rows, int j0, int width, ReadOnlySpan<float> dRow, float scale)
    {
        var vs = Vector256.Create(scale);
        for (int i = 0; i < QB; i++)
        {
            float* pr = pb + i * ld, dr = db + i * ld;
            int keep = i < rows ? Math.Clamp(t0 + i + 1 - j0, 0, width) : 0;
            // dp past the row's position is a real product; zero it so a non-finite dz·v there cannot leak through p = 0.
            new Span<float>(dr + keep, width - keep).Clear();
            if (keep == 0) continue;
            var vd = Vector256.Create(dRow[i]);
            int u = 0;
            for (; u + 8 <= keep; u += 8)
                Vector256.Store(Vector256.Load(pr + u) * (Vector256.Load(dr + u) - vd) * vs, dr + u);
            for (; u < keep; u++) dr[u] = pr[u] * (dr[u] - dRow[i]) * scale;
        }
    }
}
