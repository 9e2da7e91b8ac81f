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
        // the synthetic Llama model's shapes, scaled down (rows ÷ 8, widths ÷ 4)
        { 128, 256, 256 }, { 128, 64, 256 }, { 128, 704, 256 }, { 128, 256, 704 }, { 128, 8000, 256 },
        { 8, 8000, 256 }, { 1, 8000, 256 }, { 5, 256, 8000 }, { 1, 256, 8000 },
    };

    [Theory, MemberData(nameof(OddShapes))]
    public void OddSizes(int m, int n, int k)
    {
        Check(m, n, k, transposedB: true, accumulate: false, Gemm.Path.Auto);
        Check(m, n, k, transposedB: false, accumulate: true, Gemm.Path.Auto);
    }

    [Theory, MemberData(nameof(BlockShapes))]
    public void BlockEdges(int m, int n, int k)
    {
        foreach (bool transposedB in new[] { true, false })
            foreach (bool accumulate in new[] { false, true })
                Check(m, n, k, transposedB, accumulate, Gemm.Path.Auto);
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
                foreach (bool accumulate in new[] { false, true })
                    Check(m, n, k, transposedB, accumulate, path);
    }

    [Fact]
    public void LargeMultiThreaded()
    {
        Check(300, 700, 600, transposedB: true, accumulate: true, Gemm.Path.Auto);
        Check(300, 700, 600, transposedB: false, accumulate: false, Gemm.Path.Auto);
    }

    [Fact]
    public void ConcurrentCallersDoNotShareScratch()
    {
        Parallel.For(0, 8, i => Check(64 + i, 200 + 3 * i, 300, transposedB: i % 2 == 0, accumulate: i % 3 == 0, Gemm.Path.Auto));
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
    public void RejectsUndersizedBuffers()
    {
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(new float[5], new float[6], new float[6], 2, 3, 3, false));
        Assert.Throws<ArgumentException>(() => Gemm.MultiplyTransposedB(new float[6], new float[8], new float[6], 2, 3, 3, false));
    }

    static void Check(int m, int n, int k, bool transposedB, bool accumulate, Gemm.Path path)
    {
        var rng = new Random(HashCode.Combine(m, n, k, transposedB, accumulate));
        float[] a = Random(rng, m * k), b = Random(rng, n * k), c0 = Random(rng, m * n);
        var c = (float[])c0.Clone();
        Gemm.Run(a, b, c, m, n, k, accumulate, transposedB, path);

        double tol = 1e-5 * Math.Sqrt(k);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = 0, mag = 0;
                for (int p = 0; p < k; p++)
                {
                    double prod = (double)a[i * k + p] * (transposedB ? b[j * k + p] : b[p * n + j]);
                    sum += prod;
                    mag += Math.Abs(prod);
                }
                if (accumulate) { sum += c0[i * n + j]; mag += Math.Abs(c0[i * n + j]); }
                double err = Math.Abs(c[i * n + j] - sum);
                if (!(err <= tol * Math.Max(1.0, mag)))
                    Assert.Fail($"{path} {(transposedB ? "A·Bᵀ" : "A·B")} m={m} n={n} k={k} acc={accumulate}: c[{i},{j}]={c[i * n + j]} expected {sum} (err {err:g3}, tol {tol * Math.Max(1.0, mag):g3})");
            }
    }

    static float[] Random(Random rng, int count)
    {
        var x = new float[count];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
