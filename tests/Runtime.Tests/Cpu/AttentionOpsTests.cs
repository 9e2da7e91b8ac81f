using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Tests.Kernels;

namespace NeuronTrace.Runtime.Tests.Cpu;

/// <summary>
/// <see cref="AttentionOps.Forward"/> against a naive causal softmax attention in float64 written from the definition:
/// head dims below, at and off the vector width (1, 4, 6, 8, 13, 16, 64), T not a multiple of the 4-query block or
/// the 8-key vector, groups 1, 2 and 4, batch 1 and 3, serial and parallel sizes. Outputs start NaN-filled, so every
/// value (including the zeros above the diagonal) must be written. Tolerance 2e-6 abs + 2e-5 rel on float32 sums.
/// </summary>
public class AttentionOpsTests
{
    // batch, T, heads, kv heads, head dim
    public static TheoryData<int, int, int, int, int> Shapes => new()
    {
        { 1, 1, 1, 1, 1 }, { 1, 1, 2, 1, 8 }, { 1, 3, 2, 2, 4 }, { 2, 5, 4, 2, 8 }, { 3, 7, 4, 1, 6 }, { 1, 9, 2, 1, 13 },
        { 2, 17, 8, 4, 8 }, { 1, 33, 4, 4, 16 }, { 2, 40, 4, 2, 64 }, { 8, 64, 8, 4, 8 }, { 1, 130, 2, 1, 64 },
    };

    [Theory, MemberData(nameof(Shapes))]
    public void Matches_a_naive_float64_reference(int batch, int seqLen, int heads, int kvHeads, int headDim)
    {
        var s = new AttentionShape(batch, seqLen, heads, kvHeads, headDim);
        var q = Rand.Floats(seqLen * 7 + headDim, s.Rows * s.QWidth, -2f, 2f);
        var k = Rand.Floats(seqLen * 7 + headDim + 1, s.Rows * s.KvWidth, -2f, 2f);
        var v = Rand.Floats(seqLen * 7 + headDim + 2, s.Rows * s.KvWidth);
        var z = new float[s.Rows * s.QWidth];
        var p = new float[batch * heads * seqLen * seqLen];
        Array.Fill(z, float.NaN);
        Array.Fill(p, float.NaN);
        AttentionOps.Forward(q, k, v, s, z, p);

        var (ez, ep) = Reference(q, k, v, s);
        Approx.Equal(ep, p, 2e-6f, 2e-5f, "probs");
        Approx.Equal(ez, z, 2e-6f, 2e-5f, "z");
    }

    [Fact]
    public void Large_scores_do_not_overflow_and_rows_sum_to_one()
    {
        var s = new AttentionShape(1, 12, 2, 1, 8);
        var q = Rand.Floats(5, s.Rows * s.QWidth, -40f, 40f);
        var k = Rand.Floats(6, s.Rows * s.KvWidth, -40f, 40f);
        var v = Rand.Floats(7, s.Rows * s.KvWidth);
        var z = new float[s.Rows * s.QWidth];
        var p = new float[s.Heads * s.SeqLen * s.SeqLen];
        AttentionOps.Forward(q, k, v, s, z, p);
        var (ez, ep) = Reference(q, k, v, s);
        Approx.Equal(ep, p, 2e-6f, 2e-5f, "probs");
        Approx.Equal(ez, z, 2e-6f, 2e-5f, "z");
        for (int row = 0; row < s.Heads * s.SeqLen; row++)
            Assert.Equal(1.0, p.AsSpan(row * s.SeqLen, s.SeqLen).ToArray().Sum(x => (double)x), 5);
    }

    static (float[] Z, float[] P) Reference(float[] q, float[] k, float[] v, AttentionShape s)
    {
        int T = s.SeqLen, hd = s.HeadDim;
        var z = new float[s.Rows * s.QWidth];
        var p = new float[s.Batch * s.Heads * T * T];
        double scale = 1.0 / Math.Sqrt(hd);
        var scores = new double[T];
        for (int b = 0; b < s.Batch; b++)
            for (int h = 0; h < s.Heads; h++)
            {
                int kvh = h / s.Group;
                for (int t = 0; t < T; t++)
                {
                    double max = double.NegativeInfinity, sum = 0;
                    for (int u = 0; u <= t; u++)
                    {
                        double dot = 0;
                        for (int d = 0; d < hd; d++)
                            dot += (double)q[(b * T + t) * s.QWidth + h * hd + d] * k[(b * T + u) * s.KvWidth + kvh * hd + d];
                        scores[u] = dot * scale;
                        max = Math.Max(max, scores[u]);
                    }
                    for (int u = 0; u <= t; u++) sum += scores[u] = Math.Exp(scores[u] - max);
                    for (int u = 0; u <= t; u++) p[((b * s.Heads + h) * T + t) * T + u] = (float)(scores[u] / sum);
                    for (int d = 0; d < hd; d++)
                    {
                        double acc = 0;
                        for (int u = 0; u <= t; u++) acc += scores[u] / sum * v[(b * T + u) * s.KvWidth + kvh * hd + d];
                        z[(b * T + t) * s.QWidth + h * hd + d] = (float)acc;
                    }
                }
            }
        return (z, p);
    }
}
