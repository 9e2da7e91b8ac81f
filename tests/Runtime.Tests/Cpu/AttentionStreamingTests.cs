using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Tests.Kernels;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cpu;

/// <summary>
/// <see cref="AttentionOps.StreamingForward"/> and <see cref="AttentionOps.StreamingBackward"/> against the materialising
/// <see cref="AttentionOps.Forward"/> / <see cref="AttentionOps.Backward"/> (the reference): lengths 1, tile − 1,
/// tile + 1 and 3·tile + 5 for the 64-key tile (and one under the 4-query block), GQA groups 1, 2 and 4, batch 1 and 2,
/// head dims 8, 13 and 64, both rules. L is checked against log Σ_u e^(c·q·k_u) in float64. Tolerances: z 2e-6 abs +
/// 1e-5 rel, L 1e-5 abs + 1e-6 rel, gradients 1e-5 abs + 1e-4 rel — the streaming op sums per tile and rescales by
/// e^(m − m'), so it agrees with the reference to rounding, not bit for bit. Outputs start NaN-filled so every value
/// must be written (FreezePattern's zero dq and dk included).
/// </summary>
public class AttentionStreamingTests
{
    const int Tile = AttentionOps.StreamKeyTile;

    public static TheoryData<int, int, int, int, int> Shapes() => new()
    {
        { 1, 1, 2, 1, 8 }, { 2, 3, 4, 2, 8 }, { 1, Tile - 1, 4, 1, 13 }, { 2, Tile + 1, 4, 2, 8 }, { 1, 3 * Tile + 5, 8, 2, 64 },
        { 2, 3 * Tile + 5, 4, 4, 8 }, { 1, 2 * Tile, 2, 1, 16 },
    };

    public static TheoryData<int, int, int, int, int, AttentionRule> BackwardShapes()
    {
        var data = new TheoryData<int, int, int, int, int, AttentionRule>();
        foreach (var row in Shapes())
            foreach (var rule in new[] { AttentionRule.Gradient, AttentionRule.FreezePattern })
                data.Add((int)row[0], (int)row[1], (int)row[2], (int)row[3], (int)row[4], rule);
        return data;
    }

    static (float[] Q, float[] K, float[] V) Inputs(AttentionShape s, int seed) =>
        (Rand.Floats(seed, s.Rows * s.QWidth, -2f, 2f), Rand.Floats(seed + 1, s.Rows * s.KvWidth, -2f, 2f),
         Rand.Floats(seed + 2, s.Rows * s.KvWidth));

    static float[] NaNs(long n)
    {
        var a = new float[n];
        Array.Fill(a, float.NaN);
        return a;
    }

    [Theory, MemberData(nameof(Shapes))]
    public void Forward_matches_the_materialising_op(int batch, int seqLen, int heads, int kvHeads, int headDim)
    {
        var s = new AttentionShape(batch, seqLen, heads, kvHeads, headDim);
        var (q, k, v) = Inputs(s, seqLen * 7 + heads);
        var zRef = new float[s.Rows * s.QWidth];
        AttentionOps.Forward(q, k, v, s, zRef, new float[(long)batch * heads * seqLen * seqLen]);
        var z = NaNs(zRef.Length);
        var lse = NaNs((long)batch * heads * seqLen);
        AttentionOps.StreamingForward(q, k, v, s, z, lse);
        Approx.Equal(zRef, z, 2e-6f, 1e-5f, "z");
        Approx.Equal(LogSumExp(q, k, s), lse, 1e-5f, 1e-6f, "lse");
    }

    [Theory, MemberData(nameof(BackwardShapes))]
    public void Backward_matches_the_materialising_op(int batch, int seqLen, int heads, int kvHeads, int headDim, AttentionRule rule)
    {
        var s = new AttentionShape(batch, seqLen, heads, kvHeads, headDim);
        var (q, k, v) = Inputs(s, seqLen * 11 + kvHeads);
        var dz = Rand.Floats(seqLen + 5, s.Rows * s.QWidth);
        var z = new float[s.Rows * s.QWidth];
        var p = new float[(long)batch * heads * seqLen * seqLen];
        AttentionOps.Forward(q, k, v, s, z, p);
        float[] eq = new float[q.Length], ek = new float[k.Length], ev = new float[v.Length];
        AttentionOps.Backward(dz, q, k, v, p, s, rule, eq, ek, ev);

        var zs = new float[z.Length];
        var lse = new float[(long)batch * heads * seqLen];
        AttentionOps.StreamingForward(q, k, v, s, zs, lse);
        float[] dq = NaNs(q.Length), dk = NaNs(k.Length), dv = NaNs(v.Length);
        AttentionOps.StreamingBackward(dz, q, k, v, zs, lse, s, rule, dq, dk, dv);
        Approx.Equal(ev, dv, 1e-5f, 1e-4f, "dv");
        Approx.Equal(eq, dq, 1e-5f, 1e-4f, "dq");
        Approx.Equal(ek, dk, 1e-5f, 1e-4f, "dk");
        if (rule == AttentionRule.FreezePattern)
            Assert.True(dq.All(x => x == 0f) && dk.All(x => x == 0f), "FreezePattern: dq and dk must be exactly zero");
    }

    [Fact]
    public void Parallel_size_matches_and_is_deterministic()
    {
        // Above the serial threshold the items run on the thread pool: the result must not depend on the schedule.
        var s = new AttentionShape(2, 300, 8, 2, 32);
        var (q, k, v) = Inputs(s, 3);
        var dz = Rand.Floats(9, s.Rows * s.QWidth);
        var z = new float[s.Rows * s.QWidth];
        var lse = new float[s.Batch * s.Heads * s.SeqLen];
        AttentionOps.StreamingForward(q, k, v, s, z, lse);
        float[] dq1 = new float[q.Length], dk1 = new float[k.Length], dv1 = new float[v.Length];
        AttentionOps.StreamingBackward(dz, q, k, v, z, lse, s, AttentionRule.Gradient, dq1, dk1, dv1);
        float[] dq2 = NaNs(q.Length), dk2 = NaNs(k.Length), dv2 = NaNs(v.Length);
        AttentionOps.StreamingBackward(dz, q, k, v, z, lse, s, AttentionRule.Gradient, dq2, dk2, dv2);
        Assert.Equal(dq1, dq2);
        Assert.Equal(dk1, dk2);
        Assert.Equal(dv1, dv2);
        var p = new float[(long)s.Batch * s.Heads * s.SeqLen * s.SeqLen];
        var zRef = new float[z.Length];
        AttentionOps.Forward(q, k, v, s, zRef, p);
        float[] eq = new float[q.Length], ek = new float[k.Length], ev = new float[v.Length];
        AttentionOps.Backward(dz, q, k, v, p, s, AttentionRule.Gradient, eq, ek, ev);
        Approx.Equal(zRef, z, 2e-6f, 1e-5f, "z");
        Approx.Equal(ev, dv1, 1e-5f, 1e-4f, "dv");
        Approx.Equal(eq, dq1, 1e-5f, 1e-4f, "dq");
        Approx.Equal(ek, dk1, 1e-5f, 1e-4f, "dk");
    }

    [Fact]
    public void Refuses_a_short_statistics_buffer()
    {
        var s = new AttentionShape(1, 5, 2, 1, 8);
        var (q, k, v) = Inputs(s, 1);
        var e = Assert.Throws<ArgumentException>(() => AttentionOps.StreamingForward(q, k, v, s, new float[q.Length], new float[9]));
        Assert.Contains("lse", e.Message);
    }

    /// <summary>L[b, h, t] = log Σ_{u ≤ t} e^(c·q_t·k_u) in float64, from the definition.</summary>
    static float[] LogSumExp(float[] q, float[] k, AttentionShape s)
    {
        var l = new float[s.Batch * s.Heads * s.SeqLen];
        double c = 1.0 / Math.Sqrt(s.HeadDim);
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.Heads; h++)
                for (int t = 0; t < s.SeqLen; t++)
                {
                    var sc = new double[t + 1];
                    for (int u = 0; u <= t; u++)
                    {
                        double dot = 0;
                        for (int d = 0; d < s.HeadDim; d++)
                            dot += (double)q[(b * s.SeqLen + t) * s.QWidth + h * s.HeadDim + d] *
                                   k[(b * s.SeqLen + u) * s.KvWidth + h / s.Group * s.HeadDim + d];
                        sc[u] = c * dot;
                    }
                    double m = sc.Max();
                    l[(b * s.Heads + h) * s.SeqLen + t] = (float)(m + Math.Log(sc.Sum(x => Math.Exp(x - m))));
                }
        return l;
    }
}
