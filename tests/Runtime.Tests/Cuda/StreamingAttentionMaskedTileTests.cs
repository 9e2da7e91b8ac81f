using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// Causal masking without computing the masked tiles (issue 14), on the CPU streaming op, the fp32 kernels and the
/// bf16 tensor-core kernels (the last two on the host emulator ("host") and, when present, the GPU). A masked tile that was
/// computed and masked afterwards would multiply its zero probabilities by the tile's values: NaN there poisons the
/// result. So: forward, with K and V NaN from position P = 64 on (a boundary of the CPU's 64-key tile and of the kernels'
/// 32-key tiles and 64-row blocks), z and L of every query before P are finite and equal the finite run's; backward,
/// with q, dz, o and L NaN before P, dk and dv of every key from P on and dq of every query from P on are finite and
/// equal the finite run's (no key at or after P is attended by a query before it). T = 2·P + 5 (a partial last tile),
/// GQA groups 1, 2 and 4, batch 2, both rules. Equal to 1e-6 relative: the same tiles run in the same order.
/// </summary>
public class StreamingAttentionMaskedTileTests
{
    const int P = 64, T = 2 * P + 5, HeadDim = 16;

    public static IEnumerable<object[]> Cases =>
        from target in new[] { "cpu", "host fp32", "host bf16", "gpu fp32", "gpu bf16" }
        from g in new[] { (4, 4), (4, 2), (8, 2) }
        from rule in new[] { AttentionRule.Gradient, AttentionRule.FreezePattern }
        select new object[] { target, g.Item1, g.Item2, rule };

    /// <summary>The op under test: forward (q, k, v) → (z, L), backward (dz, q, k, v, o, L) → (dq, dk, dv).</summary>
    interface IStreaming : IDisposable
    {
        (float[] Z, float[] L) Forward(float[] q, float[] k, float[] v, AttentionShape s);
        (float[] Dq, float[] Dk, float[] Dv) Backward(float[] dz, float[] q, float[] k, float[] v, float[] o, float[] l, AttentionShape s, AttentionRule rule);
    }

    sealed class OnCpu : IStreaming
    {
        public (float[] Z, float[] L) Forward(float[] q, float[] k, float[] v, AttentionShape s)
        {
            float[] z = new float[s.Rows * s.QWidth], l = new float[s.Batch * s.Heads * s.SeqLen];
            AttentionOps.StreamingForward(q, k, v, s, z, l);
            return (z, l);
        }

        public (float[] Dq, float[] Dk, float[] Dv) Backward(float[] dz, float[] q, float[] k, float[] v, float[] o, float[] l, AttentionShape s, AttentionRule rule)
        {
            float[] dq = new float[q.Length], dk = new float[k.Length], dv = new float[v.Length];
            AttentionOps.StreamingBackward(dz, q, k, v, o, l, s, rule, dq, dk, dv);
            return (dq, dk, dv);
        }

        public void Dispose() { }
    }

    sealed class OnBackend(CudaBackend b) : IStreaming
    {
        public (float[] Z, float[] L) Forward(float[] q, float[] k, float[] v, AttentionShape s)
        {
            using var gq = b.Upload(q, s.Rows, s.QWidth);
            using var gk = b.Upload(k, s.Rows, s.KvWidth);
            using var gv = b.Upload(v, s.Rows, s.KvWidth);
            using var gz = b.Allocate(s.Rows, s.QWidth);
            using var gl = b.Allocate(s.Batch, s.Heads, s.SeqLen);
            b.StreamingAttention(gq, gk, gv, s, gz, gl);
            return (Get(gz), Get(gl));
        }

        public (float[] Dq, float[] Dk, float[] Dv) Backward(float[] dz, float[] q, float[] k, float[] v, float[] o, float[] l, AttentionShape s, AttentionRule rule)
        {
            using var gdz = b.Upload(dz, s.Rows, s.QWidth);
            using var gq = b.Upload(q, s.Rows, s.QWidth);
            using var gk = b.Upload(k, s.Rows, s.KvWidth);
            using var gv = b.Upload(v, s.Rows, s.KvWidth);
            using var go = b.Upload(o, s.Rows, s.QWidth);
            using var gl = b.Upload(l, s.Batch, s.Heads, s.SeqLen);
            using var gdq = b.Allocate(s.Rows, s.QWidth);
            using var gdk = b.Allocate(s.Rows, s.KvWidth);
            using var gdv = b.Allocate(s.Rows, s.KvWidth);
            b.StreamingAttentionBackward(gdz, gq, gk, gv, go, gl, s, rule, gdq, gdk, gdv);
            return (Get(gdq), Get(gdk), Get(gdv));
        }

        float[] Get(Tensor t)
        {
            var r = new float[t.Length];
            b.Download(t, r);
            return r;
        }

        public void Dispose() => b.Dispose();
    }

    static IStreaming? Open(string target, AttentionShape s)
    {
        if (target == "cpu") return new OnCpu();
        var rt = KernelTargets.Open(target.StartsWith("gpu") ? KernelTargets.Gpu : KernelTargets.Host);
        if (rt is null) return null;   // no GPU here: KernelTargets says so
        var b = new CudaBackend(rt, precision: target.EndsWith("bf16") ? GemmPrecision.Bf16 : GemmPrecision.Fp32);
        Assert.Equal(target.EndsWith("bf16"), b.UsesBf16Attention(s));
        return new OnBackend(b);
    }

    /// <summary>Rows (b, t) with t in [from, to) of a [B·T, width] array set to NaN.</summary>
    static float[] NaNRows(float[] a, AttentionShape s, int width, int from, int to)
    {
        var r = (float[])a.Clone();
        for (int b = 0; b < s.Batch; b++)
            Array.Fill(r, float.NaN, (b * s.SeqLen + from) * width, (to - from) * width);
        return r;
    }

    /// <summary>L [B, H, T] with t in [from, to) set to NaN.</summary>
    static float[] NaNPositions(float[] l, AttentionShape s, int from, int to)
    {
        var r = (float[])l.Clone();
        for (int bh = 0; bh < s.Batch * s.Heads; bh++) Array.Fill(r, float.NaN, bh * s.SeqLen + from, to - from);
        return r;
    }

    static void Same(float[] expected, float[] got, AttentionShape s, int width, int from, int to, string what)
    {
        for (int b = 0; b < s.Batch; b++)
            for (int t = from; t < to; t++)
                for (int j = 0; j < width; j++)
                {
                    int i = (b * s.SeqLen + t) * width + j;
                    Assert.True(float.IsFinite(got[i]), $"{what}[b {b}, t {t}, {j}] = {got[i]}: a masked tile was computed");
                    Assert.True(Math.Abs(got[i] - expected[i]) <= 1e-6 * Math.Max(1, Math.Abs(expected[i])), $"{what}[b {b}, t {t}, {j}]: {got[i]} against {expected[i]}");
                }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Masked_tiles_are_never_computed(string target, int heads, int kvHeads, AttentionRule rule)
    {
        var s = new AttentionShape(2, T, heads, kvHeads, HeadDim);
        using var op = Open(target, s);
        if (op is null) return;
        float[] q = Rand.Floats(1, s.Rows * s.QWidth, -1.5f, 1.5f), k = Rand.Floats(2, s.Rows * s.KvWidth, -1.5f, 1.5f);
        float[] v = Rand.Floats(3, s.Rows * s.KvWidth), dz = Rand.Floats(4, s.Rows * s.QWidth);

        var (z, l) = op.Forward(q, k, v, s);
        var (zn, ln) = op.Forward(q, NaNRows(k, s, s.KvWidth, P, T), NaNRows(v, s, s.KvWidth, P, T), s);
        Same(z, zn, s, s.QWidth, 0, P, "z");
        // L [B, H, T]: the positions before P of each (batch, head).
        for (int bh = 0; bh < s.Batch * s.Heads; bh++)
            for (int t = 0; t < P; t++)
                Assert.True(float.IsFinite(ln[bh * T + t]) && Math.Abs(ln[bh * T + t] - l[bh * T + t]) <= 1e-6 * Math.Max(1, Math.Abs(l[bh * T + t])),
                    $"L[{bh}, {t}]: {ln[bh * T + t]} against {l[bh * T + t]}");

        var (dq, dk, dv) = op.Backward(dz, q, k, v, z, l, s, rule);
        var (dqn, dkn, dvn) = op.Backward(NaNRows(dz, s, s.QWidth, 0, P), NaNRows(q, s, s.QWidth, 0, P), k, v,
            NaNRows(z, s, s.QWidth, 0, P), NaNPositions(l, s, 0, P), s, rule);
        Same(dv, dvn, s, s.KvWidth, P, T, "dv");
        Same(dk, dkn, s, s.KvWidth, P, T, "dk");
        Same(dq, dqn, s, s.QWidth, P, T, "dq");
    }
}
