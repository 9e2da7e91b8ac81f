namespace NeuronTrace.Runtime.Cpu;

/// <summary>Causal grouped-query attention on the host; rows are b·T + t; query head h reads kv head h / group.</summary>
public static class AttentionOps
{
    public static void Forward(float[] q, float[] k, float[] v, AttentionShape s, float[] z, float[] probs)
    {
        int T = s.SeqLen, hd = s.HeadDim;
        float scale = 1f / MathF.Sqrt(hd);
        Parallel.For(0, s.Batch * s.Heads, Options(s), bh =>
        {
            int b = bh / s.Heads, h = bh % s.Heads, kvh = h / s.Group;
            var p = new Span<float>(probs, bh * T * T, T * T);
            for (int t = 0; t < T; t++)
            {
                var qt = new ReadOnlySpan<float>(q, (b * T + t) * s.QWidth + h * hd, hd);
                var pt = p.Slice(t * T, T);
                float max = float.NegativeInfinity;
                for (int u = 0; u <= t; u++)
                {
                    float dot = 0f;
                    var ku = new ReadOnlySpan<float>(k, (b * T + u) * s.KvWidth + kvh * hd, hd);
                    for (int i = 0; i < hd; i++) dot += qt[i] * ku[i];
                    pt[u] = dot * scale;
                    if (pt[u] > max) max = pt[u];
                }
                float sum = 0f;
                for (int u = 0; u <= t; u++) { pt[u] = MathF.Exp(pt[u] - max); sum += pt[u]; }
                float inv = 1f / sum;
                for (int u = 0; u <= t; u++) pt[u] *= inv;
                pt.Slice(t + 1).Clear();
                var zt = new Span<float>(z, (b * T + t) * s.QWidth + h * hd, hd);
                zt.Clear();
                for (int u = 0; u <= t; u++)
                {
                    float w = pt[u];
                    var vu = new ReadOnlySpan<float>(v, (b * T + u) * s.KvWidth + kvh * hd, hd);
                    for (int i = 0; i < hd; i++) zt[i] += w * vu[i];
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
            for (int t = 0; t < T; t++)
            {
                new Span<float>(dk, (b * T + t) * s.KvWidth + kvh * hd, hd).Clear();
                new Span<float>(dv, (b * T + t) * s.KvWidth + kvh * hd, hd).Clear();
            }
            var dp = new float[T];
            for (int h = kvh * s.Group; h < (kvh + 1) * s.Group; h++)
            {
                var p = new ReadOnlySpan<float>(probs, (b * s.Heads + h) * T * T, T * T);
                for (int t = 0; t < T; t++)
                {
                    var pt = p.Slice(t * T, T);
                    var dzt = new ReadOnlySpan<float>(dz, (b * T + t) * s.QWidth + h * hd, hd);
                    var dqt = new Span<float>(dq, (b * T + t) * s.QWidth + h * hd, hd);
                    dqt.Clear();
                    float pdp = 0f;
                    for (int u = 0; u <= t; u++)
                    {
                        var vu = new ReadOnlySpan<float>(v, (b * T + u) * s.KvWidth + kvh * hd, hd);
                        var dvu = new Span<float>(dv, (b * T + u) * s.KvWidth + kvh * hd, hd);
                        float w = pt[u], d = 0f;
                        for (int i = 0; i < hd; i++) { dvu[i] += w * dzt[i]; d += dzt[i] * vu[i]; }
                        dp[u] = d;
                        pdp += w * d;
                    }
                    if (rule == AttentionRule.FreezePattern) continue;
                    var qt = new ReadOnlySpan<float>(q, (b * T + t) * s.QWidth + h * hd, hd);
                    for (int u = 0; u <= t; u++)
                    {
                        float ds = pt[u] * (dp[u] - pdp) * scale;
                        if (ds == 0f) continue;
                        var ku = new ReadOnlySpan<float>(k, (b * T + u) * s.KvWidth + kvh * hd, hd);
                        var dku = new Span<float>(dk, (b * T + u) * s.KvWidth + kvh * hd, hd);
                        for (int i = 0; i < hd; i++) { dqt[i] += ds * ku[i]; dku[i] += ds * qt[i]; }
                    }
                }
            }
        });
    }

    static ParallelOptions Options(AttentionShape s) =>
        new() { MaxDegreeOfParallelism = (long)s.Rows * s.SeqLen * s.QWidth < 1 << 16 ? 1 : Environment.ProcessorCount };
}
