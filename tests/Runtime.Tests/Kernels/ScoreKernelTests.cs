using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// score.cu against <see cref="CpuBackend"/>'s ops (ScoreOps): node-score accumulation for the three baseline kinds
/// into a column block of a wider slab below its first rows, the scaled row gather of the means, and the sparse input
/// gradient of the output layer. Each operation is rounded on its own in the same order on both sides, so exact
/// (tolerance 0). Widths and row counts are not multiples of the block, positions repeat (several rows add into one
/// score row) and some positions have no rows; grids smaller than the data exercise the grid-stride loops.
/// </summary>
public class ScoreKernelTests
{
    // rows, width, positions, block, grid (0 = enough blocks)
    public static IEnumerable<object[]> AccumulateCases => KernelTargets.Cross([[1, 1, 1, 32, 0u], [13, 37, 5, 256, 0u], [24, 300, 7, 64, 3u], [40, 129, 9, 33, 0u]]);

    [Theory]
    [MemberData(nameof(AccumulateCases))]
    public void Accumulate_scores_matches_cpu_for_every_baseline(string target, int rows, int width, int positions, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var cpu = CpuBackend.Instance;
        const int firstColumn = 3, extraColumns = 5, layers = 3, layer = 1;
        int sumsColumns = firstColumn + width + extraColumns, stride = positions + 1, firstRow = layer * stride;
        // Row r at position (r·7) mod positions: repeats, and (with positions > rows) positions with no rows.
        var positionOf = Enumerable.Range(0, rows).Select(r => r * 7 % positions).ToArray();
        float[] clean = Rand.Floats(rows, rows * width, -2f, 2f), patch = Rand.Floats(rows + 1, rows * width, -2f, 2f);
        float[] gradient = Rand.Floats(rows + 2, rows * width, -2f, 2f), means = Rand.Floats(rows + 3, layers * stride * width, -2f, 2f);
        float[] sums0 = Rand.Floats(rows + 4, layers * stride * sumsColumns, -1f, 1f);
        int groups = positionOf.Max() + 1;
        var csr = Csr(positionOf, groups);

        foreach (var (kind, values) in new[] { (ScoreBaselineKind.Zero, (float[]?)null), (ScoreBaselineKind.PerRow, patch), (ScoreBaselineKind.PerPosition, means) })
        {
            const float scale = 0.3f;
            var expected = CpuBackend.Wrap((float[])sums0.Clone(), layers * stride, sumsColumns);
            var baseline = values is null ? ScoreBaseline.Zero
                : new ScoreBaseline(kind, CpuBackend.Wrap(values, values.Length / width, width));
            cpu.AccumulateScores(CpuBackend.Wrap(clean, rows, width), baseline, CpuBackend.Wrap(gradient, rows, width), scale, positionOf,
                expected, firstRow, firstColumn);
            using var dc = DeviceArray.Upload(rt, clean);
            using var dg = DeviceArray.Upload(rt, gradient);
            using var db = values is null ? null : DeviceArray.Upload(rt, values);
            using var dgroups = DeviceArray.Upload(rt, csr);
            using var ds = DeviceArray.Upload(rt, sums0);
            long n = (long)groups * width;
            rt.Run("accumulate_scores", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0,
                dc, db?.Pointer ?? 0, dg, scale, dgroups, groups, width, (int)kind, ds, sumsColumns, firstRow, firstColumn);
            var got = ds.Download();
            Approx.Equal(expected.Data, got, 0, 0, $"accumulate_scores {kind}");
            Assert.NotEqual(sums0, got);   // something was added
        }
    }

    /// <summary>starts[groups + 1] then the rows of each group in ascending order (the launcher's layout, built here independently).</summary>
    static int[] Csr(int[] positionOf, int groups)
    {
        var list = new List<int>();
        var starts = new int[groups + 1];
        for (int p = 0; p < groups; p++)
        {
            starts[p] = list.Count;
            for (int r = 0; r < positionOf.Length; r++) if (positionOf[r] == p) list.Add(r);
        }
        starts[groups] = list.Count;
        return [.. starts, .. list];
    }

    // source rows, width, count, block
    public static IEnumerable<object[]> GatherCases => KernelTargets.Cross([[1, 1, 1, 32], [20, 37, 14, 256], [9, 300, 30, 64]]);

    [Theory]
    [MemberData(nameof(GatherCases))]
    public void Gather_scaled_rows_matches_cpu(string target, int sourceRows, int width, int count, int block)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        int[] rows = Rand.Ints(count + 1, count, sourceRows);
        float[] scales = Rand.Floats(count + 2, count, 0.01f, 1f), source = Rand.Floats(count + 3, sourceRows * width, -3f, 3f);
        var expected = new CpuTensor(count, width);
        CpuBackend.Instance.GatherScaledRows(CpuBackend.Wrap(source, sourceRows, width), rows, scales, expected);
        using var ds = DeviceArray.Upload(rt, source);
        using var di = DeviceArray.Upload(rt, [.. rows, .. scales.Select(BitConverter.SingleToInt32Bits)]);
        using var dd = DeviceArray.Floats(rt, (long)count * width);
        rt.Run("gather_scaled_rows", new Dim3(KernelLaunch.Blocks((long)count * width, block)), new Dim3((uint)block), 0, ds, di, dd, count, width, sourceRows);
        Approx.Equal(expected.Data, dd.Download(), 0, 0, "gather_scaled_rows");
    }

    // rows, per row, table rows, width, block
    public static IEnumerable<object[]> SparseCases => KernelTargets.Cross([[1, 1, 3, 1, 32], [5, 2, 50, 37, 256], [8, 3, 11, 300, 64]]);

    [Theory]
    [MemberData(nameof(SparseCases))]
    public void Sparse_input_gradient_matches_cpu_and_the_dense_product(string target, int rows, int perRow, int tableRows, int width, int block)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var cpu = CpuBackend.Instance;
        var columns = Rand.Ints(rows * 3 + perRow, rows * perRow, tableRows);
        columns[^1] = -1;   // an empty slot
        float[] values = Rand.Floats(rows, rows * perRow, -2f, 2f), w = Rand.Floats(rows + 1, tableRows * width, -1f, 1f);
        var expected = new CpuTensor(rows, width);
        cpu.SparseMatMulInputGrad(columns, values, perRow, CpuBackend.Wrap(w, tableRows, width), expected);
        using var de = DeviceArray.Upload(rt, [.. columns, .. values.Select(BitConverter.SingleToInt32Bits)]);
        using var dw = DeviceArray.Upload(rt, w);
        using var dx = DeviceArray.Floats(rt, (long)rows * width);
        rt.Run("sparse_matmul_input_grad", new Dim3(KernelLaunch.Blocks((long)rows * width, block)), new Dim3((uint)block), 0,
            de, rows, perRow, dw, tableRows, width, dx);
        Approx.Equal(expected.Data, dx.Download(), 0, 0, "sparse_matmul_input_grad");

        // The same dy written out densely, through the dense product: equal up to the summation order of the terms.
        var dense = new float[rows * tableRows];
        for (int i = 0; i < columns.Length; i++)
            if (columns[i] >= 0) dense[i / perRow * tableRows + columns[i]] += values[i];
        var viaProduct = new CpuTensor(rows, width);
        cpu.MatMulInputGrad(CpuBackend.Wrap(dense, rows, tableRows), CpuBackend.Wrap(w, tableRows, width), viaProduct, false);
        Approx.Equal(viaProduct.Data, expected.Data, 1e-6f, 1e-5f, "sparse vs dense product");
    }
}
