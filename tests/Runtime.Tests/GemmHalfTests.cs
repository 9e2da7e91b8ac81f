using NeuronTrace.Runtime.Cpu;
using Xunit;

namespace NeuronTrace.Runtime.Tests;

/// <summary>
/// Products over 16-bit weights (bf16, f16) on every path, at shapes around the micro-tile, the vector width and the
/// cache blocks: against a float64 scalar reference over independently widened weights, and bit for bit against the
/// fp32 product over the same weights widened (the 16-bit path only changes how B is read). .NET 10 exposes no
/// AVX-512 BF16 instructions, so the widening path is the only 16-bit path (see GemmWiden.cs).
/// </summary>
public class GemmHalfTests
{
    public static TheoryData<string, string> PathsAndFormats()
    {
        var data = new TheoryData<string, string>();
        foreach (var path in new[] { "Auto", "Packed", "SmallM", "PackedScalar" })
            foreach (var format in new[] { "BFloat16", "Float16" })
                data.Add(path, format);
        return data;
    }

    static readonly (int M, int N, int K)[] Shapes =
    [
        (1, 1, 1), (1, 17, 33), (3, 7, 9), (5, 15, 3), (6, 16, 4), (7, 17, 9), (8, 9, 1), (2, 1000, 31), (4, 70, 513),
        (13, 33, 257), (16, 352, 128), (17, 33, 65), (9, 128, 352), (50, 300, 260), (121, 1025, 300), (127, 2050, 257),
        (1, 4000, 128), (5, 128, 4000),
    ];

    [Theory, MemberData(nameof(PathsAndFormats))]
    public void MatchesScalarReferenceAndWidenedFp32(string pathName, string formatName)
    {
        var path = Enum.Parse<Gemm.Path>(pathName);
        var format = Enum.Parse<HalfFormat>(formatName);
        foreach (var (m, n, k) in Shapes)
            foreach (bool transposedB in new[] { true, false })
                Check(m, n, k, transposedB, path, format);
    }

    [Fact]
    public void WideningIsExactForEveryBitPattern()
    {
        var bits = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        var widened = new float[bits.Length];
        Gemm.WidenHalf(bits, HalfFormat.BFloat16, widened);
        for (int i = 0; i < bits.Length; i++)
            Assert.Equal(i << 16, BitConverter.SingleToInt32Bits(widened[i]));

        Gemm.WidenHalf(bits, HalfFormat.Float16, widened);
        for (int i = 0; i < bits.Length; i++)
        {
            float want = (float)BitConverter.UInt16BitsToHalf(bits[i]);
            if (float.IsNaN(want)) Assert.True(float.IsNaN(widened[i]), $"f16 {i:X4}: {widened[i]} is not NaN");
            else Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(widened[i]), $"f16 {i:X4}: {widened[i]} expected {want}");
        }
    }

    [Fact]
    public void RejectsUndersizedWeights()
    {
        var b = new HalfWeights(new ushort[8], HalfFormat.BFloat16);
        Assert.Throws<ArgumentException>(() => Gemm.MultiplyTransposedB(new float[6], b, new float[6], 2, 3, 3, false));
        Assert.Throws<ArgumentException>(() => Gemm.Multiply(new float[6], b, new float[6], 2, 3, 3, false));
    }

    static void Check(int m, int n, int k, bool transposedB, Gemm.Path path, HalfFormat format)
    {
        var rng = new Random(((m * 31 + n) * 31 + k) * 2 + (transposedB ? 1 : 0));
        var a = new float[m * k];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        var bits = new ushort[n * k];
        var bWide = new float[n * k];   // widened here independently of the library
        for (int i = 0; i < bits.Length; i++)
        {
            float x = (float)(rng.NextDouble() * 2 - 1);
            if (format == HalfFormat.BFloat16)
            {
                bits[i] = (ushort)(BitConverter.SingleToUInt32Bits(x) >> 16);
                bWide[i] = BitConverter.UInt32BitsToSingle((uint)bits[i] << 16);
            }
            else
            {
                // include f16 subnormals now and then
                var h = (Half)(i % 97 == 0 ? x * 1e-5f : x);
                bits[i] = BitConverter.HalfToUInt16Bits(h);
                bWide[i] = (float)h;
            }
        }
        var b = new HalfWeights(bits, format);
        var c0 = new float[m * n];
        for (int i = 0; i < c0.Length; i++) c0[i] = (float)(rng.NextDouble() * 2 - 1);

        foreach (bool accumulate in new[] { false, true })
        {
            var c = (float[])c0.Clone();
            var cFp32 = (float[])c0.Clone();
            Gemm.Run(a, b, c, m, n, k, accumulate, transposedB, path);
            Gemm.Run(a, bWide, cFp32, m, n, k, accumulate, transposedB, path);
            string what = $"{path} {format} {(transposedB ? "A·Bᵀ" : "A·B")} m={m} n={n} k={k} acc={accumulate}";
            for (int i = 0; i < c.Length; i++)
                if (BitConverter.SingleToInt32Bits(c[i]) != BitConverter.SingleToInt32Bits(cFp32[i]))
                    Assert.Fail($"{what}: c[{i}] = {c[i]} but the fp32 product over the widened weights gives {cFp32[i]}");

            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double sum = accumulate ? c0[i * n + j] : 0, mag = Math.Abs(sum);
                    for (int p = 0; p < k; p++)
                    {
                        double prod = (double)a[i * k + p] * (transposedB ? bWide[j * k + p] : bWide[p * n + j]);
                        sum += prod;
                        mag += Math.Abs(prod);
                    }
                    double err = Math.Abs(c[i * n + j] - sum), bound = 1e-5 * Math.Sqrt(k) * Math.Max(1.0, mag);
                    if (!(err <= bound)) Assert.Fail($"{what}: c[{i},{j}] = {c[i * n + j]} expected {sum} (err {err:g3} > {bound:g3})");
                }
        }
    }
}
