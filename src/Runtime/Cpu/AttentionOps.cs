using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>Causal grouped-query attention on the host; rows are b·T + t; query head h reads kv head h / group.</summary>
public static unsafe class AttentionOps
{
    public static void Forward(float[] q, float[] k, float[] v, AttentionShape s, float[] z, float[] probs)
    {
        int T = s.SeqLen, hd = s.HeadDim;
        float scale = 1f / MathF.Sqrt(hd);
        Parallel.For(0, s.Batch * s.Heads, Options(s), bh =>
        {
            int b = bh / s.Heads, h = bh % s.Heads, kvh = h / s.Group;
            fixed (float* pq = q, pk = k, pv = v, pz = z, pp = probs)
            {
                float* p = pp + (long)bh * T * T;
                for (int t = 0; t < T; t++)
                {
                    float* qt = pq + (long)(b * T + t) * s.QWidth + h * hd;
                    float* pt = p + t * T;
                    float max = float.NegativeInfinity;
                    for (int u = 0; u <= t; u++)
                    {
                        float x = Dot(qt, pk + (long)(b * T + u) * s.KvWidth + kvh * hd, hd) * scale;
                        pt[u] = x;
                        if (x > max) max = x;
                    }
                    // Vectorised exp: the softmax's exps dominate for small heads.
                    var row = new Span<float>(pt, t + 1);
                    System.Numerics.Tensors.TensorPrimitives.Subtract(row, max, row);
                    System.Numerics.Tensors.TensorPrimitives.Exp(row, row);
                    float inv = 1f / System.Numerics.Tensors.TensorPrimitives.Sum(row);
                    System.Numerics.Tensors.TensorPrimitives.Multiply(row, inv, row);
                    new Span<float>(pt + t + 1, T - t - 1).Clear();
                    float* zt = pz + (long)(b * T + t) * s.QWidth + h * hd;
                    new Span<float>(zt, hd).Clear();
                    for (int u = 0; u <= t; u++) Axpy(zt, pt[u], pv + (long)(b * T + u) * s.KvWidth + kvh * hd, hd);
                }
            }
        });
    }

    /// <summary>Overwrites dq, dk, dv. Parallel over (batch, kv head) so the heads sharing a kv head never race.</summary>
    public static void Backward(float[] dz, float[] q, float[] k, float[] v, float[] probs, AttentionShape s, AttentionRule rule,
        float[] dq, float[] dk, float[] dv)
    {
        int T = s.SeqLen, hd = s.HeadDim;
        float scale = 1f / MathF.Sqrt(hd);
        Parallel.For(0, s.Batch * s.KvHeads, Options(s), bkv =>
        {
            int b = bkv / s.KvHeads, kvh = bkv % s.KvHeads;
            var dpBuffer = new float[T];
            fixed (float* pdz = dz, pq = q, pk = k, pv = v, pp = probs, pdq = dq, pdk = dk, pdv = dv, dp = dpBuffer)
            {
                for (int t = 0; t < T; t++)
                {
                    new Span<float>(pdk + (long)(b * T + t) * s.KvWidth + kvh * hd, hd).Clear();
                    new Span<float>(pdv + (long)(b * T + t) * s.KvWidth + kvh * hd, hd).Clear();
                }
                for (int h = kvh * s.Group; h < (kvh + 1) * s.Group; h++)
                {
                    float* p = pp + (long)(b * s.Heads + h) * T * T;
                    for (int t = 0; t < T; t++)
                    {
                        float* pt = p + t * T;
                        float* dzt = pdz + (long)(b * T + t) * s.QWidth + h * hd;
                        float* dqt = pdq + (long)(b * T + t) * s.QWidth + h * hd;
                        new Span<float>(dqt, hd).Clear();
                        float pdp = 0f;
                        for (int u = 0; u <= t; u++)
                        {
                            long kv = (long)(b * T + u) * s.KvWidth + kvh * hd;
                            float w = pt[u];
                            Axpy(pdv + kv, w, dzt, hd);
                            float d = Dot(dzt, pv + kv, hd);
                            dp[u] = d;
                            pdp += w * d;
                        }
                        if (rule == AttentionRule.FreezePattern) continue;
                        float* qt = pq + (long)(b * T + t) * s.QWidth + h * hd;
                        for (int u = 0; u <= t; u++)
                        {
                            float ds = pt[u] * (dp[u] - pdp) * scale;
                            if (ds == 0f) continue;
                            long kv = (long)(b * T + u) * s.KvWidth + kvh * hd;
                            Axpy(dqt, ds, pk + kv, hd);
                            Axpy(pdk + kv, ds, qt, hd);
                        }
                    }
                }
            }
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Dot(float* a, float* b, int n)
    {
        int i = 0;
        float sum = 0f;
        if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            var acc = Vector256<float>.Zero;
            for (; i <= n - 8; i += 8) acc += Vector256.Load(a + i) * Vector256.Load(b + i);
            sum = Vector256.Sum(acc);
        }
        for (; i < n; i++) sum += a[i] * b[i];
        return sum;
    }

    /// <summary>y += a·x.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Axpy(float* y, float a, float* x, int n)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated && n >= 8)
        {
            var va = Vector256.Create(a);
            for (; i <= n - 8; i += 8) Vector256.Store(Vector256.Load(y + i) + va * Vector256.Load(x + i), y + i);
        }
        for (; i < n; i++) y[i] += a * x[i];
    }

    // Each (batch, head) item is small; fan out only when the whole op is worth a thread hand-off.
    static ParallelOptions Options(AttentionShape s) =>
        new() { MaxDegreeOfParallelism = (long)s.Rows * s.SeqLen * s.QWidth < 1 << 21 ? 1 : Environment.ProcessorCount };
}
