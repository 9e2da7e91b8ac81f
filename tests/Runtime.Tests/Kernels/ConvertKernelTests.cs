using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// convert.cu's float32 → bfloat16 rounding. The reference is the definition, not a second copy of the bit trick:
/// the result is one of the two bfloat16 values around x (x truncated, or the next one away from zero), the nearer
/// one, and on a tie the one with an even last mantissa bit; plus hand-checked bit patterns.
/// </summary>
public class ConvertKernelTests
{
    static ushort[] Convert(IDeviceRuntime rt, float[] x, int block = 128, uint grid = 0)
    {
        using var dx = DeviceArray.Upload(rt, x);
        using var dy = DeviceArray.Floats(rt, (x.Length + 1) / 2);   // n bfloat16 values in ⌈n/2⌉ floats of memory
        rt.Run("f32_to_bf16", new Dim3(grid == 0 ? KernelLaunch.Blocks(x.Length, block) : grid), new Dim3((uint)block), 0, dx, dy, (long)x.Length);
        return MemoryMarshal.Cast<float, ushort>(dy.Download()).Slice(0, x.Length).ToArray();
    }

    static float FromBf16(ushort b) => BitConverter.Int32BitsToSingle(b << 16);

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Hand_checked_bit_patterns(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var cases = new (float X, ushort Bf16)[]
        {
            (1f, 0x3F80), (-2f, 0xC000), (0f, 0x0000), (-0f, 0x8000),
            (1f + 1f / 256, 0x3F80),                       // exactly halfway between 1 and 1 + 2⁻⁷: the even one, 1
            (1f + 3f / 256, 0x3F82),                       // halfway between 0x3F81 and 0x3F82: the even one
            (1f + 1f / 256 + 1f / 65536, 0x3F81),          // just above halfway: up
            (BitConverter.Int32BitsToSingle(0x7F7FFFFF), 0x7F80),   // float max rounds to infinity
            (float.PositiveInfinity, 0x7F80), (float.NegativeInfinity, 0xFF80),
            (BitConverter.Int32BitsToSingle(0x00000001), 0x0000),   // smallest subnormal rounds to zero
        };
        var got = Convert(rt, cases.Select(c => c.X).ToArray());
        for (int i = 0; i < cases.Length; i++) Assert.True(cases[i].Bf16 == got[i], $"{cases[i].X:R}: expected 0x{cases[i].Bf16:X4}, got 0x{got[i]:X4}");
        var nan = Convert(rt, [float.NaN, BitConverter.Int32BitsToSingle(unchecked((int)0xFF800001))]);
        Assert.All(nan, b => Assert.True(float.IsNaN(FromBf16(b)), $"0x{b:X4} is not a NaN"));
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Random_values_round_to_the_nearest_even_bfloat16(string target, int n, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var rng = new Random(n);
        // magnitudes over many binades, and values built to sit exactly on rounding ties
        var x = new float[n];
        for (int i = 0; i < n; i++)
            x[i] = i % 5 == 4
                ? BitConverter.Int32BitsToSingle((rng.Next(0x0080, 0x7F7F) << 16) | 0x8000)
                : (float)((rng.NextDouble() * 2 - 1) * Math.Pow(2, rng.Next(-60, 60)));
        var got = Convert(rt, x, block, grid);
        for (int i = 0; i < n; i++)
        {
            int bits = BitConverter.SingleToInt32Bits(x[i]);
            ushort down = (ushort)((uint)bits >> 16), up = (ushort)(down + 1);
            double dDown = Math.Abs(x[i] - (double)FromBf16(down)), dUp = Math.Abs(x[i] - (double)FromBf16(up));
            ushort expected = dDown < dUp ? down : dUp < dDown ? up : (down & 1) == 0 ? down : up;
            Assert.True(expected == got[i], $"x[{i}] = {x[i]:R}: expected 0x{expected:X4}, got 0x{got[i]:X4}");
        }
    }

    public static IEnumerable<object[]> Cases => KernelTargets.Cross([[1, 128, 0u], [1001, 256, 0u], [5000, 64, 7u]]);
}
