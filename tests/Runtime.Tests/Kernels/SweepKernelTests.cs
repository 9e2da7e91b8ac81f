using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// The sweep kernels of ablation.cu on the emulator: build_keep_bits against masks written from the definition (the
/// top k of a random order, its complement, stored rows and their inverse, k = 0 and all) packed by
/// <see cref="MeanAblateTests.Bits"/>, and against CpuSweepOps.BuildKeepBits (both exact: bits);
/// replica_metric against the metric's values written out (l_c − l_p, one logit, none) summed per replica, and the
/// CPU op (exact).
/// </summary>
public class SweepKernelTests
{
    // layers, positions, width, block, grid (0 = enough blocks)
    public static IEnumerable<object[]> BitCases => KernelTargets.Cross([
        [1, 1, 1, 32, 0u], [2, 3, 33, 256, 0u], [3, 2, 64, 64, 2u], [2, 1, 100, 33, 0u], [1, 2, 257, 128, 1u]]);

    [Theory]
    [MemberData(nameof(BitCases))]
    public void Build_keep_bits_matches_the_definition(string target, int layers, int positions, int width, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        int n = layers * positions * width, words = AblationMask.WordsPerRow(width);
        var rng = new Random(n + width);
        var order = Enumerable.Range(0, n).OrderBy(_ => rng.Next()).ToArray();
        var ranks = new int[n];
        for (int i = 0; i < n; i++) ranks[order[i]] = i;
        bool[] TopK(int k) { var m = new bool[n]; for (int i = 0; i < k; i++) m[order[i]] = true; return m; }
        var stored = Enumerable.Range(0, 2).Select(_ => Enumerable.Range(0, n).Select(_ => rng.NextDouble() < 0.3).ToArray()).ToArray();
        // (source, k, invert) and the mask each means.
        var cases = new List<(int[] Spec, bool[] Mask)>
        {
            ([-1, 0, 0], TopK(0)), ([-1, n, 0], TopK(n)), ([-1, n / 3, 0], TopK(n / 3)), ([-1, n / 3, 1], TopK(n / 3).Select(b => !b).ToArray()),
            ([-1, 0, 1], TopK(n)), ([1, 0, 0], stored[1]), ([0, 0, 1], stored[0].Select(b => !b).ToArray()), ([0, 7, 0], stored[0]),
        };
        int masks = cases.Count;
        var specs = cases.SelectMany(c => c.Spec).ToArray();
        var storedBits = new uint[2 * layers * positions * words];
        for (int s = 0; s < 2; s++)
            for (int r = 0; r < layers * positions; r++)
                AblationMask.PackRow(stored[s].AsSpan(r * width, width), storedBits.AsSpan((s * layers * positions + r) * words, words));
        // Expected: row (l·masks + m)·positions + p of the definition's masks.
        var rows = new bool[layers * masks * positions][];
        for (int l = 0; l < layers; l++)
            for (int m = 0; m < masks; m++)
                for (int p = 0; p < positions; p++)
                    rows[(l * masks + m) * positions + p] = cases[m].Mask.AsSpan((l * positions + p) * width, width).ToArray();
        var expected = MeanAblateTests.Bits(rows, width);

        var cpu = new uint[expected.Length];
        CpuSweepOps.BuildKeepBits(ranks, storedBits, specs, layers, positions, width, cpu);
        Assert.Equal(expected, cpu);

        using var dr = DeviceArray.Upload(rt, ranks);
        using var ds = DeviceArray.Upload(rt, MemoryMarshal.Cast<uint, int>(storedBits).ToArray());
        using var dspec = DeviceArray.Upload(rt, specs);
        using var db = DeviceArray.Floats(rt, expected.Length);
        var g = new Dim3(grid == 0 ? KernelLaunch.Blocks(expected.Length, block) : grid);
        rt.Run("build_keep_bits", g, new Dim3((uint)block), 0, db, dr, ds, dspec, masks, layers, positions, width, words);
        Assert.Equal(expected, MemoryMarshal.Cast<int, uint>(db.DownloadInts()).ToArray());
    }

    // replicas, examples, columns, block, grid (0 = enough blocks)
    public static IEnumerable<object[]> MetricCases => KernelTargets.Cross([[1, 1, 1, 32, 0u], [3, 4, 6, 64, 0u], [9, 5, 40, 4, 1u], [40, 3, 7, 32, 0u]]);

    /// <summary>
    /// Example b reads a logit difference (b % 3 = 0: l_c − l_p), one logit (b % 3 = 1) or nothing (b % 3 = 2: a
    /// patch answer equal to the clean one); the value per example as Metric.Value computes it, summed in fp64.
    /// </summary>
    [Theory]
    [MemberData(nameof(MetricCases))]
    public void Replica_metric_is_the_metric_value_summed_per_replica(string target, int replicas, int examples, int columns, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var logits = Rand.Floats(replicas + columns, (long)replicas * examples * columns, -8f, 8f);
        var rng = new Random(examples);
        var terms = Enumerable.Range(0, examples).Select(b => (b % 3) switch
        {
            0 => new[] { (rng.Next(columns), 1f), (rng.Next(columns), -1f) },
            1 => new[] { (rng.Next(columns), 1f) },
            _ => Array.Empty<(int, float)>(),
        }).ToList();
        var table = SweepOps.TermsTable(terms, columns, out int perRow);
        var expected = new double[replicas];
        for (int r = 0; r < replicas; r++)
            for (int b = 0; b < examples; b++)
            {
                var row = logits.AsSpan((r * examples + b) * columns, columns);
                float v = terms[b].Length switch { 2 => row[terms[b][0].Item1] - row[terms[b][1].Item1], 1 => row[terms[b][0].Item1], _ => 0f };
                expected[r] += v;
            }
        var cpu = new float[2 * replicas];
        CpuSweepOps.ReplicaMetric(logits, table, examples, columns, perRow, cpu);

        using var dl = DeviceArray.Upload(rt, logits);
        using var dt = DeviceArray.Upload(rt, table);
        using var dm = DeviceArray.Floats(rt, 2 * replicas);
        var g = new Dim3(grid == 0 ? KernelLaunch.Blocks(replicas, block) : grid);
        rt.Run("replica_metric", g, new Dim3((uint)block), 0, dl, dt, dt.Pointer + sizeof(int), dm, replicas, examples, columns, perRow);
        var gpu = dm.Download();
        Assert.Equal(cpu, gpu);
        for (int r = 0; r < replicas; r++)
        {
            Assert.Equal((float)expected[r], cpu[2 * r]);
            Assert.Equal(expected[r], (double)cpu[2 * r] + cpu[2 * r + 1], 12);
        }
    }
}
