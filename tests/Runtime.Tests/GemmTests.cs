using NeuronTrace.Runtime.Cpu;
using Xunit;

namespace NeuronTrace.Runtime.Tests;

public class GemmTests
{
    static readonly int[] Odd = [1, 3, 7, 17, 33, 65, 100];

    public static TheoryData<int, int, int> OddShapes()
    {
        var data = new TheoryData<int, int, int>();
        foreach (int m in Odd)
            foreach (int n in Odd)
                foreach (int k in Odd)
                    data.Add(m, n, k);
        return data;
    }

    /// <summary>Edge cases around the micro-tile (6×16), the k unroll (4), the vector width (8) and the cache blocks.</summary>
    public static TheoryData<int, int, int> BlockShapes() => new()
    {
        { 1, 1, 1 }, { 6, 16, 4 }, { 5, 15, 3 }, { 7, 17, 9 }, { 12, 32, 8 }, { 13, 33, 257 }, { 6, 16, 256 },
        { 2, 1000, 31 }, { 4, 70, 513 }, { 8, 9, 1 }, { 9, 8, 2 }, { 1, 2049, 5 }, { 2049, 1, 5 }, { 3, 5, 1100 },
        { 121, 1025, 300 }, { 240, 48, 520 }, { 127, 2050, 257 }, { 100, 512, 64 }, { 100, 64, 172 }, { 100, 172, 64 },
        // the synthetic Llama model's shapes, scaled down (rows ÷ 8, widths ÷ 8, vocabulary ÷ 16), forward and backward orientation
        { 128, 128, 128 }, { 128, 32, 128 }, { 128, 352, 128 }, { 128, 128, 352 }, { 128, 2000, 128 }, { 128, 128, 2000 },
        { 8, 4000, 128 }, { 1, 4000, 128 }, { 5, 128, 4000 }, { 1, 128, 4000 }, { 16, 352, 128 }, { 9, 128, 352 },
    };

    [Theory, MemberData(nameof(OddShapes))]
    public void OddSizes(int m, int n, int k)
    {
        Check(m, n, k, transposedB: true, Gemm.Path.Auto, false, true);
        Check(m, n, k, transposedB: false, Gemm.Path.Auto, false, true);
    }

    [Theory, MemberData(nameof(BlockShapes))]
    public void BlockEdges(int m, int n, int k)
    {
        Check(m, n, k, transposedB: true, Gemm.Path.Auto, false, true);
        Check(m, n, k, transposedB: false, Gemm.Path.Auto, false, true);
    }

    [Theory]
    [InlineData("Packed")]
    [InlineData("SmallM")]
    [InlineData("PackedScalar")]
    public void EveryPath(string name)
    {
        var path = Enum.Parse<Gemm.Path>(name);
        foreach (var (m, n, k) in new[] { (1, 1, 1), (1, 17, 33), (3, 7, 9), (7, 65, 17), (8, 100, 300), (17, 33, 65), (50, 300, 260) })
            foreach (bool transposedB in new[] { true, false })
                Check(m, n, k, transposedB, path, false, true);
    }

    [Fact]
    public void LargeMultiThreaded()
    {
        // big enough for several threads, with edges in every dimension
        Check(301, 700, 600, transposedB: true, Gemm.Path.Auto, true);
        Check(301, 700, 600, transposedB: false, Gemm.Path.Auto, false);
    }

    /// <summary>
    /// A product shared by cores is cut into several column tiles per core (<see cref="Gemm.TilesPerWorker"/>); each
    /// element must still come out bit for bit as in a product whose columns run as one tile on one thread (the same
    /// 32 rows of A times a 48-column slice of B, far below the parallel threshold).
    /// </summary>
    [Fact]
    public void ColumnTilesDoNotChangeAnyElement()
    {
        int m = 32, n = 2000, k = 700;   // 44.8M multiply-adds: shared by the cores, cut by columns
        var rng = new Random(20);
        float[] a = Random(rng, m * k), b = Random(rng, n * k);
        var whole = new float[m * n];
        Gemm.MultiplyTransposedB(a, b, whole, m, n, k, accumulate: false);
        foreach (int j0 in new[] { 0, 240, 992, 1952 })
        {
            const int width = 48;
            var slice = b.AsSpan(j0 * k, width * k).ToArray();   // rows j0.. of B (A·Bᵀ): columns j0.. of C
            var part = new float[m * width];
            Gemm.MultiplyTransposedB(a, slice, part, m, width, k, accumulate: false);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < width; j++)
                    if (BitConverter.SingleToInt32Bits(part[i * width + j]) != BitConverter.SingleToInt32Bits(whole[i * n + j0 + j]))
                        Assert.Fail($"C[{i}, {j0 + j}]: {whole[i * n + j0 + j]:R} in the tiled product, {part[i * width + j]:R} alone");
        }
    }

    [Fact]
    public void ConcurrentCallersDoNotShareScratch()
    {
        Parallel.For(0, 8, i => Check(64 + i, 200 + 3 * i, 300, transposedB: i % 2 == 0, Gemm.Path.Auto, i % 3 == 0));
    }

    [Fact]
    public void WritesOnlyTheProductPrefix()
    {
        // Buffers may be larger than the product; only the m×n prefix of c is written.
        var a = new float[2 * 3 + 5];
        var b = new float[4 * 3 + 5];
        var c = Enumerable.Repeat(7f, 2 * 4 + 3).ToArray();
        Array.Fill(a, 1f);
        Array.Fill(b, 1f);
        Gemm.MultiplyTransposedB(a, b, c, 2, 4, 3, accumulate: false);
        Assert.All(c.Take(8), v => Assert.Equal(3f, v));
        Assert.All(c.Skip(8), v => Assert.Equal(7f, v));
    }

    [Fact]
    public void TinyProductsAllocateNothing()
    {
        // stories260K-sized products run on the calling thread with pooled scratch: no garbage per call
        var rng = new Random(5);
        float[] a = Random(rng, 100 * 172), b = Random(rng, 512 * 172), c = new float[100 * 512];
        foreach (var (m, n, k) in new[] { (100, 64, 64), (100, 172, 64), (100, 64, 172), (100, 512, 64), (1, 512, 64), (3, 64, 172) })
        {
            Gemm.MultiplyTransposedB(a, b, c, m, n, k, accumulate: false);
            Gemm.Multiply(a, b, c, m, n, k, accumulate: true);
            // Other test classes run GEMMs in parallel and may hold the pooled scratch buffers for a moment, which makes
            // this thread allocate its own; the steady state must still allocate nothing, so the best of three counts.
            long least = long.MaxValue;
            for (int attempt = 0; attempt < 3 && least != 0; attempt++)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                Gemm.MultiplyTransposedB(a, b, c, m, n, k, accumulate: false);
                Gemm.Multiply(a, b, c, m, n, k, accumulate: true);
                least = Math.Min(least, GC.GetAllocatedBytesForCurrentThread() - before);
            }
            Assert.Equal(0, least);
        }
    }

    [Fact]
    public void RejectsUndersizedBuffers()
    {
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(new float[5], new float[6], new float[6], 2, 3, 3, false));
        Assert.Throws<ArgumentException>(() => Gemm.MultiplyTransposedB(new float[6], new float[8], new float[6], 2, 3, 3, false));
    }

    /// <summary>
    /// Runs c (+)= a·b (or a·bᵀ) on random inputs, once per accumulate flag, against a float64 reference. Every column is
    /// checked; on big products only a sample of rows (the first and last eight and every fifth, which meets every
    /// residue modulo the 6-row micro-tile) to keep the reference cheap in Debug builds.
    /// </summary>
    static void Check(int m, int n, int k, bool transposedB, Gemm.Path path, params bool[] accumulates)
    {
        var rng = new Random(((m * 31 + n) * 31 + k) * 2 + (transposedB ? 1 : 0));
        float[] a = Random(rng, m * k), b = Random(rng, n * k), c0 = Random(rng, m * n);
        bool sample = (long)m * n * k > 1 << 22;
        var rows = Enumerable.Range(0, m).Where(i => !sample || i < 8 || i >= m - 8 || i % 5 == 0).ToArray();

        var expected = new double[rows.Length * n];
        var magnitude = new double[rows.Length * n];
        var bt = new double[k];
        for (int j = 0; j < n; j++)
        {
            for (int p = 0; p < k; p++) bt[p] = transposedB ? b[j * k + p] : b[p * n + j];
            for (int r = 0; r < rows.Length; r++)
            {
                int ai = rows[r] * k;
                double sum = 0, mag = 0;
                for (int p = 0; p < k; p++)
                {
                    double prod = a[ai + p] * bt[p];
                    sum += prod;
                    mag += Math.Abs(prod);
                }
                expected[r * n + j] = sum;
                magnitude[r * n + j] = mag;
            }
        }

        double tol = 1e-5 * Math.Sqrt(k);
        foreach (bool accumulate in accumulates)
        {
            var c = (float[])c0.Clone();
            if (path != Gemm.Path.Auto) Gemm.Run(a, b, c, m, n, k, accumulate, transposedB, path);
            else if (transposedB) Gemm.MultiplyTransposedB(a, b, c, m, n, k, accumulate);
            else Gemm.Multiply(a, b, c, m, n, k, accumulate);
            for (int r = 0; r < rows.Length; r++)
                for (int j = 0; j < n; j++)
                {
                    int i = rows[r];
                    double want = expected[r * n + j], mag = magnitude[r * n + j];
                    if (accumulate) { want += c0[i * n + j]; mag += Math.Abs(c0[i * n + j]); }
                    double err = Math.Abs(c[i * n + j] - want), bound = tol * Math.Max(1.0, mag);
                    if (!(err <= bound))
                        Assert.Fail($"{path} {(transposedB ? "A·Bᵀ" : "A·B")} m={m} n={n} k={k} acc={accumulate}: c[{i},{j}]={c[i * n + j]} expected {want} (err {err:g3} > {bound:g3})");
                }
        }
    }

    static float[] Random(Random rng, int count)
    {
        var x = new float[count];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
