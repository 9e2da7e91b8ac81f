using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// <see cref="CudaBackend"/> against <see cref="CpuBackend"/>, op by op, on the same inputs. Target "host" runs the
/// backend over the host build of the kernels (so its launch configurations, argument order, shape checks and the
/// cuBLAS mapping are tested on every machine); target "gpu" runs it on the GPU when there is one.
/// Tolerances are the kernel tests' (see there), plus 1e-5 abs + 1e-5 rel for the matrix products.
/// </summary>
public class CudaBackendTests
{
    static CudaBackend? Open(string target) => KernelTargets.Open(target) is { } rt ? new CudaBackend(rt) : null;

    static float[] Get(IBackend b, Tensor t)
    {
        var r = new float[t.Length];
        b.Download(t, r);
        return r;
    }

    /// <summary>The same data on both backends.</summary>
    static (Tensor Cpu, Tensor Gpu) Both(CudaBackend gpu, float[] data, params int[] shape) =>
        (CpuBackend.Instance.Upload(data, shape), gpu.Upload(data, shape));

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Memory_ops_match(string target)
    {
        using var b = Open(target);
        if (b is null) return;
        using var zero = b.Allocate(3, 5);
        Assert.All(Get(b, zero), v => Assert.Equal(0f, v));
        float[] data = Rand.Floats(1, 15);
        using var t = b.Upload(data, 3, 5);
        Assert.Equal(data, Get(b, t));
        b.Copy(t, zero);
        Assert.Equal(data, Get(b, zero));
        b.Fill(t, 2.5f);
        Assert.All(Get(b, t), v => Assert.Equal(2.5f, v));
        Assert.Throws<ArgumentException>(() => b.Upload(data, 4, 4));
        Assert.Throws<ArgumentException>(() => b.Download(t, new float[3]));
        Assert.Throws<ArgumentException>(() => b.Fill(new CpuTensor(2), 0f));
        using var empty = b.Allocate(0, 4);
        Assert.Empty(Get(b, empty));
    }

    [Theory]
    [MemberData(nameof(MatMulCases))]
    public void MatMul_and_its_input_gradient_match(string target, int rows, int n, int k, bool accumulate)
    {
        using var b = Open(target);
        if (b is null) return;
        var cpu = CpuBackend.Instance;
        var (x, gx) = Both(b, Rand.Floats(1, rows * k), rows, k);
        var (w, gw) = Both(b, Rand.Floats(2, n * k), n, k);
        var (y, gy) = Both(b, Rand.Floats(3, rows * n), rows, n);
        cpu.MatMul(x, w, y, accumulate);
        b.MatMul(gx, gw, gy, accumulate);
        Approx.Equal(y.Span, Get(b, gy), 1e-5f, 1e-5f, "MatMul");
        cpu.MatMulInputGrad(y, w, x, accumulate);
        b.MatMulInputGrad(gy, gw, gx, accumulate);
        Approx.Equal(x.Span, Get(b, gx), 1e-5f, 1e-5f, "MatMulInputGrad");
        if (n != k) Assert.Throws<ArgumentException>(() => b.MatMul(gy, gw, gx, accumulate));  // x and y swapped
    }

    public static IEnumerable<object[]> MatMulCases => KernelTargets.Cross(
        from s in new[] { (1, 1, 1), (5, 7, 9), (12, 3, 64), (3, 40, 1) } from acc in new[] { false, true } select new object[] { s.Item1, s.Item2, s.Item3, acc });

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Embedding_matches_and_refuses_bad_ids(string target)
    {
        using var b = Open(target);
        if (b is null) return;
        const int vocab = 11, dim = 19;
        var (table, gtable) = Both(b, Rand.Floats(4, vocab * dim), vocab, dim);
        int[] tokens = [3, 0, 10, 3, 7];
        var expected = new CpuTensor(tokens.Length, dim);
        CpuBackend.Instance.Embedding(tokens, table, expected);
        using var o = b.Allocate(tokens.Length, dim);
        b.Embedding(tokens, gtable, o);
        Approx.Equal(expected.Data, Get(b, o), 0, 0, "embedding");
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Embedding([1, vocab], gtable, o));
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Embedding([-1], gtable, o));
    }

    [Theory]
    [MemberData(nameof(RmsNormCases))]
    public void RmsNorm_and_backward_match(string target, int rows, int dim, NormRule rule)
    {
        using var b = Open(target);
        if (b is null) return;
        var cpu = CpuBackend.Instance;
        var (x, gx) = Both(b, Rand.Floats(rows, rows * dim, -2f, 2f), rows, dim);
        var (w, gw) = Both(b, Rand.Floats(dim, dim, 0.5f, 1.5f), dim);
        var (y, gy) = Both(b, new float[rows * dim], rows, dim);
        var (s, gs) = Both(b, new float[rows], rows);
        cpu.RmsNorm(x, w, 1e-5f, y, s);
        b.RmsNorm(gx, gw, 1e-5f, gy, gs);
        Approx.Equal(s.Span, Get(b, gs), 0, 1e-5f, "rstd");
        Approx.Equal(y.Span, Get(b, gy), 1e-5f, 1e-5f, "y");
        var (dy, gdy) = Both(b, Rand.Floats(rows + 1, rows * dim), rows, dim);
        var (dx, gdx) = Both(b, Rand.Floats(rows + 2, rows * dim), rows, dim);
        cpu.RmsNormBackward(dy, x, w, s, rule, dx);
        b.RmsNormBackward(gdy, gx, gw, gs, rule, gdx);
        Approx.Equal(dx.Span, Get(b, gdx), 1e-5f, 1e-4f, $"dx ({rule})");
    }

    public static IEnumerable<object[]> RmsNormCases => KernelTargets.Cross(
        from s in new[] { (1, 1), (3, 64), (6, 288), (2, 1000) } from r in new[] { NormRule.Exact, NormRule.FrozenScale } select new object[] { s.Item1, s.Item2, r });

    [Theory]
    [MemberData(nameof(RopeCases))]
    public void Rope_matches(string target, bool interleaved, bool inverse)
    {
        using var b = Open(target);
        if (b is null) return;
        const int batch = 2, seqLen = 5, heads = 3, headDim = 8, half = headDim / 2;
        float[] cos = new float[seqLen * half], sin = new float[seqLen * half];
        for (int p = 0; p < seqLen; p++)
            for (int i = 0; i < half; i++)
            {
                cos[p * half + i] = MathF.Cos(p * MathF.Pow(10000f, -2f * i / headDim));
                sin[p * half + i] = MathF.Sin(p * MathF.Pow(10000f, -2f * i / headDim));
            }
        var (x, gx) = Both(b, Rand.Floats(7, batch * seqLen * heads * headDim), batch * seqLen, heads * headDim);
        var (c, gc) = Both(b, cos, seqLen, half);
        var (s, gs) = Both(b, sin, seqLen, half);
        CpuBackend.Instance.Rope(x, heads, seqLen, c, s, interleaved, inverse);
        b.Rope(gx, heads, seqLen, gc, gs, interleaved, inverse);
        Approx.Equal(x.Span, Get(b, gx), 1e-6f, 1e-6f, "rope");
    }

    public static IEnumerable<object[]> RopeCases => KernelTargets.Cross(
        from i in new[] { true, false } from inv in new[] { false, true } select new object[] { i, inv });

    [Theory]
    [MemberData(nameof(AttentionCases))]
    public void Attention_and_backward_match(string target, int batch, int seqLen, int heads, int kvHeads, int headDim, AttentionRule rule)
    {
        using var b = Open(target);
        if (b is null) return;
        var cpu = CpuBackend.Instance;
        var shape = new AttentionShape(batch, seqLen, heads, kvHeads, headDim);
        int rows = shape.Rows;
        var (q, gq) = Both(b, Rand.Floats(1, rows * shape.QWidth, -1.5f, 1.5f), rows, shape.QWidth);
        var (k, gk) = Both(b, Rand.Floats(2, rows * shape.KvWidth, -1.5f, 1.5f), rows, shape.KvWidth);
        var (v, gv) = Both(b, Rand.Floats(3, rows * shape.KvWidth), rows, shape.KvWidth);
        var (z, gz) = Both(b, new float[rows * shape.QWidth], rows, shape.QWidth);
        int[] pShape = [batch, heads, seqLen, seqLen];
        var (p, gp) = Both(b, new float[batch * heads * seqLen * seqLen], pShape);
        cpu.Attention(q, k, v, shape, z, p);
        b.Attention(gq, gk, gv, shape, gz, gp);
        Approx.Equal(p.Span, Get(b, gp), 1e-6f, 1e-5f, "probs");
        Approx.Equal(z.Span, Get(b, gz), 1e-5f, 1e-4f, "z");

        var (dz, gdz) = Both(b, Rand.Floats(4, rows * shape.QWidth), rows, shape.QWidth);
        float[] garbage = Rand.Floats(5, rows * shape.QWidth, 100f, 200f);  // the op overwrites
        var (dq, gdq) = Both(b, garbage, rows, shape.QWidth);
        var (dk, gdk) = Both(b, garbage[..(rows * shape.KvWidth)], rows, shape.KvWidth);
        var (dv, gdv) = Both(b, garbage[..(rows * shape.KvWidth)], rows, shape.KvWidth);
        var pCpu = p;  // both backwards use the CPU pattern, so the same function is differentiated
        using var pGpu = b.Upload(p.Span, pShape);
        cpu.AttentionBackward(dz, q, k, v, pCpu, shape, rule, dq, dk, dv);
        b.AttentionBackward(gdz, gq, gk, gv, pGpu, shape, rule, gdq, gdk, gdv);
        Approx.Equal(dv.Span, Get(b, gdv), 1e-5f, 1e-4f, $"dv ({rule})");
        Approx.Equal(dk.Span, Get(b, gdk), 1e-5f, 1e-4f, $"dk ({rule})");
        Approx.Equal(dq.Span, Get(b, gdq), 1e-5f, 1e-4f, $"dq ({rule})");
    }

    public static IEnumerable<object[]> AttentionCases => KernelTargets.Cross(
        from s in new[] { (1, 1, 2, 2, 8), (2, 7, 4, 4, 16), (2, 19, 4, 2, 8), (1, 35, 8, 2, 32), (3, 9, 4, 1, 12) }
        from r in new[] { AttentionRule.Gradient, AttentionRule.FreezePattern }
        select new object[] { s.Item1, s.Item2, s.Item3, s.Item4, s.Item5, r });

    [Theory]
    [MemberData(nameof(SwiGluCases))]
    public void SwiGlu_and_backward_match(string target, GateRule rule)
    {
        using var b = Open(target);
        if (b is null) return;
        var cpu = CpuBackend.Instance;
        const int rows = 3, width = 333;
        var (g, gg) = Both(b, Rand.Floats(1, rows * width, -8f, 8f), rows, width);
        var (u, gu) = Both(b, Rand.Floats(2, rows * width, -2f, 2f), rows, width);
        var (h, gh) = Both(b, new float[rows * width], rows, width);
        cpu.SwiGlu(g, u, h);
        b.SwiGlu(gg, gu, gh);
        Approx.Equal(h.Span, Get(b, gh), 1e-6f, 1e-5f, "h");
        var (dh, gdh) = Both(b, Rand.Floats(3, rows * width), rows, width);
        var (dg, gdg) = Both(b, new float[rows * width], rows, width);
        var (du, gdu) = Both(b, new float[rows * width], rows, width);
        cpu.SwiGluBackward(dh, g, u, rule, dg, du);
        b.SwiGluBackward(gdh, gg, gu, rule, gdg, gdu);
        Approx.Equal(dg.Span, Get(b, gdg), 1e-6f, 1e-5f, $"dgate ({rule})");
        Approx.Equal(du.Span, Get(b, gdu), 1e-6f, 1e-5f, $"dup ({rule})");
    }

    public static IEnumerable<object[]> SwiGluCases => KernelTargets.Cross(
        from r in new[] { GateRule.Exact, GateRule.IdentityHalf, GateRule.Identity } select new object[] { r });

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Elementwise_and_row_ops_match(string target)
    {
        using var b = Open(target);
        if (b is null) return;
        var cpu = CpuBackend.Instance;
        const int rows = 6, width = 41;
        var (x, gx) = Both(b, Rand.Floats(1, rows * width, -3f, 3f), rows, width);
        var (s, gs) = Both(b, Rand.Floats(2, rows * width, -3f, 3f), rows, width);
        var (o, go) = Both(b, Rand.Floats(3, rows * width, -3f, 3f), rows, width);
        cpu.Add(x, s); b.Add(gx, gs);
        Approx.Equal(x.Span, Get(b, gx), 0, 0, "add");
        cpu.Intervene(x, s, o); b.Intervene(gx, gs, go);
        Approx.Equal(x.Span, Get(b, gx), 0, 0, "intervene");
        cpu.Multiply(x, s); b.Multiply(gx, gs);
        Approx.Equal(x.Span, Get(b, gx), 0, 0, "multiply");
        // add into a third tensor, into its first operand and into its second: the CPU's default (copy, then add)
        ((IBackend)cpu).AddInto(x, s, o); b.AddInto(gx, gs, go);
        Approx.Equal(o.Span, Get(b, go), 0, 0, "add into");
        ((IBackend)cpu).AddInto(o, x, o); b.AddInto(go, gx, go);
        Approx.Equal(o.Span, Get(b, go), 0, 0, "add into a");
        ((IBackend)cpu).AddInto(s, o, o); b.AddInto(gs, go, go);
        Approx.Equal(o.Span, Get(b, go), 0, 0, "add into b");
        Approx.Equal(s.Span, Get(b, gs), 0, 0, "add into leaves its operands");

        int[] idx = [5, 0, 5, 2];
        var (d, gd) = Both(b, new float[idx.Length * width], idx.Length, width);
        cpu.GatherRows(x, idx, d); b.GatherRows(gx, idx, gd);
        Approx.Equal(d.Span, Get(b, gd), 0, 0, "gather");
        cpu.ScatterAddRows(d, idx, o); b.ScatterAddRows(gd, idx, go);
        Approx.Equal(o.Span, Get(b, go), 0, 0, "scatter-add");
        Assert.Throws<ArgumentOutOfRangeException>(() => b.GatherRows(gx, [rows], gd));
        Assert.Throws<ArgumentOutOfRangeException>(() => b.ScatterAddRows(gd, [0, 1, 2, -1], go));
        Assert.Throws<ArgumentException>(() => b.Add(gx, gd));
    }

    /// <summary>MeanAblate through the backend (argument packing, the staged row maps and bits), twice in a row so the
    /// second call reuses the staging buffers; exact, as the op only copies.</summary>
    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void MeanAblate_matches(string target)
    {
        using var b = Open(target);
        if (b is null) return;
        var cpu = CpuBackend.Instance;
        const int rows = 11, width = 45, maskRows = 5, meanRows = 3;
        var (x, gx) = Both(b, Rand.Floats(1, rows * width, -3f, 3f), rows, width);
        var (m, gm) = Both(b, Rand.Floats(2, meanRows * width, 5f, 6f), meanRows, width);
        foreach (int seed in new[] { 3, 4 })
        {
            var bits = MeanAblateTests.Bits(MeanAblateTests.Masks(seed, maskRows, width), width);
            var (keepRow, meanRow) = MeanAblateTests.RowMaps(seed, rows, maskRows, meanRows);
            cpu.MeanAblate(x, m, bits, keepRow, meanRow);
            b.MeanAblate(gx, gm, bits, keepRow, meanRow);
            Approx.Equal(x.Span, Get(b, gx), 0, 0, $"mean ablate (masks {seed})");
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => b.MeanAblate(gx, gm, new uint[2 * maskRows], new int[rows], Enumerable.Repeat(meanRows, rows).ToArray()));
    }

    /// <summary>
    /// TF32 reaches the device: over the emulator (whose SGEMM rounds factors to TF32 when the call asks for it) a TF32
    /// backend's product equals the product of TF32-rounded inputs, and differs from the exact fp32 one.
    /// </summary>
    [Fact]
    public void Tf32_precision_reaches_the_gemm()
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Tf32);
        const int rows = 6, n = 9, k = 70;
        float[] xs = Rand.Floats(1, rows * k), ws = Rand.Floats(2, n * k);
        using var gx = b.Upload(xs, rows, k);
        using var gw = b.Upload(ws, n, k);
        using var gy = b.Allocate(rows, n);
        b.MatMul(gx, gw, gy, false);
        var exact = new CpuTensor(rows, n);
        CpuBackend.Instance.MatMul(CpuBackend.Wrap(xs, rows, k), CpuBackend.Wrap(ws, n, k), exact, false);
        var rounded = new CpuTensor(rows, n);
        CpuBackend.Instance.MatMul(CpuBackend.Wrap(xs.Select(HostKernelRuntime.RoundToTf32).ToArray(), rows, k),
            CpuBackend.Wrap(ws.Select(HostKernelRuntime.RoundToTf32).ToArray(), n, k), rounded, false);
        var got = Get(b, gy);
        Approx.Equal(rounded.Data, got, 1e-5f, 1e-5f, "TF32 product");
        Assert.True(Approx.Ratio(exact.Data, got, 1e-6f, 0) > 1, "a TF32 product should differ from the exact one");
        Approx.Equal(exact.Data, got, 5e-3f, 5e-3f, "TF32 product vs fp32");
        Assert.Equal(GemmPrecision.Tf32, GemmPrecisions.Parse("TF32"));
        Assert.Equal(GemmPrecision.Fp32, GemmPrecisions.Parse(null));
        Assert.Equal("NEURONTRACE_CUDA_MATH=\"fp16\": expected fp32, tf32 or bf16", Assert.Throws<ArgumentException>(() => GemmPrecisions.Parse("fp16")).Message);
        var hostile = Assert.Throws<ArgumentException>(() => GemmPrecisions.Parse(new string('x', 500) + "\n\u001b[2J")).Message;
        Assert.True(hostile.Length < 160 && !hostile.Contains('\n') && !hostile.Contains('\u001b'), hostile);   // untrusted text quoted and shortened, as every variable's
    }

    /// <summary>x rounded to the nearest bfloat16 (ties to even), from the definition: the nearer of x truncated
    /// to 16 bits and the next bfloat16 away from zero.</summary>
    static float NearestBf16(float x)
    {
        int bits = BitConverter.SingleToInt32Bits(x);
        float down = BitConverter.Int32BitsToSingle(bits & unchecked((int)0xFFFF0000)), up = BitConverter.Int32BitsToSingle((bits & unchecked((int)0xFFFF0000)) + 0x10000);
        double dd = Math.Abs(x - (double)down), du = Math.Abs(x - (double)up);
        return dd < du ? down : du < dd ? up : ((bits >> 16) & 1) == 0 ? down : up;
    }

    /// <summary>
    /// Bf16 products: both factors rounded to bf16, fp32 sums — for MatMul and MatMulInputGrad, with a constant
    /// (model) weight whose bf16 copy is cached and a written weight that must be converted again for every product.
    /// </summary>
    [Fact]
    public void Bf16_precision_rounds_both_factors_and_never_reuses_a_stale_copy()
    {
        using var b = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        const int rows = 5, n = 11, k = 67;
        float[] xs = Rand.Floats(1, rows * k), ws = Rand.Floats(2, n * k), dys = Rand.Floats(3, rows * n);
        float[] Bf(float[] a) => a.Select(NearestBf16).ToArray();
        float[] Product(float[] x, float[] w)
        {
            var y = new CpuTensor(rows, n);
            CpuBackend.Instance.MatMul(CpuBackend.Wrap(x, rows, k), CpuBackend.Wrap(w, n, k), y, false);
            return y.Data;
        }
        using var gx = b.Upload(xs, rows, k);
        using var gw = b.Upload(ws, n, k);
        ((CudaTensor)gw).IsConstant = true;
        using var gy = b.Allocate(rows, n);
        b.MatMul(gx, gw, gy, false);
        Approx.Equal(Product(Bf(xs), Bf(ws)), Get(b, gy), 1e-5f, 1e-5f, "bf16 MatMul");
        Assert.True(Approx.Ratio(Product(xs, ws), Get(b, gy), 1e-6f, 0) > 1, "a bf16 product should differ from the exact one");

        using var gdy = b.Upload(dys, rows, n);
        using var gdx = b.Allocate(rows, k);
        b.MatMulInputGrad(gdy, gw, gdx, false);
        var dx = new CpuTensor(rows, k);
        CpuBackend.Instance.MatMulInputGrad(CpuBackend.Wrap(Bf(dys), rows, n), CpuBackend.Wrap(Bf(ws), n, k), dx, false);
        Approx.Equal(dx.Data, Get(b, gdx), 1e-5f, 1e-5f, "bf16 MatMulInputGrad with the cached weight copy");

        // A weight that is written between products (not constant) is converted again each time.
        float[] ws2 = Rand.Floats(4, n * k);
        using var gv = b.Upload(ws, n, k);
        b.MatMul(gx, gv, gy, false);
        using (var fresh = b.Upload(ws2, n, k)) b.Copy(fresh, gv);
        b.MatMul(gx, gv, gy, false);
        Approx.Equal(Product(Bf(xs), Bf(ws2)), Get(b, gy), 1e-5f, 1e-5f, "bf16 MatMul after the weight changed");
        Assert.Equal(GemmPrecision.Bf16, GemmPrecisions.Parse("bf16"));
    }

    [Fact]
    public void The_op_profile_counts_each_op_by_its_range_name_and_only_while_set()
    {
        using var b = new CudaBackend(new HostKernelRuntime());
        using var x = b.Upload(Rand.Floats(1, 12), 3, 4);
        using var w = b.Upload(Rand.Floats(2, 20), 5, 4);
        using var y = b.Allocate(3, 5);
        b.MatMul(x, w, y, false);                 // before: not counted
        b.OpProfile = [];
        b.MatMul(x, w, y, false);
        b.MatMul(x, w, y, true);
        b.Fill(y, 1f);
        var profile = b.OpProfile;
        b.OpProfile = null;
        b.Fill(y, 2f);                            // after: not counted
        Assert.Equal(2, profile["matmul"].Calls);
        Assert.Equal(1, profile["fill"].Calls);
        Assert.True(profile["matmul"].Milliseconds >= 0);
        Assert.Equal(2, profile.Count);
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Empty_batches_launch_nothing(string target)
    {
        using var b = Open(target);
        if (b is null) return;
        using var x = b.Allocate(0, 8);
        using var w = b.Allocate(8);
        using var y = b.Allocate(0, 8);
        using var s = b.Allocate(0);
        b.RmsNorm(x, w, 1e-5f, y, s);
        b.RmsNormBackward(y, x, w, s, NormRule.Exact, y);
        b.SwiGlu(x, x, y);
        b.Add(y, x);
        b.GatherRows(x, [], y);
        using var wm = b.Allocate(4, 8);
        using var ym = b.Allocate(0, 4);
        b.MatMul(x, wm, ym, false);
        var shape = new AttentionShape(0, 3, 2, 1, 4);
        using var q = b.Allocate(0, 8);
        using var kv = b.Allocate(0, 4);
        using var p = b.Allocate(0, 2, 3, 3);
        b.Attention(q, kv, kv, shape, q, p);
    }

    /// <summary>
    /// One pre-norm Llama block forward (RMSNorm, q/k/v, RoPE, GQA attention, o, residual, RMSNorm, gate/up, SwiGLU,
    /// down, residual), then its backward under a rule set, on each backend; the outputs and the input gradient agree.
    /// Tolerance 1e-4 abs + 1e-3 rel after a dozen ops.
    /// </summary>
    [Theory]
    [MemberData(nameof(BlockCases))]
    public void A_whole_llama_block_forward_and_backward_match(string target, string rules)
    {
        using var b = Open(target);
        if (b is null) return;
        var r = rules switch { "exact" => BackwardRules.Exact, "relp" => BackwardRules.RelP, _ => BackwardRules.RelPFrozenAttention };
        var cpuOut = LlamaBlock.Run(CpuBackend.Instance, r);
        var gpuOut = LlamaBlock.Run(b, r);
        Approx.Equal(cpuOut.Output, gpuOut.Output, 1e-4f, 1e-3f, "block output");
        Approx.Equal(cpuOut.InputGrad, gpuOut.InputGrad, 1e-4f, 1e-3f, $"input gradient ({rules})");
        if (b.Device is HostKernelRuntime host)
        {
            Assert.Equal(0, host.OpenRanges);
            Assert.Contains("attention_backward", host.Ranges);
            Assert.Contains("matmul_input_grad", host.Ranges);
        }
    }

    public static IEnumerable<object[]> BlockCases => KernelTargets.Cross([["exact"], ["relp"], ["relp-frozen-attention"]]);
}
