using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// <see cref="IBackend.StoreForBackward"/>: the CPU backend (and the CUDA one in fp32 or TF32) keeps the tensor itself,
/// so its scores stay bit for bit; the CUDA backend under <see cref="GemmPrecision.Bf16"/> keeps a bf16 tensor and frees
/// the fp32 one, and the backward ops that read it give, bit for bit, what they give on fp32 inputs already rounded to
/// bf16 (the reference: the same op on the rounded values, uploaded as fp32): attention's backward both with the bf16
/// kernels (head dim 16) and with the fp32 ones (head dim 4, the stored q, k, v widened), and SwiGLU's backward.
/// </summary>
public class StoredStateTests
{
    static float[] Round(float[] x) => x.Select(v => MmaSelfTests.FromBf16(MmaSelfTests.Bf16(v))).ToArray();

    static float[] Get(IBackend b, Tensor t)
    {
        var r = new float[t.Length];
        b.Download(t, r);
        return r;
    }

    static void BitEqual(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R}");
    }

    [Fact]
    public void The_cpu_and_the_fp32_cuda_backends_keep_the_tensor_itself()
    {
        IBackend cpu = CpuBackend.Instance;
        using var t = cpu.Upload(Rand.Floats(1, 12), 3, 4);
        Assert.Same(t, cpu.StoreForBackward(t));
        foreach (var p in new[] { GemmPrecision.Fp32, GemmPrecision.Tf32 })
        {
            using var b = new CudaBackend(new HostKernelRuntime(), precision: p);
            using var g = b.Upload(Rand.Floats(2, 12), 3, 4);
            Assert.Same(g, ((IBackend)b).StoreForBackward(g));
        }
    }

    [Fact]
    public void Under_bf16_the_stored_tensor_is_bf16_of_half_the_bytes_and_the_fp32_one_is_freed()
    {
        var device = new RecordingDeviceRuntime();
        using var b = new CudaBackend(device, ownsDevice: false, GemmPrecision.Bf16);
        var t = (CudaTensor)b.AllocateUninitialized(64, 1024);
        long before = device.Pool.UsedBytes;
        var stored = (CudaTensor)((IBackend)b).StoreForBackward(t);
        Assert.True(stored.IsBf16);
        Assert.True(t.IsDisposed);
        Assert.Equal(t.Shape.ToArray(), stored.Shape.ToArray());
        Assert.Equal(64L * 1024 * 2, stored.Bytes);
        Assert.Equal(before - 64L * 1024 * 4 + 64L * 1024 * 2, device.Pool.UsedBytes);
        stored.Dispose();
    }

    public static TheoryData<int, AttentionRule> AttentionCases =>
        new() { { 4, AttentionRule.Gradient }, { 4, AttentionRule.FreezePattern }, { 16, AttentionRule.Gradient }, { 16, AttentionRule.FreezePattern } };

    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void Attention_backward_from_stored_q_k_v_equals_it_on_the_rounded_fp32_ones(int headDim, AttentionRule rule)
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        IBackend be = b;
        var s = new AttentionShape(2, 37, 4, 2, headDim);   // 37: no multiple of the kernels' tiles; GQA 2
        Assert.Equal(headDim == 16, b.UsesBf16Attention(s));
        float[] q = Round(Rand.Floats(1, s.Rows * s.QWidth, -1.5f, 1.5f)), k = Round(Rand.Floats(2, s.Rows * s.KvWidth, -1.5f, 1.5f));
        float[] v = Round(Rand.Floats(3, s.Rows * s.KvWidth)), dz = Rand.Floats(4, s.Rows * s.QWidth);

        (float[] Dq, float[] Dk, float[] Dv) Backward(bool stored)
        {
            Tensor gq = b.Upload(q, s.Rows, s.QWidth), gk = b.Upload(k, s.Rows, s.KvWidth), gv = b.Upload(v, s.Rows, s.KvWidth);
            using var z = b.AllocateUninitialized(s.Rows, s.QWidth);
            using var lse = b.AllocateUninitialized(s.Batch, s.Heads, s.SeqLen);
            b.StreamingAttention(gq, gk, gv, s, z, lse);
            if (stored) { gq = be.StoreForBackward(gq); gk = be.StoreForBackward(gk); gv = be.StoreForBackward(gv); }
            Assert.Equal(stored, ((CudaTensor)gq).IsBf16 && ((CudaTensor)gk).IsBf16 && ((CudaTensor)gv).IsBf16);
            using var gdz = b.Upload(dz, s.Rows, s.QWidth);
            using var dq = b.Upload(Rand.Floats(5, q.Length, 100f, 200f), s.Rows, s.QWidth);
            using var dk = b.Upload(Rand.Floats(6, k.Length, 100f, 200f), s.Rows, s.KvWidth);
            using var dv = b.Upload(Rand.Floats(7, v.Length, 100f, 200f), s.Rows, s.KvWidth);
            b.StreamingAttentionBackward(gdz, gq, gk, gv, z, lse, s, rule, dq, dk, dv);
            var r = (Get(b, dq), Get(b, dk), Get(b, dv));
            gq.Dispose(); gk.Dispose(); gv.Dispose();
            return r;
        }

        var fp32 = Backward(stored: false);
        var bf16 = Backward(stored: true);
        Assert.Contains(fp32.Dv, x => x != 0);
        BitEqual(fp32.Dq, bf16.Dq, "dq");
        BitEqual(fp32.Dk, bf16.Dk, "dk");
        BitEqual(fp32.Dv, bf16.Dv, "dv");
    }

    [Theory]
    [InlineData(GateRule.Exact)]
    [InlineData(GateRule.IdentityHalf)]
    [InlineData(GateRule.Identity)]
    public void Swiglu_backward_from_stored_gate_and_up_equals_it_on_the_rounded_fp32_ones(GateRule rule)
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        const int rows = 9, width = 40;
        float[] g = Round(Rand.Floats(1, rows * width, -8f, 8f)), u = Round(Rand.Floats(2, rows * width, -2f, 2f)), dh = Rand.Floats(3, rows * width);

        (float[] Dgate, float[] Dup) Backward(bool stored)
        {
            Tensor gate = b.Upload(g, rows, width), up = b.Upload(u, rows, width);
            if (stored) { gate = ((IBackend)b).StoreForBackward(gate); up = ((IBackend)b).StoreForBackward(up); }
            using var gdh = b.Upload(dh, rows, width);
            using var dgate = b.AllocateUninitialized(rows, width);
            using var dup = b.AllocateUninitialized(rows, width);
            b.SwiGluBackward(gdh, gate, up, rule, dgate, dup);
            var r = (Get(b, dgate), Get(b, dup));
            gate.Dispose(); up.Dispose();
            return r;
        }

        var fp32 = Backward(stored: false);
        var bf16 = Backward(stored: true);
        BitEqual(fp32.Dgate, bf16.Dgate, "dgate");
        BitEqual(fp32.Dup, bf16.Dup, "dup");
        float[] eg = new float[g.Length], eu = new float[g.Length];
        SwiGluOps.Backward(dh, g, u, rule, eg, eu);
        Approx.Equal(eg, bf16.Dgate, 1e-6f, 1e-5f, "dgate against the CPU op");
    }
}
