using NeuronTrace.Runtime.Cpu;
using Xunit;

namespace NeuronTrace.Runtime.Tests;

/// <summary>Skips, saying why, unless the AVX-512 BF16 library (native/build.sh) is found and this CPU runs it.</summary>
public sealed class Bf16InstructionFactAttribute : FactAttribute
{
    public Bf16InstructionFactAttribute()
    {
        if (!CpuBf16Library.Available) Skip = $"bf16 instruction path: {CpuBf16Library.WhyNot}: not run here";
    }
}

/// <summary>
/// The bf16 CPU math mode's products (GemmBf16.cs): both implementations, the AVX-512 BF16 micro-kernel of native/cpu
/// and the managed portable path, against a float64 scalar reference over A rounded to bf16 by an independent method
/// (double arithmetic, ties to even), at shapes off every tile multiple (odd k, m and n not multiples of 8 or 32,
/// k across the 256-value block; one shape whose rounding of A is split across cores), both operand layouts, with and without accumulation. Tolerance: the worst-case
/// bound of fp32 summation, (k + 2)·2⁻²⁴·Σ|a·b| per element; a wrong element or unrounded A misses it by orders.
/// </summary>
public class GemmBf16Tests
{
    static readonly (int M, int N, int K)[] Shapes =
    [
        (1, 1, 1), (3, 7, 9), (7, 33, 3), (8, 32, 2), (9, 65, 31), (13, 100, 257), (17, 600, 513), (64, 40, 1000),
        (50, 300, 260), (121, 1025, 300), (127, 2050, 257), (20, 31, 1),
        (515, 40, 2049),   // m·k past CpuParallel.MinElements: A is rounded in pieces of whole row blocks across the cores
    ];

    [Fact]
    public void PortablePathMatchesScalarReference() => CheckAll(Gemm.Bf16Path.Portable);

    [Bf16InstructionFact]
    public void InstructionPathMatchesScalarReference() => CheckAll(Gemm.Bf16Path.Instruction);

    /// <summary>
    /// .NET allows one import resolver per assembly: the bf16 library (loaded at this class's discovery, above) and the
    /// CUDA bindings' cuBLAS/NVTX probing share <see cref="NativeLibraries"/>'s. A second registration threw, so a process
    /// that used bf16 CPU math and then opened a CUDA device (or the other way round) failed.
    /// </summary>
    [Bf16InstructionFact]
    public void TheCudaBindingsResolverAndTheBf16LibraryShareTheAssemblysOneResolver()
    {
        NativeLibraries.EnsureResolver();   // what the first cuBLAS or NVTX call does, after the library was loaded
        NativeLibraries.EnsureResolver();
        Assert.True(CpuBf16Library.nt_cpu_bf16_row_block() > 0);   // the bf16 import still resolves
        Assert.False(NativeLibraries.TryLoad("libneurontrace-no-such-library.so", out string tried));
        Assert.Contains("no-such-library", tried);
    }

    [Bf16InstructionFact]
    public void AutoPathTakesTheInstructionForManyRows()
    {
        // 40 rows: the packed path's row count; the result must be the instruction path's, bit for bit.
        var (a, b, _) = Operands(40, 70, 33, seed: 4);
        var viaAuto = new float[40 * 70];
        var viaInstruction = new float[40 * 70];
        Gemm.RunBf16(a, b, viaAuto, 40, 70, 33, false, true, Gemm.Bf16Path.Auto);
        Gemm.RunBf16(a, b, viaInstruction, 40, 70, 33, false, true, Gemm.Bf16Path.Instruction);
        Assert.Equal(viaInstruction, viaAuto);
    }

    static void CheckAll(Gemm.Bf16Path path)
    {
        foreach (var (m, n, k) in Shapes)
            foreach (bool transposedB in new[] { true, false })
                foreach (bool accumulate in new[] { false, true })
                    Check(m, n, k, transposedB, accumulate, path);
    }

    /// <summary>A in [-1, 1] (fp32, not bf16 values, so rounding matters), B bf16 bits and their widened values.</summary>
    static (float[] A, HalfWeights B, double[] BWide) Operands(int m, int n, int k, int seed)
    {
        var rng = new Random(seed);
        var a = new float[m * k];
        for (int i = 0; i < a.Length; i++) a[i] = (float)(rng.NextDouble() * 2 - 1);
        var bits = new ushort[n * k];
        var wide = new double[n * k];
        for (int i = 0; i < bits.Length; i++)
        {
            bits[i] = (ushort)(BitConverter.SingleToUInt32Bits((float)(rng.NextDouble() * 2 - 1)) >> 16);
            wide[i] = BitConverter.UInt32BitsToSingle((uint)bits[i] << 16);
        }
        return (a, new HalfWeights(bits, HalfFormat.BFloat16), wide);
    }

    static void Check(int m, int n, int k, bool transposedB, bool accumulate, Gemm.Bf16Path path)
    {
        var (a, b, bWide) = Operands(m, n, k, seed: ((m * 31 + n) * 31 + k) * 2 + (transposedB ? 1 : 0));
        var c = new float[m * n];
        for (int i = 0; i < c.Length; i++) c[i] = 0.25f * (i % 7) - 0.5f;
        var before = (float[])c.Clone();
        Gemm.RunBf16(a, b, c, m, n, k, accumulate, transposedB, path);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double sum = accumulate ? before[i * n + j] : 0, abs = Math.Abs(sum);
                for (int p = 0; p < k; p++)
                {
                    double term = ReferenceRound(a[i * k + p]) * (transposedB ? bWide[j * k + p] : bWide[p * n + j]);
                    sum += term; abs += Math.Abs(term);
                }
                double tolerance = (k + 2) * Math.ScaleB(1.0, -24) * abs + 1e-30;
                double got = c[i * n + j];
                if (!(Math.Abs(got - sum) <= tolerance))
                    Assert.Fail($"{path} m={m} n={n} k={k} transposedB={transposedB} accumulate={accumulate} c[{i},{j}] = {got}, reference {sum} (tolerance {tolerance:G3})");
            }
    }

    /// <summary>x to the nearest bf16 value, ties to even, by double arithmetic (normal, finite x; 0 stays 0).</summary>
    static double ReferenceRound(float x)
    {
        if (x == 0) return 0;
        double ulp = Math.ScaleB(1.0, Math.ILogB((double)x) - 7);   // bf16: 8 significant bits
        return Math.Round(x / ulp, MidpointRounding.ToEven) * ulp;
    }

    [Fact]
    public void RoundToBf16HandDerivedCases()
    {
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties to even (1). 1 + 3·2^-8 lies halfway between 1 + 2^-7
        // and 1 + 2^-6: to even (1 + 2^-6). 1 + 2^-8 + 2^-20 is past halfway: up.
        Assert.Equal(1f, Gemm.RoundToBf16(1f + MathF.ScaleB(1, -8)));
        Assert.Equal(1f + MathF.ScaleB(1, -6), Gemm.RoundToBf16(1f + 3 * MathF.ScaleB(1, -8)));
        Assert.Equal(1f + MathF.ScaleB(1, -7), Gemm.RoundToBf16(1f + MathF.ScaleB(1, -8) + MathF.ScaleB(1, -20)));
        Assert.Equal(-3f, Gemm.RoundToBf16(-3f));
        Assert.Equal(float.PositiveInfinity, Gemm.RoundToBf16(float.MaxValue));           // rounds past the largest bf16
        Assert.Equal(float.NegativeInfinity, Gemm.RoundToBf16(float.NegativeInfinity));
        Assert.True(float.IsNaN(Gemm.RoundToBf16(BitConverter.UInt32BitsToSingle(0x7F800001u))));   // a NaN whose payload would round away
        Assert.Equal(0x80000000u, BitConverter.SingleToUInt32Bits(Gemm.RoundToBf16(-float.Epsilon)));   // denormal to signed zero
        Assert.Equal(0u, BitConverter.SingleToUInt32Bits(Gemm.RoundToBf16(MathF.ScaleB(1, -127))));
    }

    [Bf16InstructionFact]
    public unsafe void RoundToBf16IsTheInstructionsRoundingBitForBit()
    {
        var rng = new Random(11);
        var values = new List<uint>
        {
            0, 0x80000000, 1, 0x007FFFFF, 0x80000001, 0x00800000, 0x3F808000, 0x3F818000, 0x3F80_8001, 0x7F7FFFFF, 0xFF7FFFFF,
            0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0xFFFFFFFF, 0x7F7F8000, 0x3F7FFFFF,
        };
        for (int i = 0; i < 100_000; i++) values.Add((uint)rng.NextInt64(0, 1L << 32));
        var a = values.Select(BitConverter.UInt32BitsToSingle).ToArray();
        int k = a.Length, kpad = k + (k & 1);
        var rounded = new ushort[8 * kpad];
        fixed (float* pa = a)
        fixed (ushort* pr = rounded)
            CpuBf16Library.nt_cpu_bf16_round_rows(pa, 1, k, pr, kpad, 8);
        for (int i = 0; i < k; i++)
        {
            uint want = BitConverter.SingleToUInt32Bits(Gemm.RoundToBf16(a[i])) >> 16;
            if (rounded[i] != want) Assert.Fail($"fp32 {values[i]:X8}: instruction gives bf16 {rounded[i]:X4}, RoundToBf16 {want:X4}");
        }
        Assert.All(rounded.Skip(k), v => Assert.Equal(0, v));   // padding and the rows past m are zero
    }

    [Bf16InstructionFact]
    public unsafe void NativeKernelRefusesBadArguments()
    {
        var abf = new ushort[8 * 4];
        var bits = new ushort[12];
        var c = new float[6];
        var ws = new float[(int)CpuBf16Library.nt_cpu_bf16_workspace_bytes() / 4 + 16];
        fixed (ushort* pa = abf, pb = bits)
        fixed (float* pc = c, pw = ws)
        {
            void* aligned = (void*)(((nint)pw + 63) & ~(nint)63);
            Assert.Equal(0, CpuBf16Library.nt_cpu_gemm_bf16(pa, 2, 4, pb, 3, 4, 1, pc, 0, 3, 0, aligned));
            Assert.Equal(-1, CpuBf16Library.nt_cpu_gemm_bf16(pa, 2, 4, pb, 3, 4, 1, pc, 0, 4, 0, aligned));      // j1 past n
            Assert.Equal(-1, CpuBf16Library.nt_cpu_gemm_bf16(pa, 2, 3, pb, 3, 3, 1, pc, 0, 3, 0, aligned));      // odd kpad
            Assert.Equal(-1, CpuBf16Library.nt_cpu_gemm_bf16(pa, 2, 4, pb, 3, 4, 1, pc, 0, 3, 0, (byte*)aligned + 4));   // unaligned
        }
    }

    [Fact]
    public void CpuMathVariableParsesAndRejectsInOneLine()
    {
        Assert.Equal(CpuMath.Fp32, CpuMaths.Parse(null));
        Assert.Equal(CpuMath.Fp32, CpuMaths.Parse(""));
        Assert.Equal(CpuMath.Fp32, CpuMaths.Parse(" FP32 "));
        Assert.Equal(CpuMath.Bf16, CpuMaths.Parse("bf16"));
        var e = Assert.Throws<ArgumentException>(() => CpuMaths.Parse("tf32"));
        Assert.Equal("NEURONTRACE_CPU_MATH=\"tf32\": expected fp32 or bf16", e.Message);
        e = Assert.Throws<ArgumentException>(() => CpuMaths.Parse(new string('x', 500)));
        Assert.True(e.Message.Length < 160 && !e.Message.Contains('\n'), e.Message);   // untrusted text shortened
        Assert.Same(CpuBackend.Bf16Math, CpuBackend.For(CpuMath.Bf16));
        Assert.Same(CpuBackend.Instance, CpuBackend.For(CpuMath.Fp32));
        Assert.Equal(CpuMath.Fp32, CpuBackend.Instance.MathMode);
    }

    [Fact]
    public void RejectsF16WeightsAndUndersizedOperands()
    {
        var f16 = new HalfWeights(new ushort[9], HalfFormat.Float16);
        Assert.Throws<ArgumentException>(() => Gemm.MultiplyTransposedBBf16(new float[9], f16, new float[9], 3, 3, 3, false));
        var bf16 = new HalfWeights(new ushort[8], HalfFormat.BFloat16);
        Assert.Throws<ArgumentException>(() => Gemm.MultiplyBf16(new float[6], bf16, new float[6], 2, 3, 3, false));
    }
}
