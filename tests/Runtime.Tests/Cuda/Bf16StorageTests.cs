using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// <see cref="GemmPrecision.Bf16"/> end to end on the CUDA backend (over the CPU emulator; issue 13 items 4-5):
/// weight matrices stored once as bf16 with no fp32 copy, read exactly by products, the embedding lookup and the
/// sparse classifier gather; row-stacked weights whose one product equals the separate ones; activation shadows
/// that are never used once their tensor is written; and a whole RelP pass against the fp32 CPU backend within the
/// bf16 tolerance of <see cref="ReducedPrecisionTests"/> (8e-2 of the largest score).
/// References: the CPU backend on the operands rounded to bf16 by the definition (nearest, ties to even).
/// </summary>
public class Bf16StorageTests
{
    static float NearestBf16(float x)
    {
        int bits = BitConverter.SingleToInt32Bits(x);
        float down = BitConverter.Int32BitsToSingle(bits & unchecked((int)0xFFFF0000)), up = BitConverter.Int32BitsToSingle((bits & unchecked((int)0xFFFF0000)) + 0x10000);
        double dd = Math.Abs(x - (double)down), du = Math.Abs(x - (double)up);
        return dd < du ? down : du < dd ? up : ((bits >> 16) & 1) == 0 ? down : up;
    }

    static float[] Bf(float[] a) => a.Select(NearestBf16).ToArray();

    static float[] Get(IBackend b, Tensor t)
    {
        var r = new float[t.Length];
        b.Download(t, r);
        return r;
    }

    internal static float[] CpuProduct(float[] x, float[] w, int rows, int n, int k)
    {
        var y = new CpuTensor(rows, n);
        CpuBackend.Instance.MatMul(CpuBackend.Wrap(x, rows, k), CpuBackend.Wrap(w, n, k), y, false);
        return y.Data;
    }

    [Fact]
    public void A_weight_matrix_is_stored_as_bf16_only_and_read_exactly_by_products_lookups_and_the_sparse_gather()
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        const int rows = 4, n = 9, k = 33;
        float[] xs = Rand.Floats(1, rows * k), ws = Rand.Floats(2, n * k);
        using var w = (CudaTensor)b.UploadConstant(ws, n, k);
        Assert.True(w.IsBf16);
        Assert.Equal(2L * n * k, w.Bytes);
        using var gain = (CudaTensor)b.UploadConstant(Rand.Floats(3, k), k);
        Assert.False(gain.IsBf16);   // vectors (norm gains) stay fp32
        Assert.Throws<ArgumentException>(() => b.Download(w, new float[n * k]));

        using var x = b.Upload(xs, rows, k);
        using var y = b.AllocateUninitialized(rows, n);
        b.MatMul(x, w, y, false);
        Approx.Equal(CpuProduct(Bf(xs), Bf(ws), rows, n, k), Get(b, y), 1e-5f, 1e-5f, "bf16 product");

        int[] tokens = [3, 0, 8, 3];
        using var e = b.AllocateUninitialized(tokens.Length, k);
        b.Embedding(tokens, w, e);
        var rounded = Bf(ws);
        var got = Get(b, e);
        for (int r = 0; r < tokens.Length; r++)
            for (int c = 0; c < k; c++) Assert.Equal(rounded[tokens[r] * k + c], got[r * k + c]);

        int[] columns = [2, 7, -1, 5, 5, 0, 8, -1];
        float[] values = [1f, -1f, 3f, 0.5f, 0.25f, 2f, -2f, 9f];
        using var dx = b.AllocateUninitialized(4, k);
        b.SparseMatMulInputGrad(columns, values, 2, w, dx);
        var expected = new CpuTensor(4, k);
        CpuBackend.Instance.SparseMatMulInputGrad(columns, values, 2, CpuBackend.Wrap(rounded, n, k), expected);
        Approx.Equal(expected.Data, Get(b, dx), 0, 0, "sparse input gradient from the bf16 table");

        // The same upload read by an fp32 product (the precision switched after upload): the stored values, widened.
        b.Precision = GemmPrecision.Fp32;
        b.MatMul(x, w, y, false);
        Approx.Equal(CpuProduct(xs, rounded, rows, n, k), Get(b, y), 1e-5f, 1e-5f, "fp32 product of the bf16-stored weight");
    }

    [Fact]
    public void An_8b_shaped_model_under_bf16_holds_half_the_weight_bytes_and_makes_no_copies_in_a_pass()
    {
        var c = new LlamaConfig
        {
            Dim = 4096, HiddenDim = 14336, Layers = 2, Heads = 32, KvHeads = 8, VocabSize = 128256, MaxSeqLen = 8192,
            RopeTheta = 500000f, RopeLayout = RopeLayout.RotateHalf, NormEps = 1e-5f,
        };
        long Bytes(GemmPrecision p, out RecordingDeviceRuntime device, out Llama model)
        {
            device = new RecordingDeviceRuntime();
            model = Llama.WithUninitializedWeights(c, new CudaBackend(device, ownsDevice: false, p));
            return device.Pool.UsedBytes;
        }
        long fp32 = Bytes(GemmPrecision.Fp32, out _, out var m32), bf16 = Bytes(GemmPrecision.Bf16, out var rec, out var m16);
        m32.Dispose();
        long matrices = 2L * c.VocabSize * c.Dim + c.Layers * ((long)c.Dim * c.Dim * 2 + 2L * c.KvDim * c.Dim + 3L * c.Dim * c.HiddenDim);
        Assert.True(fp32 >= 4 * matrices, $"fp32 weights {fp32} bytes, matrices alone {4 * matrices}");
        Assert.InRange(bf16 / (double)fp32, 0.49, 0.51);
        // A pass allocates activations only: no weight copy (a second copy would add at least 2 bytes per weight).
        rec.Reset();
        var pairs = new[] { new PromptPair(1, [1, 5, 9, 12], [1, 5, 9, 13], 4, 6) };
        Attributor.Score(m16, new PromptTask("t", pairs), new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = 1 });
        Assert.True(rec.Pool.PeakUsedBytes < bf16 + matrices / 4, $"peak {rec.Pool.PeakUsedBytes} bytes against weights of {bf16}");
        m16.Dispose();
    }

    [Fact]
    public void Bf16_checkpoint_values_go_up_unchanged_and_fp32_mode_keeps_fp32_weights()
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        var raw = Enumerable.Range(0, 6 * 5).Select(i => (ushort)(0x3F00 + i * 7 + (i % 2 == 0 ? 0x8000 : 0))).ToArray();
        using var w = b.UploadConstant(new HalfWeights(raw, HalfFormat.BFloat16), 6, 5);
        using var e = b.AllocateUninitialized(6, 5);
        b.Embedding([0, 1, 2, 3, 4, 5], w, e);
        Assert.Equal(raw.Select(h => BitConverter.Int32BitsToSingle(h << 16)).ToArray(), Get(b, e));

        using var fp32 = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Fp32);
        using var w32 = (CudaTensor)fp32.UploadConstant(Rand.Floats(4, 30), 6, 5);
        Assert.False(w32.IsBf16);
        Assert.Same(fp32.StackConstants([w32])[0], w32);
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(true, true)]
    [InlineData(false, false)]
    public void The_qkv_projection_equals_the_stacked_product_and_two_ropes_bit_for_bit_and_the_cpu_op(bool bf16, bool interleaved)
    {
        var precision = bf16 ? GemmPrecision.Bf16 : GemmPrecision.Fp32;
        // Under Bf16 the stacked product's split and both rotations are one launch (split_qkv_rope); under Fp32 the
        // separate calls. Either way the result is that of the calls IBackend.QkvProjection defaults to, bit for bit,
        // including the bf16 operand a later product reads; and the CPU backend's (the default) on the bf16-rounded inputs.
        using var b = new CudaBackend(new HostKernelRuntime(), precision: precision);
        const int seq = 3, rows = 2 * seq, k = 24, heads = 4, kvHeads = 2, headDim = 6;
        int[] ns = [heads * headDim, kvHeads * headDim, kvHeads * headDim];
        var ws = ns.Select((n, i) => Rand.Floats(30 + i, n * k)).ToArray();
        float[] xs = Rand.Floats(1, rows * k), wo = Rand.Floats(5, 7 * ns[0]);
        var (cosTable, sinTable) = RopeKernelTests.Tables(seq, headDim);
        var stacked = b.StackConstants(ws.Select((w, i) => b.UploadConstant(w, ns[i], k)).ToArray());
        using var x = b.Upload(xs, rows, k);
        using var cos = b.Upload(cosTable, seq, headDim / 2);
        using var sin = b.Upload(sinTable, seq, headDim / 2);
        using var o = b.UploadConstant(wo, 7, ns[0]);
        var fused = ns.Select(n => b.AllocateUninitialized(rows, n)).ToArray();
        var separate = ns.Select(n => b.AllocateUninitialized(rows, n)).ToArray();
        b.QkvProjection(x, stacked, fused[0], fused[1], fused[2], heads, kvHeads, seq, cos, sin, interleaved);
        b.MatMulShared(x, stacked, separate);
        b.Rope(separate[0], heads, seq, cos, sin, interleaved, inverse: false);
        b.Rope(separate[1], kvHeads, seq, cos, sin, interleaved, inverse: false);

        var cpu = CpuBackend.Instance;
        var cq = ns.Select(n => (Tensor)new CpuTensor(rows, n)).ToArray();
        Tensor[] cw = ns.Select((n, i) => (Tensor)CpuBackend.Wrap(bf16 ? Bf(ws[i]) : ws[i], n, k)).ToArray();
        ((IBackend)cpu).QkvProjection(CpuBackend.Wrap(bf16 ? Bf(xs) : xs, rows, k), cw, cq[0], cq[1], cq[2], heads, kvHeads, seq,
            CpuBackend.Wrap(cosTable, seq, headDim / 2), CpuBackend.Wrap(sinTable, seq, headDim / 2), interleaved);
        for (int i = 0; i < ns.Length; i++)
        {
            Assert.Equal(Get(b, separate[i]), Get(b, fused[i]));
            Approx.Equal(((CpuTensor)cq[i]).Data, Get(b, fused[i]), 1e-5f, 1e-5f, $"part {i} against the CPU backend");
        }
        using var y = b.AllocateUninitialized(rows, 7);
        using var y2 = b.AllocateUninitialized(rows, 7);
        b.MatMul(fused[0], o, y, false);      // reads q's bf16 operand under Bf16 (the one the fused launch wrote)
        b.MatMul(separate[0], o, y2, false);
        Assert.Equal(Get(b, y2), Get(b, y));
        foreach (var t in stacked.Concat(fused).Concat(separate)) t.Dispose();
    }

    [Fact]
    public void Stacked_weights_give_the_separate_products_and_input_gradients()
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        const int rows = 5, k = 24;
        int[] ns = [16, 8, 8];
        var ws = ns.Select((n, i) => Rand.Floats(10 + i, n * k)).ToArray();
        float[] xs = Rand.Floats(1, rows * k);
        var stacked = b.StackConstants(ws.Select((w, i) => b.UploadConstant(w, ns[i], k)).ToArray());
        Assert.Equal(((CudaTensor)stacked[0]).Pointer + (nint)(2 * ns[0] * k), ((CudaTensor)stacked[1]).Pointer);
        using var x = b.Upload(xs, rows, k);
        var ys = ns.Select(n => b.AllocateUninitialized(rows, n)).ToArray();
        b.MatMulShared(x, stacked, ys);
        for (int i = 0; i < ns.Length; i++)
            Approx.Equal(CpuProduct(Bf(xs), Bf(ws[i]), rows, ns[i], k), Get(b, ys[i]), 1e-5f, 1e-5f, $"stacked product {i}");

        var dys = ns.Select((n, i) => Rand.Floats(20 + i, rows * n)).ToArray();
        var gdys = dys.Select((d, i) => b.Upload(d, rows, ns[i])).ToArray();
        using var dx = b.Allocate(rows, k);
        b.MatMulInputGradSum(gdys, stacked, dx);
        var expected = new CpuTensor(rows, k);
        for (int i = 0; i < ns.Length; i++)
            CpuBackend.Instance.MatMulInputGrad(CpuBackend.Wrap(Bf(dys[i]), rows, ns[i]), CpuBackend.Wrap(Bf(ws[i]), ns[i], k), expected, i > 0);
        Approx.Equal(expected.Data, Get(b, dx), 1e-5f, 1e-5f, "summed input gradient of the stacked weights");

        foreach (var t in stacked.Concat(ys).Concat(gdys)) t.Dispose();   // the views free the block once, with the last
    }

    [Fact]
    public void A_bf16_shadow_is_never_read_after_its_tensor_is_written()
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        const int rows = 3, n = 7, k = 40;
        float[] xs = Rand.Floats(1, rows * k), ws = Rand.Floats(2, n * k), gain = Rand.Floats(3, k, 0.5f, 1.5f);
        using var w = b.UploadConstant(ws, n, k);
        using var x = b.Upload(xs, rows, k);
        using var g = b.UploadConstant(gain, k);
        using var normed = b.AllocateUninitialized(rows, k);
        using var rstd = b.AllocateUninitialized(rows);
        using var y = b.AllocateUninitialized(rows, n);

        b.RmsNorm(x, g, 1e-5f, normed, rstd);      // writes the bf16 shadow of normed
        b.MatMul(normed, w, y, false);
        Approx.Equal(CpuProduct(Bf(Get(b, normed)), Bf(ws), rows, n, k), Get(b, y), 1e-5f, 1e-5f, "product of the normed rows");

        b.Add(normed, normed);                     // an edit between the norm and the product
        b.MatMul(normed, w, y, false);
        Approx.Equal(CpuProduct(Bf(Get(b, normed)), Bf(ws), rows, n, k), Get(b, y), 1e-5f, 1e-5f, "product after the edit");

        using (var other = b.Upload(Rand.Floats(4, rows * k), rows, k)) b.Copy(other, normed);   // a copy into it
        b.MatMul(normed, w, y, false);
        Approx.Equal(CpuProduct(Bf(Get(b, normed)), Bf(ws), rows, n, k), Get(b, y), 1e-5f, 1e-5f, "product after a copy");

        b.AddInto(x, normed, normed);              // an out-of-place add into it
        b.MatMul(normed, w, y, false);
        Approx.Equal(CpuProduct(Bf(Get(b, normed)), Bf(ws), rows, n, k), Get(b, y), 1e-5f, 1e-5f, "product after an add into it");
    }

    /// <summary>Head dim 4 (the fp32 streaming attention) and 16 (the bf16 tensor-core attention over the q, k, v and
    /// dz shadows their producers write).</summary>
    public static TheoryData<int> HeadDims => [4, 16];

    [Theory]
    [MemberData(nameof(HeadDims))]
    public void A_bf16_relp_pass_scores_within_the_bf16_tolerance_of_the_fp32_cpu(int headDim)
    {
        var config = RandomLlama.SmallConfig() with { Dim = 4 * headDim, HiddenDim = 6 * headDim };
        var weights = RandomLlama.Create(config, seed: 5);
        var task = LastTokenPairs.Task(4, weights.Config.VocabSize, seed: 2);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = NodeSites.All, BatchSize = 2 };
        using var cpu = new Llama(weights, CpuBackend.Instance);
        using var backend = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        using var gpu = new Llama(weights, backend);
        var expected = Attributor.Score(cpu, task, options);
        var got = Attributor.Score(gpu, task, options);
        double worst = 0;
        foreach (var s in options.Sites)
            for (int l = 0; l < weights.Config.Layers; l++)
            {
                float[] a = expected.Get(s, l), c = got.Get(s, l);
                double max = a.Max(Math.Abs);
                Assert.True(max > 0, $"{s} layer {l}: all zero");
                for (int i = 0; i < a.Length; i++) worst = Math.Max(worst, Math.Abs(a[i] - c[i]) / max);
            }
        // 8e-2 of the largest score with the fp32 attention; the tensor-core attention also rounds q, k, v, dz and P to
        // bf16, and a RelP score's Δa is a difference of two nearly equal activations: 1.2e-1 (measured 9.6e-2).
        double tolerance = backend.UsesBf16Attention(new AttentionShape(1, 1, config.Heads, config.KvHeads, config.HeadDim)) ? 1.2e-1 : 8e-2;
        Assert.True(worst <= tolerance, $"bf16 RelP scores: {worst:E2} of the largest (tolerance {tolerance:E1})");
        Assert.True(worst > 1e-6, "bf16 scores equal the fp32 ones: nothing was rounded");

        // The operands the producing kernels wrote in bf16 (shadows) are the roundings a conversion at the reader makes:
        // the same pass converting every operand instead gives the same scores, bit for bit.
        backend.ReadsShadows = false;
        var converted = Attributor.Score(gpu, task, options);
        foreach (var s in options.Sites)
            for (int l = 0; l < weights.Config.Layers; l++)
                Assert.Equal(converted.Get(s, l), got.Get(s, l));
    }
    /// <summary>
    /// <see cref="CudaBackend.GateUpSwiGluForBackward"/> (under Bf16 one stacked [W1; W3] product and SwiGLU reading its
    /// output in place) against the calls it replaces: <see cref="CudaBackend.MatMulShared"/> (stacked and split below
    /// <see cref="CudaBackend.NarrowProductColumns"/>, two products above), SwiGLU and two stores. act and the backward's
    /// dgate, dup (read from the stored gate and up) are bit for bit the same; fp32 is the default path itself.
    /// </summary>
    [Theory]
    [InlineData(5, 24, 40, true)]
    [InlineData(3, 8, 4100, true)]
    [InlineData(3, 8, 4100, false)]
    public void Gate_and_up_as_one_product_read_in_place_equal_the_products_swiglu_and_stores(int rows, int dim, int hidden, bool bf16)
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: bf16 ? GemmPrecision.Bf16 : GemmPrecision.Fp32);
        var w = b.StackConstants([b.UploadConstant(Rand.Floats(1, hidden * dim), hidden, dim), b.UploadConstant(Rand.Floats(2, hidden * dim), hidden, dim)]);
        using var x = b.Upload(Rand.Floats(3, rows * dim), rows, dim);
        using var dh = b.Upload(Rand.Floats(4, rows * hidden), rows, hidden);
        (float[] Act, float[] Dgate, float[] Dup, bool Bf16) Run(bool inPlace)
        {
            Tensor gate = b.AllocateUninitialized(rows, hidden), up = b.AllocateUninitialized(rows, hidden);
            using var act = b.AllocateUninitialized(rows, hidden);
            if (inPlace) (gate, up) = b.GateUpSwiGluForBackward(x, w[0], w[1], gate, up, act);
            else
            {
                b.MatMulShared(x, [w[0], w[1]], [gate, up]);
                b.SwiGlu(gate, up, act);
                (gate, up) = (b.StoreForBackward(gate), b.StoreForBackward(up));
            }
            using var dgate = b.AllocateUninitialized(rows, hidden);
            using var dup = b.AllocateUninitialized(rows, hidden);
            b.SwiGluBackward(dh, gate, up, GateRule.Exact, dgate, dup);
            var result = (Get(b, act), Get(b, dgate), Get(b, dup), gate is CudaTensor { IsBf16: true });
            gate.Dispose();
            up.Dispose();
            return result;
        }
        var expected = Run(inPlace: false);
        var got = Run(inPlace: true);
        Assert.Equal(bf16, got.Bf16);
        Assert.Equal(expected.Bf16, got.Bf16);
        Assert.Equal(expected.Act, got.Act);
        Assert.Equal(expected.Dgate, got.Dgate);
        Assert.Equal(expected.Dup, got.Dup);
        Assert.Contains(expected.Act, v => v != 0f);
    }
}
