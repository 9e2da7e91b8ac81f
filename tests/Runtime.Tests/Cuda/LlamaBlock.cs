using NeuronTrace.Runtime.Tests.Kernels;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// A tiny pre-norm Llama block written only in IBackend ops (batch 2, T 5, d 24, 4 query heads over 2 kv heads,
/// head dim 6, d_ff 40), forward and backward, so two backends can be compared on the whole chain.
/// </summary>
static class LlamaBlock
{
    const int B = 2, T = 5, D = 24, H = 4, KvH = 2, Hd = 6, Ff = 40, Rows = B * T;

    public static (float[] Output, float[] InputGrad) Run(IBackend be, BackwardRules rules)
    {
        var shape = new AttentionShape(B, T, H, KvH, Hd);
        Tensor Up(int seed, float lo, float hi, params int[] s) => be.Upload(Rand.Floats(seed, s.Aggregate(1, (a, x) => a * x), lo, hi), s);
        float[] cos = new float[T * Hd / 2], sin = new float[T * Hd / 2];
        for (int p = 0; p < T; p++)
            for (int i = 0; i < Hd / 2; i++)
            {
                cos[p * Hd / 2 + i] = MathF.Cos(p * MathF.Pow(10000f, -2f * i / Hd));
                sin[p * Hd / 2 + i] = MathF.Sin(p * MathF.Pow(10000f, -2f * i / Hd));
            }
        using var tc = be.Upload(cos, T, Hd / 2);
        using var ts = be.Upload(sin, T, Hd / 2);
        float ws = 0.3f;
        using var x = Up(1, -1f, 1f, Rows, D);
        using var g1 = Up(2, 0.8f, 1.2f, D);
        using var g2 = Up(3, 0.8f, 1.2f, D);
        using var wq = Up(4, -ws, ws, H * Hd, D);
        using var wk = Up(5, -ws, ws, KvH * Hd, D);
        using var wv = Up(6, -ws, ws, KvH * Hd, D);
        using var wo = Up(7, -ws, ws, D, H * Hd);
        using var wg = Up(8, -ws, ws, Ff, D);
        using var wu = Up(9, -ws, ws, Ff, D);
        using var wd = Up(10, -ws, ws, D, Ff);

        // forward
        using var u = be.Allocate(Rows, D);
        using var s1 = be.Allocate(Rows);
        be.RmsNorm(x, g1, 1e-5f, u, s1);
        using var q = be.Allocate(Rows, H * Hd);
        using var k = be.Allocate(Rows, KvH * Hd);
        using var v = be.Allocate(Rows, KvH * Hd);
        be.MatMul(u, wq, q, false);
        be.MatMul(u, wk, k, false);
        be.MatMul(u, wv, v, false);
        be.Rope(q, H, T, tc, ts, interleaved: true, inverse: false);
        be.Rope(k, KvH, T, tc, ts, interleaved: true, inverse: false);
        using var z = be.Allocate(Rows, H * Hd);
        using var probs = be.Allocate(B, H, T, T);
        be.Attention(q, k, v, shape, z, probs);
        using var r1 = be.Allocate(Rows, D);
        be.Copy(x, r1);
        be.MatMul(z, wo, r1, accumulate: true);
        using var xt = be.Allocate(Rows, D);
        using var s2 = be.Allocate(Rows);
        be.RmsNorm(r1, g2, 1e-5f, xt, s2);
        using var ag = be.Allocate(Rows, Ff);
        using var au = be.Allocate(Rows, Ff);
        be.MatMul(xt, wg, ag, false);
        be.MatMul(xt, wu, au, false);
        using var h = be.Allocate(Rows, Ff);
        be.SwiGlu(ag, au, h);
        using var r2 = be.Allocate(Rows, D);
        be.Copy(r1, r2);
        be.MatMul(h, wd, r2, accumulate: true);

        // backward from a fixed upstream gradient
        using var dr2 = Up(11, -1f, 1f, Rows, D);
        using var dh = be.Allocate(Rows, Ff);
        be.MatMulInputGrad(dr2, wd, dh, false);
        using var dag = be.Allocate(Rows, Ff);
        using var dau = be.Allocate(Rows, Ff);
        be.SwiGluBackward(dh, ag, au, rules.Gate, dag, dau);
        using var dxt = be.Allocate(Rows, D);
        be.MatMulInputGrad(dag, wg, dxt, false);
        be.MatMulInputGrad(dau, wu, dxt, true);
        using var dr1 = be.Allocate(Rows, D);
        be.Copy(dr2, dr1);
        be.RmsNormBackward(dxt, r1, g2, s2, rules.Norm, dr1);
        using var dz = be.Allocate(Rows, H * Hd);
        be.MatMulInputGrad(dr1, wo, dz, false);
        using var dq = be.Allocate(Rows, H * Hd);
        using var dk = be.Allocate(Rows, KvH * Hd);
        using var dv = be.Allocate(Rows, KvH * Hd);
        be.AttentionBackward(dz, q, k, v, probs, shape, rules.Attention, dq, dk, dv);
        be.Rope(dq, H, T, tc, ts, interleaved: true, inverse: true);
        be.Rope(dk, KvH, T, tc, ts, interleaved: true, inverse: true);
        using var du = be.Allocate(Rows, D);
        be.MatMulInputGrad(dq, wq, du, false);
        be.MatMulInputGrad(dk, wk, du, true);
        be.MatMulInputGrad(dv, wv, du, true);
        using var dx = be.Allocate(Rows, D);
        be.Copy(dr1, dx);
        be.RmsNormBackward(du, x, g1, s1, rules.Norm, dx);

        float[] output = new float[Rows * D], grad = new float[Rows * D];
        be.Download(r2, output);
        be.Download(dx, grad);
        return (output, grad);
    }
}
