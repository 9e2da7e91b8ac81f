using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// Streaming (flash-style) causal GQA attention on the host: the same result as <see cref="Forward"/> without the
/// [B, H, T, T] pattern. Per row and head it keeps only L = m + log ℓ (docs/streaming-attention.md), from which the
/// backward recomputes the pattern tile by tile.
/// </summary>
internal static unsafe partial class AttentionOps
{
    /// <summary>Keys per tile of the streaming ops (a multiple of 8). Lengths around it are the edge cases tested.</summary>
    public const int StreamKeyTile = 64;

    /// <summary>
    /// z [rows, heads·hd] and lse [batch, heads, T] (L = m + log ℓ per query row and head). Work items are (batch, kv
    /// head), as in <see cref="Forward"/>; each holds Kᵀ of its kv head and a few rows of scratch: O(T·hd), never O(T²).
    /// </summary>
    /// <remarks>
    /// For a block of <see cref="QB"/> query rows the key tiles up to the block's last row are walked with the online
    /// softmax: m' = max(m, rowmax S), α = e^(m − m'), ℓ = αℓ + Σ e^(S − m'), acc = α·acc + e^(S − m')·V. Tiles past the
    /// block's diagonal are never computed; inside the diagonal tile the masked entries are set to −∞ before the exp.
    /// The summation order differs from <see cref="Forward"/> (per-tile partial sums), so results agree to rounding only.
    /// </remarks>
    public static void StreamingForward(float[] q, float[] k, float[] v, AttentionShape s, float[] z, float[] lse)
    {
        CheckStreaming(q, k, v, s, z, lse);
        int items = s.Batch * s.KvHeads;
        if (items == 0 || s.SeqLen == 0 || s.HeadDim == 0) return;
        if ((long)s.Rows * s.SeqLen * s.QWidth <= ForwardParallelWork)
        {
            for (int i = 0; i < items; i++) StreamingForwardItem(q, k, v, s, z, lse, i);
            return;
        }
        Parallel.For(0, items, i => StreamingForwardItem(q, k, v, s, z, lse, i));
    }

    static void CheckStreaming(float[] q, float[] k, float[] v, AttentionShape s, float[] z, float[] lse)
    {
        if (q.Length < (long)s.Rows * s.QWidth || z.Length < (long)s.Rows * s.QWidth)
            throw new ArgumentException($"streaming attention: q and z need {(long)s.Rows * s.QWidth} floats");
        if (k.Length < (long)s.Rows * s.KvWidth || v.Length < (long)s.Rows * s.KvWidth)
            throw new ArgumentException($"streaming attention: k and v need {(long)s.Rows * s.KvWidth} floats");
        if (lse.Length < (long)s.Batch * s.Heads * s.SeqLen)
            throw new ArgumentException($"streaming attention: lse needs [batch, heads, T] = {(long)s.Batch * s.Heads * s.SeqLen} floats");
    }

    [ThreadStatic] static float[]? _streamScratch;

    /// <summary>Kᵀ [hd, tp] of one (batch, kv head), keys padded to a multiple of 8 with zeros (always masked).</summary>
    static void TransposeKeys(float* src, int ld, int T, int hd, int tp, float* dst)
    {
        for (int u = 0; u < T; u++)
        {
            float* r = src + (long)u * ld;
            for (int d = 0; d < hd; d++) dst[d * tp + u] = r[d];
        }
        for (int d = 0; d < hd; d++)
            for (int u = T; u < tp; u++) dst[d * tp + u] = 0f;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void StreamingForwardItem(float[] q, float[] k, float[] v, AttentionShape s, float[] z, float[] lse, int item)
    {
        int T = s.SeqLen, hd = s.HeadDim, tp = (T + 7) & ~7;
        int b = item / s.KvHeads, kvh = item % s.KvHeads;
        // Kᵀ, one score tile [QB, KT], the tile's P·V [QB, hd] and the accumulators [QB, hd].
        int need = hd * tp + QB * StreamKeyTile + 2 * QB * hd;
        if (_streamScratch is null || _streamScratch.Length < need) _streamScratch = new float[need];
        float scale = 1f / MathF.Sqrt(hd);
        Span<float> m = stackalloc float[QB], l = stackalloc float[QB], alpha = stackalloc float[QB];
        fixed (float* pq = q, pk = k, pv = v, pz = z, pl = lse, buf = _streamScratch)
        {
            float* kt = buf, sc = kt + hd * tp, part = sc + QB * StreamKeyTile, acc = part + QB * hd;
            long kvOff = (long)b * T * s.KvWidth + kvh * hd;
            TransposeKeys(pk + kvOff, s.KvWidth, T, hd, tp, kt);
            float* vBase = pv + kvOff;
            for (int h = kvh * s.Group; h < (kvh + 1) * s.Group; h++)
            {
                long qOff = (long)b * T * s.QWidth + h * hd;
                float* qBase = pq + qOff, zBase = pz + qOff, lBase = pl + (long)(b * s.Heads + h) * T;
                for (int t0 = 0; t0 < T; t0 += QB)
                {
                    int rows = Math.Min(QB, T - t0), keys = t0 + rows;
                    m.Fill(float.NegativeInfinity); l.Clear();
                    new Span<float>(acc, QB * hd).Clear();
                    for (int j0 = 0; j0 < keys; j0 += StreamKeyTile)
                    {
                        int tileKeys = Math.Min(StreamKeyTile, keys - j0), width = (tileKeys + 7) & ~7;
                        Scores(qBase, s.QWidth, t0, rows, kt + j0, tp, hd, width, scale, sc);
                        for (int i = 0; i < rows; i++)
                        {
                            float* r = sc + i * width;
                            int keep = Math.Clamp(t0 + i + 1 - j0, 0, width);
                            for (int u = keep; u < width; u++) r[u] = float.NegativeInfinity;
                            float mt = float.NegativeInfinity;
                            for (int u = 0; u < keep; u++) mt = MathF.Max(mt, r[u]);
                            float mNew = MathF.Max(m[i], mt);
                            // A row with no key in this tile cannot occur (tiles start at multiples of QB), but keep it exact.
                            if (float.IsNegativeInfinity(mNew)) { alpha[i] = 1f; new Span<float>(r, width).Clear(); continue; }
                            alpha[i] = float.IsNegativeInfinity(m[i]) ? 0f : SimdMath.Exp(m[i] - mNew);
                            var vm = Vector256.Create(mNew);
                            for (int u = 0; u < width; u += 8) Vector256.Store(SimdMath.Exp(Vector256.Load(r + u) - vm), r + u);
                            // The clamped exp leaves ~1e-38 at −∞; masked entries must be exactly 0.
                            for (int u = keep; u < width; u++) r[u] = 0f;
                            float sum = 0f;
                            for (int u = 0; u < keep; u++) sum += r[u];
                            l[i] = alpha[i] * l[i] + sum;
                            m[i] = mNew;
                        }
                        WeightedValues(sc, width, tileKeys, rows, vBase + (long)j0 * s.KvWidth, s.KvWidth, hd, part, hd);
                        for (int i = 0; i < rows; i++)
                        {
                            float a = alpha[i];
                            float* ai = acc + i * hd, pi = part + i * hd;
                            for (int d = 0; d < hd; d++) ai[d] = MathF.FusedMultiplyAdd(a, ai[d], pi[d]);
                        }
                    }
                    for (int i = 0; i < rows; i++)
                    {
                        float inv = 1f / l[i];
                        float* zi = zBase + (long)(t0 + i) * s.QWidth, ai = acc + i * hd;
                        for (int d = 0; d < hd; d++) zi[d] = ai[d] * inv;
                        lBase[t0 + i] = m[i] + MathF.Log(l[i]);
                    }
                }
            }
        }
    }
}
