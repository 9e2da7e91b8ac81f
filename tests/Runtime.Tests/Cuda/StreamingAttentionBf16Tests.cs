using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using Xunit;
using Xunit.Abstractions;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// attention_flash_bf16.cu (mma.sync / ldmatrix / cp.async, emulated on the host) through <see cref="CudaBackend"/>
/// in <see cref="GemmPrecision.Bf16"/> against the CPU streaming op run on the same bf16-rounded q, k, v and dz, so
/// what remains is the kernel's own rounding: P to bf16 before its products with V and dz (2^-9 relative per
/// element) and fp32 sums in MMA order. Lengths not multiples of the 32-key tile or the 64-row block (1, 31, 33,
/// 101, 70), GQA groups 1, 2 and 4 (packed rows of a group share each K/V tile), head dims 16..128, both rules.
/// Tolerances, 3-5× the worst seen on the emulator (the test prints each ratio): z 4e-3 abs + 1e-2 rel; L 1e-5 abs +
/// 1e-5 rel (L never passes through bf16); dv, dk, dq 1e-2 abs + 2e-2 rel (dv sums bf16 P over up to T·group rows;
/// dS mixes bf16 P with fp32 dP − D). Outputs start as garbage: every value must be written.
/// </summary>
public class StreamingAttentionBf16Tests(ITestOutputHelper output)
{
    public static IEnumerable<object[]> Cases => KernelTargets.Cross(
        from s in new[] { (1, 1, 2, 1, 16), (2, 31, 4, 2, 16), (1, 33, 4, 4, 32), (1, 101, 8, 2, 32), (2, 70, 4, 1, 64), (1, 40, 2, 1, 128) }
        from r in new[] { AttentionRule.Gradient, AttentionRule.FreezePattern }
        select new object[] { s.Item1, s.Item2, s.Item3, s.Item4, s.Item5, r });

    static float[] Round(float[] x) => x.Select(v => MmaSelfTests.FromBf16(MmaSelfTests.Bf16(v))).ToArray();

    [Theory]
    [MemberData(nameof(Cases))]
    public void Bf16_streaming_attention_and_backward_match_the_cpu_op_on_rounded_inputs(string target, int batch, int seqLen, int heads,
        int kvHeads, int headDim, AttentionRule rule)
    {
        var rt = KernelTargets.Open(target);
        if (rt is null) return;
        using var b = new CudaBackend(rt, precision: GemmPrecision.Bf16);
        var s = new AttentionShape(batch, seqLen, heads, kvHeads, headDim);
        Assert.True(b.UsesBf16Attention(s));
        float[] q = Rand.Floats(1 + seqLen, s.Rows * s.QWidth, -1.5f, 1.5f), k = Rand.Floats(2 + seqLen, s.Rows * s.KvWidth, -1.5f, 1.5f);
        float[] v = Rand.Floats(3 + seqLen, s.Rows * s.KvWidth), dz = Rand.Floats(4 + seqLen, s.Rows * s.QWidth);
        float[] z = new float[s.Rows * s.QWidth], lse = new float[batch * heads * seqLen];
        AttentionOps.StreamingForward(Round(q), Round(k), Round(v), s, z, lse);
        float[] eq = new float[q.Length], ek = new float[k.Length], ev = new float[v.Length];
        AttentionOps.StreamingBackward(Round(dz), Round(q), Round(k), Round(v), z, lse, s, rule, eq, ek, ev);

        using var gq = b.Upload(q, s.Rows, s.QWidth);
        using var gk = b.Upload(k, s.Rows, s.KvWidth);
        using var gv = b.Upload(v, s.Rows, s.KvWidth);
        using var gz = b.Upload(Rand.Floats(5, z.Length, 100f, 200f), s.Rows, s.QWidth);
        using var gl = b.Upload(Rand.Floats(6, lse.Length, 100f, 200f), batch, heads, seqLen);
        b.StreamingAttention(gq, gk, gv, s, gz, gl);
        Check(z, Get(b, gz), 4e-3f, 1e-2f, "z");
        Check(lse, Get(b, gl), 1e-5f, 1e-5f, "lse");
        // The forward also stores z rounded to bf16 (the o product's operand): a product of z equals the CPU product of
        // the downloaded z and the weight, both rounded to bf16 (fp32 sums; 1e-5 as Bf16StorageTests' products).
        float[] ws = Rand.Floats(10, 5 * s.QWidth);
        using (var w = b.UploadConstant(ws, 5, s.QWidth))
        using (var y = b.AllocateUninitialized(s.Rows, 5))
        {
            b.MatMul(gz, w, y, false);
            Approx.Equal(Bf16StorageTests.CpuProduct(Round(Get(b, gz)), Round(ws), s.Rows, 5, s.QWidth), Get(b, y), 1e-5f, 1e-5f, "product of z");
        }

        using var gdz = b.Upload(dz, s.Rows, s.QWidth);
        using var gdq = b.Upload(Rand.Floats(7, q.Length, 100f, 200f), s.Rows, s.QWidth);
        using var gdk = b.Upload(Rand.Floats(8, k.Length, 100f, 200f), s.Rows, s.KvWidth);
        using var gdv = b.Upload(Rand.Floats(9, v.Length, 100f, 200f), s.Rows, s.KvWidth);
        using var go = b.Upload(z, s.Rows, s.QWidth);  // the CPU forward's o and L: both sides differentiate one pattern
        using var gl2 = b.Upload(lse, batch, heads, seqLen);
        b.StreamingAttentionBackward(gdz, gq, gk, gv, go, gl2, s, rule, gdq, gdk, gdv);
        Check(ev, Get(b, gdv), 1e-2f, 2e-2f, $"dv ({rule})");
        Check(ek, Get(b, gdk), 1e-2f, 2e-2f, $"dk ({rule})");
        Check(eq, Get(b, gdq), 1e-2f, 2e-2f, $"dq ({rule})");

        // As in the backward pass: dq and dk rotated back (inverse RoPE), then the stacked Q/K/V input-gradient product,
        // whose [dq | dk | dv] operand the dk/dv kernel (dv's columns) and the inverse RoPE (dq's, dk's) wrote in bf16.
        // It equals the CPU sum of products of the downloaded gradients and weights, both rounded to bf16 (1e-5, as
        // Bf16StorageTests' stacked products), and the same product over a conversion at the reader, bit for bit.
        using var cos = b.Upload(Rand.Floats(11, seqLen * headDim / 2, -1f, 1f), seqLen, headDim / 2);
        using var sin = b.Upload(Rand.Floats(12, seqLen * headDim / 2, -1f, 1f), seqLen, headDim / 2);
        b.Rope(gdq, heads, seqLen, cos, sin, interleaved: false, inverse: true);
        b.Rope(gdk, kvHeads, seqLen, cos, sin, interleaved: false, inverse: true);
        const int dim = 24;
        int[] ns = [s.QWidth, s.KvWidth, s.KvWidth];
        var wqkv = ns.Select((n, i) => Rand.Floats(13 + i, n * dim)).ToArray();
        var stacked = b.StackConstants(wqkv.Select((w, i) => b.UploadConstant(w, ns[i], dim)).ToArray());
        using var dx = b.AllocateUninitialized(s.Rows, dim);
        b.MatMulInputGradSum([gdq, gdk, gdv], stacked, dx);
        var expected = new CpuTensor(s.Rows, dim);
        var grads = new[] { Get(b, gdq), Get(b, gdk), Get(b, gdv) };
        for (int i = 0; i < 3; i++)
            CpuBackend.Instance.MatMulInputGrad(CpuBackend.Wrap(Round(grads[i]), s.Rows, ns[i]), CpuBackend.Wrap(Round(wqkv[i]), ns[i], dim), expected, i > 0);
        var got = Get(b, dx);
        Approx.Equal(expected.Data, got, 1e-5f, 1e-5f, $"Q/K/V input gradient of [dq | dk | dv] ({rule})");
        b.ReadsShadows = false;
        b.MatMulInputGradSum([gdq, gdk, gdv], stacked, dx);
        Assert.Equal(Get(b, dx), got);
        foreach (var w in stacked) w.Dispose();
    }

    [Fact]
    public void Head_dims_the_bf16_kernels_do_not_take_use_the_fp32_kernels()
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        Assert.False(b.UsesBf16Attention(new AttentionShape(1, 8, 2, 1, 8)));
        Assert.False(b.UsesBf16Attention(new AttentionShape(1, 8, 2, 1, 256)));
        using var fp32 = new CudaBackend(new HostKernelRuntime());
        Assert.False(fp32.UsesBf16Attention(new AttentionShape(1, 8, 2, 1, 64)));
    }

    void Check(float[] expected, float[] actual, float atol, float rtol, string what)
    {
        output.WriteLine($"{what}: worst {Approx.Ratio(expected, actual, atol, rtol):F3} of the tolerance");
        Approx.Equal(expected, actual, atol, rtol, what);
    }

    static float[] Get(IBackend b, Tensor t)
    {
        var r = new float[t.Length];
        b.Download(t, r);
        return r;
    }
}
