using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// topk.cu (through its launcher, <see cref="CudaBackend.TopKByMagnitude"/>, and kernel by kernel with a small grid)
/// against the CPU op (<see cref="TopKOps"/>) and against an independent reference written here the way NodeRanking
/// ranks: every mean sum · scale, sorted by |mean| with float.CompareTo (NaN last), ties by the lower flat index, the
/// first k. Exact (the same single rounding of each product on every side). Blocks are a column range of a wider slab,
/// layers with a spare row, a nonzero first flat index (a second device's layers); values with heavy ties (a few
/// levels, many exact zeros, −0 beside +0), infinities and NaN; k of 1, inside a tie group, past it, all and more.
/// </summary>
public class TopKKernelTests
{
    /// <summary>A slab of <paramref name="layers"/> · (positions + 1) rows and firstColumn + width + 3 columns; "ties": quarter steps in [−1, 1], a third exact zeros, some −0, ±∞ and NaN.</summary>
    static float[] Slab(int seed, int layers, int positions, int columns, bool ties)
    {
        var v = Rand.Floats(seed, (long)layers * (positions + 1) * columns, -2f, 2f);
        if (!ties) return v;
        var r = new Random(seed);
        for (int i = 0; i < v.Length; i++)
        {
            int pick = r.Next(40);
            v[i] = pick switch
            {
                < 13 => 0f,
                < 16 => -0f,
                16 => float.PositiveInfinity,
                17 => float.NegativeInfinity,
                18 => float.NaN,
                _ => MathF.Round(v[i] * 2f) / 4f,
            };
        }
        return v;
    }

    /// <summary>NodeRanking's order, written out independently: |mean| descending by CompareTo, then flat index.</summary>
    static ScoredNode[] Reference(float[] slab, int columns, TopKBlock b, float[] scales, int k)
    {
        var nodes = new List<ScoredNode>();
        for (int l = 0; l < b.Layers; l++)
            for (int p = 0; p < b.Positions; p++)
                for (int u = 0; u < b.Width; u++)
                    nodes.Add(new ScoredNode(b.FirstFlat + (l * b.Positions + p) * b.Width + u,
                        slab[(l * b.RowsPerLayer + p) * columns + b.FirstColumn + u] * scales[p]));
        var order = nodes.ToArray();
        Array.Sort(order, (x, y) => MathF.Abs(y.Mean).CompareTo(MathF.Abs(x.Mean)) is var c && c != 0 ? c : x.Flat.CompareTo(y.Flat));
        return order.Take(k).ToArray();
    }

    static void Same(ScoredNode[] expected, ScoredNode[] got, string what)
    {
        Assert.True(expected.Length == got.Length, $"{what}: {got.Length} nodes, expected {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
            Assert.True(expected[i].Flat == got[i].Flat && BitConverter.SingleToInt32Bits(expected[i].Mean) == BitConverter.SingleToInt32Bits(got[i].Mean),
                $"{what}: rank {i}: node {got[i].Flat} = {got[i].Mean}, expected {expected[i].Flat} = {expected[i].Mean}");
    }

    // layers, positions, width, first column, first flat, ties
    public static IEnumerable<object[]> Cases => KernelTargets.Cross([
        [1, 1, 1, 0, 0, false], [3, 5, 37, 4, 0, false], [2, 7, 129, 2, 1000, true], [4, 3, 300, 0, 17, true]]);

    [Theory]
    [MemberData(nameof(Cases))]
    public void The_launcher_selects_the_k_nodes_node_ranking_puts_first(string target, int layers, int positions, int width, int firstColumn, int firstFlat, bool ties)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        using var backend = new CudaBackend(rt, ownsDevice: false);
        int columns = firstColumn + width + 3, rows = layers * (positions + 1);
        var slab = Slab(layers * 31 + width, layers, positions, columns, ties);
        var scales = Enumerable.Range(0, positions).Select(p => 1f / (1 + p % 4)).ToArray();   // 1, 1/2, 1/3 (inexact), 1/4
        var block = new TopKBlock(firstColumn, width, layers, positions, positions + 1, firstFlat);
        using var sums = backend.Upload(slab, rows, columns);
        int n = (int)block.Nodes;
        foreach (int k in new[] { 0, 1, Math.Max(1, n / 3), n - 1, n, n + 5 }.Distinct())
        {
            if (k < 0) continue;
            var expected = Reference(slab, columns, block, scales, Math.Min(k, n));
            Same(expected, TopKOps.Select(slab, columns, block, scales, k), $"CPU op k={k}");
            Same(expected, backend.TopKByMagnitude(sums, block, scales, k), $"{target} k={k}");
        }
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void The_kernels_select_the_same_k_with_a_grid_smaller_than_the_nodes(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        const int layers = 3, positions = 6, width = 53, firstColumn = 1, columns = 60, k = 41, firstFlat = 5;
        var slab = Slab(7, layers, positions, columns, ties: true);
        var scales = Enumerable.Range(0, positions).Select(p => 1f / (p + 1)).ToArray();
        var block = new TopKBlock(firstColumn, width, layers, positions, positions + 1, firstFlat);
        int n = (int)block.Nodes;
        using var sums = DeviceArray.Upload(rt, slab);
        using var ds = DeviceArray.Upload(rt, scales);
        using var state = DeviceArray.Upload(rt, new int[CudaBackend.TopKStateInts]);
        using var index = DeviceArray.Upload(rt, new int[k]);
        using var value = DeviceArray.Floats(rt, k);
        var grid = new Dim3(3);   // 3 blocks of 33 threads over 954 nodes: every thread walks ~10 of them
        var block33 = new Dim3(33);
        rt.Run("topk_init", new Dim3(1), new Dim3(64), 0, state, k);
        for (int digit = 7; digit >= 0; digit--)
        {
            rt.Run("topk_histogram", grid, block33, 0, sums, ds, n, columns, firstColumn, width, positions, positions + 1, firstFlat, digit, state);
            rt.Run("topk_select_digit", new Dim3(1), new Dim3(32), 0, state, digit);
        }
        rt.Run("topk_collect", grid, block33, 0, sums, ds, n, columns, firstColumn, width, positions, positions + 1, firstFlat, k, state, index, value);
        var flats = index.DownloadInts();
        var means = value.Download();
        var got = flats.Zip(means, (f, m) => new ScoredNode(f, m)).ToArray();
        TopKOps.Sort(got);
        Same(Reference(slab, columns, block, scales, k), got, $"{target} kernels");
        Assert.Equal(k, state.DownloadInts()[259]);   // exactly k nodes at or above the k-th key
    }

    [Fact]
    public void Bad_blocks_are_refused_with_one_line()
    {
        var sums = CpuBackend.Wrap(new float[4 * 10], 4, 10);
        var cpu = CpuBackend.Instance;
        Assert.Throws<ArgumentOutOfRangeException>(() => cpu.TopKByMagnitude(sums, new TopKBlock(0, 5, 2, 1, 2, 0), [1f], -1));
        var e = Assert.Throws<ArgumentException>(() => cpu.TopKByMagnitude(sums, new TopKBlock(6, 5, 2, 1, 2, 0), [1f], 3));
        Assert.Contains("do not fit", e.Message);
        Assert.Throws<ArgumentException>(() => cpu.TopKByMagnitude(sums, new TopKBlock(0, 5, 2, 1, 2, 0), [1f, 2f], 3));
        Assert.Throws<ArgumentException>(() => cpu.TopKByMagnitude(sums, new TopKBlock(0, 5, 2, 1, 2, int.MaxValue - 3), [1f], 3));
    }
}
