using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Tests.Kernels;

namespace NeuronTrace.Runtime.Tests.Cpu;

/// <summary>
/// <see cref="AttentionOps.Backward"/> against the gradients of causal softmax attention written from the definition in
/// float64, for both rules: head dims 1..64 (below, at and off the 8-wide vector), T not a multiple of the 4-query block
/// or the 8-key vector, groups 1, 2 and 4, batch 1 and 3, serial and parallel sizes. dq, dk and dv start NaN-filled
/// (every value must be written, FreezePattern's zero dq and dk included), and the pattern's masked upper triangle is
/// NaN too, so reading it would show. The pattern is the CPU forward's, so both sides differentiate the same
/// probabilities. Tolerance 1e-5 abs + 1e-4 rel: float32 sums of up to 130 products of O(1) terms, with the
/// cancellation in p·(dp − Σ p·dp).
/// </summary>
public class AttentionBackwardTests
{
    // batch, T, heads, kv heads, head dim
    public static TheoryData<int, int, int, int, int, AttentionRule> Shapes()
    {
        var data = new TheoryData<int, int, int, int, int, AttentionRule>();
        int[][] shapes =
        [
            [1, 1, 1, 1, 1], [1, 1, 2, 1, 8], [1, 3, 2, 2, 4], [2, 5, 4, 2, 8], [3, 7, 4, 1, 6], [1, 9, 2, 1, 13],
            [2, 17, 8, 4, 8], [1, 33, 4, 4, 16], [1, 11, 2, 1, 3], [2, 40, 4, 2, 64], [8, 64, 8, 4, 8], [1, 130, 2, 1, 64],
            [2, 23, 4, 4, 24], [1, 6, 4, 2, 9],
        ];
        foreach (var s in shapes)
            foreach (var rule in new[] { AttentionRule.Gradient, AttentionRule.FreezePattern })
                data.Add(s[0], s[1], s[2], s[3], s[4], rule);
        return data;
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Matches_a_naive_float64_reference(int batch, int seqLen, int heads, int kvHeads, int headDim, AttentionRule rule)
    {
        var s = new AttentionShape(batch, seqLen, heads, kvHeads, headDim);
        int seed = seqLen * 13 + headDim * 3 + heads;
        var q = Rand.Floats(seed, s.Rows * s.QWidth, -2f, 2f);
        var k = Rand.Floats(seed + 1, s.Rows * s.KvWidth, -2f, 2f);
        var v = Rand.Floats(seed + 2, s.Rows * s.KvWidth);
        var dz = Rand.Floats(seed + 3, s.Rows * s.QWidth);
        var z = new float[s.Rows * s.QWidth];
        var p = new float[batch * heads * seqLen * seqLen];
        AttentionOps.Forward(q, k, v, s, z, p);
        for (int row = 0; row < batch * heads; row++)
            for (int t = 0; t < seqLen; t++)
                for (int u = t + 1; u < seqLen; u++) p[(row * seqLen + t) * seqLen + u] = float.NaN;

        float[] dq = new float[q.Length], dk = new float[k.Length], dv = new float[v.Length];
        Array.Fill(dq, float.NaN);
        Array.Fill(dk, float.NaN);
        Array.Fill(dv, float.NaN);
        AttentionOps.Backward(dz, q, k, v, p, s, rule, dq, dk, dv);

        var (eq, ek, ev) = Reference(dz, q, k, v, p, s, rule);
        Approx.Equal(ev, dv, 1e-5f, 1e-4f, "dv");
        Approx.Equal(eq, dq, 1e-5f, 1e-4f, "dq");
        Approx.Equal(ek, dk, 1e-5f, 1e-4f, "dk");
        if (rule == AttentionRule.FreezePattern)
            Assert.True(dq.All(x => x == 0f) && dk.All(x => x == 0f), "FreezePattern: dq and dk must be exactly zero");
    }

    [Fact]
    public void Repeated_calls_overwrite_and_give_the_same_result()
    {
        // The op keeps per-thread scratch between calls; a second call on other shapes and then the first again must not
        // see anything left over.
        var s = new AttentionShape(2, 19, 4, 2, 8);
        var q = Rand.Floats(1, s.Rows * s.QWidth, -2f, 2f);
        var k = Rand.Floats(2, s.Rows * s.KvWidth, -2f, 2f);
        var v = Rand.Floats(3, s.Rows * s.KvWidth);
        var dz = Rand.Floats(4, s.Rows * s.QWidth);
        var p = new float[s.Batch * s.Heads * s.SeqLen * s.SeqLen];
        AttentionOps.Forward(q, k, v, s, new float[dz.Length], p);
        float[] dq1 = new float[q.Length], dk1 = new float[k.Length], dv1 = new float[v.Length];
        AttentionOps.Backward(dz, q, k, v, p, s, AttentionRule.Gradient, dq1, dk1, dv1);

        var s2 = new AttentionShape(1, 40, 2, 1, 16);
        var q2 = Rand.Floats(5, s2.Rows * s2.QWidth, -2f, 2f);
        var k2 = Rand.Floats(6, s2.Rows * s2.KvWidth, -2f, 2f);
        var p2 = new float[s2.Heads * s2.SeqLen * s2.SeqLen];
        AttentionOps.Forward(q2, k2, k2, s2, new float[q2.Length], p2);
        AttentionOps.Backward(q2, q2, k2, k2, p2, s2, AttentionRule.Gradient, new float[q2.Length], new float[k2.Length], new float[k2.Length]);

        float[] dq2 = Enumerable.Repeat(7f, q.Length).ToArray(), dk2 = Enumerable.Repeat(7f, k.Length).ToArray(),
            dv2 = Enumerable.Repeat(7f, v.Length).ToArray();
        AttentionOps.Backward(dz, q, k, v, p, s, AttentionRule.Gradient, dq2, dk2, dv2);
        Assert.Equal(dq1, dq2);
        Assert.Equal(dk1, dk2);
        Assert.Equal(dv1, dv2);
    }

    /// <summary>
    /// z[t] = Σ_u p[t,u] v[u], p = softmax_u(scale·q[t]·k[u]) over u ≤ t: dv[u] = Σ_t p[t,u] dz[t]; with dp[t,u] = dz[t]·v[u]
    /// and ds[t,u] = p[t,u] (dp[t,u] − Σ_w p[t,w] dp[t,w]), dq[t] = scale Σ_u ds[t,u] k[u], dk[u] = scale Σ_t ds[t,u] q[t];
    /// a kv head's gradients sum over its group of query heads. FreezePattern keeps only dv.
    /// </summary>
    static (float[] Dq, float[] Dk, float[] Dv) Reference(float[] dz, float[] q, float[] k, float[] v, float[] p, AttentionShape s,
        AttentionRule rule)
    {
        int T = s.SeqLen, hd = s.HeadDim;
        double scale = 1.0 / Math.Sqrt(hd);
        var dq = new double[q.Length];
        var dk = new double[k.Length];
        var dv = new double[v.Length];
        var dp = new double[T];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.Heads; h++)
            {
                int kvh = h / s.Group;
                for (int t = 0; t < T; t++)
                {
                    int qi = (b * T + t) * s.QWidth + h * hd;
                    double pdp = 0;
                    for (int u = 0; u <= t; u++)
                    {
                        int ki = (b * T + u) * s.KvWidth + kvh * hd;
                        double w = p[((b * s.Heads + h) * T + t) * T + u], dot = 0;
                        for (int d = 0; d < hd; d++)
                        {
                            dv[ki + d] += w * dz[qi + d];
                            dot += (double)dz[qi + d] * v[ki + d];
                        }
                        dp[u] = dot;
                        pdp += w * dot;
                    }
                    if (rule == AttentionRule.FreezePattern) continue;
                    for (int u = 0; u <= t; u++)
                    {
                        int ki = (b * T + u) * s.KvWidth + kvh * hd;
                        double ds = p[((b * s.Heads + h) * T + t) * T + u] * (dp[u] - pdp) * scale;
                        for (int d = 0; d < hd; d++)
                        {
                            dq[qi + d] += ds * k[ki + d];
                            dk[ki + d] += ds * q[qi + d];
                        }
                    }
                }
            }
        return (ToFloat(dq), ToFloat(dk), ToFloat(dv));
    }

    static float[] ToFloat(double[] x) => x.Select(d => (float)d).ToArray();
}
