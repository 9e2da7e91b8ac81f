using System.Runtime.Intrinsics.X86;
using NeuronTrace.Runtime.Cpu;
using Xunit;

namespace NeuronTrace.Runtime.Tests;

/// <summary>
/// Few-row products (the attribution's last-position logits and their backward) big enough to be shared by the cores:
/// the tasks split the weight matrix's output columns, so each element of C is summed by one task in k order. For
/// A·B that order is the plain sequence of multiply-adds, and the product must equal, bit for bit, a scalar reference
/// that does exactly that sequence; with any other split (k cut among tasks, partial sums added) it would not.
/// </summary>
public class GemmFewRowsTests
{
    public static TheoryData<int, int, int, bool> Shapes() => new()
    {
        // m ≤ 8 rows (the few-row A·B path), n a multiple of 8, m·n·k above the threading threshold
        { 1, 2056, 3001, false }, { 5, 4096, 1100, false }, { 8, 1032, 4099, true }, { 2, 8192, 515, true }, { 7, 3000, 2003, false },
    };

    [Theory, MemberData(nameof(Shapes))]
    public void PlainProductSumsEachElementInKOrder(int m, int n, int k, bool accumulate)
    {
        Assert.True((long)m * n * k >= Gemm.ParallelThreshold, "the shape must be big enough to be split across tasks");
        var rng = new Random(m * 7 + n + k);
        float[] a = Random(rng, m * k), b = Random(rng, k * n), c0 = Random(rng, m * n);
        var c = (float[])c0.Clone();
        Gemm.Run(a, b, c, m, n, k, accumulate, transposedB: false, Gemm.Path.SmallM);
        AssertBitwise(SequentialReference(a, q => b.AsSpan(q * n, n), c0, m, n, k, accumulate), c, "fp32");

        // 16-bit weights: the same sequence over the widened values.
        var bits = new ushort[k * n];
        var wide = new float[k * n];
        for (int i = 0; i < bits.Length; i++)
        {
            bits[i] = (ushort)(BitConverter.SingleToUInt32Bits(b[i]) >> 16);
            wide[i] = BitConverter.UInt32BitsToSingle((uint)bits[i] << 16);
        }
        c = (float[])c0.Clone();
        Gemm.Run(a, new HalfWeights(bits, HalfFormat.BFloat16), c, m, n, k, accumulate, transposedB: false, Gemm.Path.SmallM);
        AssertBitwise(SequentialReference(a, q => wide.AsSpan(q * n, n), c0, m, n, k, accumulate), c, "bf16");
    }

    [Theory]
    [InlineData(3, 2050, 2500)]   // widths not a multiple of 8: tails inside the last column piece
    [InlineData(8, 1001, 4100)]
    public void AwkwardWidthsMatchFloat64(int m, int n, int k)
    {
        var rng = new Random(m + n + k);
        float[] a = Random(rng, m * k), b = Random(rng, k * n);
        foreach (bool transposedB in new[] { false, true })
        {
            var c = new float[m * n];
            Gemm.Run(a, b, c, m, n, k, accumulate: false, transposedB, Gemm.Path.SmallM);
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double sum = 0, mag = 0;
                    for (int q = 0; q < k; q++)
                    {
                        double prod = (double)a[i * k + q] * (transposedB ? b[j * k + q] : b[q * n + j]);
                        sum += prod;
                        mag += Math.Abs(prod);
                    }
                    double err = Math.Abs(c[i * n + j] - sum);
                    if (!(err <= 1e-5 * Math.Sqrt(k) * Math.Max(1, mag)))
                        Assert.Fail($"{(transposedB ? "A·Bᵀ" : "A·B")} m={m} n={n} k={k}: c[{i},{j}] = {c[i * n + j]}, expected {sum}");
                }
        }
    }

    /// <summary>c[i, j] = (c0 or 0) then, for q = 0..k−1 in order, c ← a[i, q]·b[q, j] + c (fused where the CPU fuses).</summary>
    static float[] SequentialReference(float[] a, Func<int, ReadOnlySpan<float>> bRow, float[] c0, int m, int n, int k, bool accumulate)
    {
        var c = accumulate ? (float[])c0.Clone() : new float[m * n];
        for (int q = 0; q < k; q++)
        {
            var row = bRow(q);
            for (int i = 0; i < m; i++)
            {
                float s = a[i * k + q];
                for (int j = 0; j < n; j++)
                    c[i * n + j] = Fma.IsSupported ? MathF.FusedMultiplyAdd(s, row[j], c[i * n + j]) : s * row[j] + c[i * n + j];
            }
        }
        return c;
    }

    static void AssertBitwise(float[] expected, float[] actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}: element {i} is {actual[i]:R}, the k-order sum is {expected[i]:R}");
    }

    static float[] Random(Random rng, int count)
    {
        var x = new float[count];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1);
        return x;
    }
}
