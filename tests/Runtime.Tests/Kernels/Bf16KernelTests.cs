using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// The kernels of GemmPrecision.Bf16's operands (issue 13 item 4-5): convert.cu's concatenating conversion, widening
/// and bf16 row gather, and the bf16-writing forms of split_columns, rope_apply, rmsnorm_forward, rmsnorm_backward,
/// swiglu_forward, swiglu_backward (the concatenated [dgate | dup] operand) and attention_flash_rowdot (dz). References: the rounding's definition (nearest bf16, ties to even; see
/// <see cref="ConvertKernelTests"/>), exact widening (bf16 is the top half of an fp32), plain index arithmetic for
/// the copies, <see cref="RmsNormOps"/> / <see cref="SwiGluOps"/> / <see cref="RopeOps"/> for the fp32 outputs and a
/// double-precision dot for attention's row term (1e-5 abs + rel), with the same
/// tolerances as their fp32 kernels' tests. The bf16 outputs must equal the rounding of the kernel's own fp32
/// output exactly: one value computed once, stored twice.
/// </summary>
public class Bf16KernelTests
{
    /// <summary>The bf16 nearest to x, ties to the even pattern (the definition, not convert.cu's bit trick).</summary>
    internal static ushort Round(float x)
    {
        if (float.IsNaN(x)) return 0x7FC0;
        int bits = BitConverter.SingleToInt32Bits(x);
        ushort down = (ushort)((uint)bits >> 16), up = (ushort)(down + 1);
        if (float.IsInfinity(x)) return down;
        double dDown = Math.Abs(x - (double)Widen(down)), dUp = Math.Abs(x - (double)Widen(up));
        return dDown < dUp ? down : dUp < dDown ? up : (down & 1) == 0 ? down : up;
    }

    static float Widen(ushort b) => BitConverter.Int32BitsToSingle(b << 16);

    internal static ushort[] Halves(DeviceArray a, long n) => MemoryMarshal.Cast<float, ushort>(a.Download()).Slice(0, (int)n).ToArray();

    /// <summary>bf16 patterns packed two to a float, uploaded as raw bits.</summary>
    internal static DeviceArray UploadHalves(IDeviceRuntime rt, ushort[] h)
    {
        var padded = new ushort[(h.Length + 1) / 2 * 2];
        h.CopyTo(padded, 0);
        return DeviceArray.Upload(rt, MemoryMarshal.Cast<ushort, float>(padded).ToArray());
    }

    public static IEnumerable<object[]> ConcatCases => KernelTargets.Cross([[1, 4, 3, 0, 64, 0u], [5, 33, 7, 9, 256, 0u], [17, 64, 16, 16, 128, 3u], [3, 1, 0, 0, 32, 0u]]);

    [Theory]
    [MemberData(nameof(ConcatCases))]
    public void Concatenating_conversion_rounds_each_row_of_the_parts_in_order(string target, int rows, int wa, int wb, int wc, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        float[] a = Rand.Floats(1, rows * wa, -3f, 3f), b = Rand.Floats(2, rows * wb, -300f, 300f), c = Rand.Floats(3, rows * wc, -1e-3f, 1e-3f);
        int width = wa + wb + wc;
        using var da = DeviceArray.Upload(rt, a);
        using var db = DeviceArray.Upload(rt, b.Length == 0 ? [0f] : b);
        using var dc = DeviceArray.Upload(rt, c.Length == 0 ? [0f] : c);
        using var dd = DeviceArray.Floats(rt, (rows * width + 1) / 2);
        long n = (long)rows * width;
        rt.Run("f32_to_bf16_concat", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0,
            da, wa, wb == 0 ? (nint)0 : db.Pointer, wb, wc == 0 ? (nint)0 : dc.Pointer, wc, dd, rows);
        var got = Halves(dd, n);
        for (int r = 0; r < rows; r++)
            for (int col = 0; col < width; col++)
            {
                float v = col < wa ? a[r * wa + col] : col < wa + wb ? b[r * wb + col - wa] : c[r * wc + col - wa - wb];
                Assert.True(Round(v) == got[r * width + col], $"[{r}, {col}] = {v:R}: expected 0x{Round(v):X4}, got 0x{got[r * width + col]:X4}");
            }
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Widening_is_exact_and_the_row_gather_reads_the_named_rows(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        const int vocab = 11, dim = 37;
        var rng = new Random(5);
        var table = Enumerable.Range(0, vocab * dim).Select(_ => (ushort)rng.Next(0, 0x7F80)).Select((h, i) => i % 3 == 0 ? (ushort)(h | 0x8000) : h).ToArray();
        using var dt = UploadHalves(rt, table);
        using var wide = DeviceArray.Floats(rt, table.Length);
        rt.Run("bf16_to_f32", new Dim3(3), new Dim3(64), 0, dt, wide, (long)table.Length);
        var w = wide.Download();
        for (int i = 0; i < table.Length; i++) Assert.Equal(BitConverter.SingleToInt32Bits(Widen(table[i])), BitConverter.SingleToInt32Bits(w[i]));

        int[] ids = [3, 0, 10, 3, -1, vocab];
        using var di = DeviceArray.Upload(rt, ids);
        using var rows = DeviceArray.Floats(rt, ids.Length * dim);
        rt.Run("gather_bf16_rows", new Dim3(2), new Dim3(128), 0, di, dt, rows, ids.Length, dim, vocab);
        var g = rows.Download();
        for (int r = 0; r < ids.Length; r++)
            for (int c = 0; c < dim; c++)
                if (ids[r] is >= 0 and < vocab) Assert.Equal(Widen(table[ids[r] * dim + c]), g[r * dim + c]);
                else Assert.True(float.IsNaN(g[r * dim + c]), $"row {r} (id {ids[r]}) is not NaN");
    }

    [Theory]
    [MemberData(nameof(ConcatCases))]
    public void Split_columns_copies_each_part_of_a_row_to_its_own_tensor_and_its_rounding_to_its_shadow(string target, int rows, int wa, int wb, int wc, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        int width = wa + wb + wc;
        var src = Rand.Floats(7, rows * width, -300f, 300f);
        using var ds = DeviceArray.Upload(rt, src);
        using var da = DeviceArray.Floats(rt, Math.Max(1, rows * wa));
        using var db = DeviceArray.Floats(rt, Math.Max(1, rows * wb));
        using var dc = DeviceArray.Floats(rt, Math.Max(1, rows * wc));
        using var da16 = DeviceArray.Floats(rt, Math.Max(1, (rows * wa + 1) / 2));
        using var dc16 = DeviceArray.Floats(rt, Math.Max(1, (rows * wc + 1) / 2));
        long n = (long)rows * width;
        // b has no shadow (a null pointer is skipped); a and c have one.
        rt.Run("split_columns_bf16", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0,
            ds, rows, da, da16, wa, wb == 0 ? (nint)0 : db.Pointer, (nint)0, wb, wc == 0 ? (nint)0 : dc.Pointer, wc == 0 ? (nint)0 : dc16.Pointer, wc);
        float[] a = da.Download(), b = db.Download(), c = dc.Download();
        ushort[] a16 = Halves(da16, rows * wa), c16 = Halves(dc16, rows * wc);
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < wa; j++) { Assert.Equal(src[r * width + j], a[r * wa + j]); Assert.Equal(Round(a[r * wa + j]), a16[r * wa + j]); }
            for (int j = 0; j < wb; j++) Assert.Equal(src[r * width + wa + j], b[r * wb + j]);
            for (int j = 0; j < wc; j++) { Assert.Equal(src[r * width + wa + wb + j], c[r * wc + j]); Assert.Equal(Round(c[r * wc + j]), c16[r * wc + j]); }
        }
    }

    [Theory]
    [MemberData(nameof(RopeKernelTests.Cases), MemberType = typeof(RopeKernelTests))]
    public void Rope_bf16_matches_cpu_and_stores_the_rotated_values_rounded(string target, int rows, int heads, int headDim, int seqLen, int block, bool interleaved, bool inverse)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var (x, expected, cos, sin) = RopeKernelTests.Case(rows, heads, headDim, seqLen, interleaved, inverse);
        using var dx = DeviceArray.Upload(rt, x);
        using var dc = DeviceArray.Upload(rt, cos);
        using var ds = DeviceArray.Upload(rt, sin);
        // x16 as x's columns of a wider row-wise concatenation (the inverse's [dq | dk | dv] operand): `before` columns
        // of another part to the left, `after` to the right, which must stay as they were (0xFFFF, a NaN pattern).
        int width = heads * headDim, before = inverse ? 3 : 0, after = inverse ? 5 : 0, stride = before + width + after;
        var sentinel = Enumerable.Repeat((ushort)0xFFFF, rows * stride).ToArray();
        using var d16 = UploadHalves(rt, sentinel);
        long pairs = (long)rows * heads * (headDim / 2);
        rt.Run("rope_apply_bf16", new Dim3(KernelLaunch.Blocks(pairs, block)), new Dim3((uint)block), 0, dx, dc, ds, d16.Pointer + 2 * before,
            stride, rows, heads, headDim, seqLen, interleaved ? 1 : 0, inverse ? 1 : 0);
        var got = dx.Download();
        Approx.Equal(expected, got, 1e-6f, 1e-6f, "rotated x");   // RopeKernelTests' tolerance
        var halves = Halves(d16, rows * stride);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < stride; j++)
            {
                ushort h = halves[r * stride + j];
                if (j < before || j >= before + width) { Assert.True(h == 0xFFFF, $"x16 row {r} column {j} outside x's columns was written"); continue; }
                float v = got[r * width + j - before];
                Assert.True(Round(v) == h, $"x16[{r}, {j - before}]: expected 0x{Round(v):X4} (x = {v:R}), got 0x{h:X4}");
            }
    }

    public static IEnumerable<object[]> ScatterCases => KernelTargets.Cross([[6, 5, 4, 64, 0u], [9, 33, 7, 256, 3u], [4, 1, 1, 32, 0u], [12, 70, 0, 128, 0u]]);

    [Theory]
    [MemberData(nameof(ScatterCases))]
    public void Scatter_add_rows_bf16_matches_the_cpu_op_bit_for_bit_and_stores_the_whole_destination_rounded(string target, int destinationRows,
        int width, int count, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        // Repeated rows: their sources add in index order, so the sums round as the CPU op's do.
        int[] rows = Enumerable.Range(0, count).Select(i => (i * 5 + 1) % destinationRows).Concat(count > 2 ? [1] : []).ToArray();
        float[] source = Rand.Floats(1, Math.Max(1, rows.Length) * width, -2f, 2f), destination = Rand.Floats(2, destinationRows * width, -1f, 1f);
        var expected = CpuBackend.Wrap((float[])destination.Clone(), destinationRows, width);
        CpuBackend.Instance.ScatterAddRows(CpuBackend.Wrap(source, Math.Max(1, rows.Length), width), rows, expected);
        using var dsrc = DeviceArray.Upload(rt, source);
        using var drows = DeviceArray.Upload(rt, rows.Length == 0 ? [0] : rows);
        using var ddst = DeviceArray.Upload(rt, destination);
        using var d16 = DeviceArray.Floats(rt, (destinationRows * width + 1) / 2);
        long n = (long)destinationRows * width;
        rt.Run("scatter_add_rows_bf16", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0,
            dsrc, drows, ddst, d16, rows.Length, width, destinationRows);
        var got = ddst.Download();
        Assert.Equal(expected.Data, got);
        var halves = Halves(d16, n);
        for (int i = 0; i < n; i++) Assert.True(Round(got[i]) == halves[i], $"destination16[{i}]: expected 0x{Round(got[i]):X4}, got 0x{halves[i]:X4}");
    }

    public static IEnumerable<object[]> GateGradCases =>
        from c in KernelTargets.Cross([[1, 1, 32, 0u], [3, 100, 256, 0u], [8, 96, 64, 2u], [17, 33, 256, 0u]])
        from rule in new[] { GateRule.Exact, GateRule.IdentityHalf, GateRule.Identity }
        select (object[])[.. c, rule];

    [Theory]
    [MemberData(nameof(GateGradCases))]
    public void Swiglu_backward_bf16_matches_cpu_and_stores_the_concatenated_gradients_rounded(string target, int rows, int width, int block, uint grid, GateRule rule)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        int n = rows * width;
        var (gh, g, u, eg, eu) = SwiGluKernelTests.BackwardCase(n, rule);
        using var ddh = DeviceArray.Upload(rt, gh);
        using var dg = DeviceArray.Upload(rt, g);
        using var du = DeviceArray.Upload(rt, u);
        using var dgate = DeviceArray.Floats(rt, n);
        using var dup = DeviceArray.Floats(rt, n);
        using var d16 = DeviceArray.Floats(rt, n);   // 2n bf16 values
        int code = rule switch { GateRule.Exact => 0, GateRule.IdentityHalf => 1, _ => 2 };
        rt.Run("swiglu_backward_bf16", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0,
            ddh, dg, du, dgate, dup, d16, rows, width, code);
        float[] gotG = dgate.Download(), gotU = dup.Download();
        Approx.Equal(eg, gotG, 1e-6f, 1e-5f, $"dgate ({rule})");   // SwiGluKernelTests' tolerance (fast exp)
        Approx.Equal(eu, gotU, 1e-6f, 1e-5f, $"dup ({rule})");
        var halves = Halves(d16, 2L * n);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < width; j++)
            {
                Assert.True(Round(gotG[r * width + j]) == halves[2 * r * width + j], $"[{r}, {j}] dgate16 ({rule})");
                Assert.True(Round(gotU[r * width + j]) == halves[2 * r * width + width + j], $"[{r}, {width + j}] dup16 ({rule})");
            }
    }

    // batch, seqLen, heads, headDim, block, grid
    public static IEnumerable<object[]> RowDotCases => KernelTargets.Cross([[1, 1, 1, 16, 32, 0u], [2, 5, 3, 32, 64, 0u], [3, 17, 4, 64, 256, 2u]]);

    [Theory]
    [MemberData(nameof(RowDotCases))]
    public void Attention_row_term_bf16_is_the_row_dot_and_stores_dz_rounded(string target, int batch, int seqLen, int heads, int headDim, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        int n = batch * seqLen * heads * headDim, stats = batch * heads * seqLen;
        float[] dz = Rand.Floats(n, n, -2f, 2f), o = Rand.Floats(n + 1, n, -2f, 2f);
        using var ddz = DeviceArray.Upload(rt, dz);
        using var dout = DeviceArray.Upload(rt, o);
        using var dd = DeviceArray.Floats(rt, stats);
        using var d16 = DeviceArray.Floats(rt, (n + 1) / 2);
        rt.Run("attention_flash_rowdot_bf16", new Dim3(grid == 0 ? KernelLaunch.Blocks(stats, block) : grid), new Dim3((uint)block), 0,
            ddz, dout, dd, d16, batch, seqLen, heads, headDim);
        var d = dd.Download();
        // D[(b·heads + h)·T + t] = Σ_i dz[b, t, h, i]·o[b, t, h, i] (rows [b·T + t], head h's columns), summed in double here.
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int t = 0; t < seqLen; t++)
                {
                    long off = ((long)b * seqLen + t) * heads * headDim + (long)h * headDim;
                    double sum = 0;
                    for (int i = 0; i < headDim; i++) sum += (double)dz[off + i] * o[off + i];
                    float got = d[(b * heads + h) * seqLen + t];
                    Assert.True(Math.Abs(got - sum) <= 1e-5 + 1e-5 * Math.Abs(sum), $"D[b {b}, h {h}, t {t}] = {got:R}, expected {sum:R}");
                }
        var halves = Halves(d16, n);
        for (int i = 0; i < n; i++) Assert.True(Round(dz[i]) == halves[i], $"dz16[{i}]");
    }

    public static IEnumerable<object[]> NormCases => KernelTargets.Cross([[1, 1, 32], [3, 31, 32], [5, 288, 64], [4, 4096, 1024], [9, 100, 256]]);

    [Theory]
    [MemberData(nameof(NormCases))]
    public void Rmsnorm_forward_bf16_matches_cpu_and_stores_its_output_rounded(string target, int rows, int dim, int block)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var (x, w, y, rstd) = RmsNormKernelTests.ForwardCase(rows, dim);
        const float eps = RmsNormKernelTests.Eps;
        using var dx = DeviceArray.Upload(rt, x);
        using var dw = DeviceArray.Upload(rt, w);
        using var dy = DeviceArray.Floats(rt, x.Length);
        using var ds = DeviceArray.Floats(rt, rows);
        using var d16 = DeviceArray.Floats(rt, (x.Length + 1) / 2);
        rt.Run("rmsnorm_forward_bf16", new Dim3((uint)rows), new Dim3((uint)block), 0, dx, dw, eps, dy, ds, d16, rows, dim);
        Approx.Equal(rstd, ds.Download(), 0, 1e-5f, "rstd");
        var got = dy.Download();
        Approx.Equal(y, got, 1e-5f, 1e-5f, "y");
        var halves = Halves(d16, x.Length);
        for (int i = 0; i < x.Length; i++) Assert.True(Round(got[i]) == halves[i], $"y16[{i}]: expected 0x{Round(got[i]):X4} (y = {got[i]:R}), got 0x{halves[i]:X4}");
    }

    [Theory]
    [MemberData(nameof(NormCases))]
    public void Rmsnorm_backward_bf16_matches_cpu_and_stores_the_updated_gradient_rounded(string target, int rows, int dim, int block)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        foreach (var rule in new[] { NormRule.FrozenScale, NormRule.Exact })
        {
            float[] x = Rand.Floats(rows + dim, rows * dim, -2f, 2f), w = Rand.Floats(dim + 1, dim, 0.5f, 1.5f);
            float[] gy = Rand.Floats(rows + 3, rows * dim), dx0 = Rand.Floats(rows + 4, rows * dim);
            float[] y = new float[x.Length], rstd = new float[rows];
            RmsNormOps.Forward(x, w, 1e-5f, y, rstd, rows, dim);
            float[] expected = (float[])dx0.Clone();
            RmsNormOps.Backward(gy, x, w, rstd, rule, expected, rows, dim);
            using var ddy = DeviceArray.Upload(rt, gy);
            using var dx = DeviceArray.Upload(rt, x);
            using var dw = DeviceArray.Upload(rt, w);
            using var ds = DeviceArray.Upload(rt, rstd);
            using var ddx = DeviceArray.Upload(rt, dx0);
            using var d16 = DeviceArray.Floats(rt, (x.Length + 1) / 2);
            rt.Run("rmsnorm_backward_bf16", new Dim3((uint)rows), new Dim3((uint)block), 0, ddy, dx, dw, ds, ddx, d16, rows, dim, rule == NormRule.Exact ? 1 : 0);
            var got = ddx.Download();
            Approx.Equal(expected, got, 1e-5f, 1e-4f, $"dx ({rule})");
            var halves = Halves(d16, x.Length);
            for (int i = 0; i < x.Length; i++) Assert.True(Round(got[i]) == halves[i], $"dx16[{i}] ({rule}): expected 0x{Round(got[i]):X4}, got 0x{halves[i]:X4}");
        }
    }
}
