using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// The sm_80 instructions of native/kernels/nt_mma.h (selftest_mma.cu) against the PTX ISA's register layouts,
/// written out here by hand and independently of the emulator: ldmatrix x4 (plain and .trans) register by register,
/// mma.sync m16n8k16 bf16 element by element on small integers (every sum exact, so equality is exact),
/// cvt.rn.bf16x2 rounding and packing, cp.async with two commit groups and zero-fill, and the loaders the attention
/// kernels build from them. On the host this checks the emulation; on a GPU, that the emulation and hardware agree.
/// </summary>
public class MmaSelfTests
{
    /// <summary>Round to nearest even bf16, found as the nearer of the two bf16 neighbours (ties: even mantissa).</summary>
    public static ushort Bf16(float x)
    {
        uint u = BitConverter.SingleToUInt32Bits(x);
        ushort down = (ushort)(u >> 16), up = (ushort)(down + 1);
        double dDown = Math.Abs(x - (double)FromBf16(down)), dUp = Math.Abs(x - (double)FromBf16(up));
        return dDown < dUp || (dDown == dUp && (down & 1) == 0) ? down : up;
    }

    public static float FromBf16(ushort b) => BitConverter.Int32BitsToSingle(b << 16);

    /// <summary>Packs 16-bit values two per int, the first in the low half (little-endian device memory).</summary>
    public static int[] Pack(ushort[] h)
    {
        var r = new int[(h.Length + 1) / 2];
        for (int i = 0; i < h.Length; i++) r[i / 2] |= h[i] << (16 * (i & 1));
        return r;
    }

    static (ushort Lo, ushort Hi) Halves(int reg) => ((ushort)(reg & 0xffff), (ushort)((uint)reg >> 16));

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Ldmatrix_x4_gives_each_lane_the_isa_elements(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var m = new ushort[32 * 8];
        for (int i = 0; i < m.Length; i++) m[i] = (ushort)(0x1000 + i * 7);
        using var dm = DeviceArray.Upload(rt, Pack(m));
        using var o = DeviceArray.Upload(rt, new int[32 * 8]);
        rt.Run("selftest_ldmatrix", new Dim3(1), new Dim3(32), 0, dm, o);
        int[] got = o.DownloadInts();
        // Row r of matrix k is the shared row lane 8k + r named: (7·(8k + r) + 3) mod 32.
        ushort At(int k, int r, int c) => m[(7 * (8 * k + r) + 3) % 32 * 8 + c];
        for (int lane = 0; lane < 32; lane++)
            for (int k = 0; k < 4; k++)
            {
                int g = lane / 4, t = lane % 4;
                Assert.Equal((At(k, g, 2 * t), At(k, g, 2 * t + 1)), Halves(got[lane * 8 + k]));
                Assert.Equal((At(k, 2 * t, g), At(k, 2 * t + 1, g)), Halves(got[lane * 8 + 4 + k]));
            }
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Mma_m16n8k16_bf16_matches_the_scalar_product_element_by_element(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var r = new Random(3);
        float[,] a = new float[16, 16], b = new float[16, 8], c = new float[16, 8];
        for (int i = 0; i < 16; i++) for (int j = 0; j < 16; j++) a[i, j] = r.Next(-4, 5) * 0.5f;
        for (int i = 0; i < 16; i++) for (int j = 0; j < 8; j++) { b[i, j] = r.Next(-4, 5); c[i, j] = r.Next(-20, 21); }
        // The ISA's fragments: lane l, g = l / 4, t = l % 4.
        var ra = new ushort[32 * 8];
        var rb = new ushort[32 * 4];
        float[] rc = new float[32 * 4];
        for (int l = 0; l < 32; l++)
        {
            int g = l / 4, t = l % 4;
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 2; j++) ra[l * 8 + i * 2 + j] = Bf16(a[g + 8 * (i & 1), 2 * t + j + 8 * (i >> 1)]);
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) rb[l * 4 + i * 2 + j] = Bf16(b[2 * t + j + 8 * i, g]);
            for (int i = 0; i < 4; i++) rc[l * 4 + i] = c[g + 8 * (i >> 1), 2 * t + (i & 1)];
        }
        using var da = DeviceArray.Upload(rt, Pack(ra));
        using var db = DeviceArray.Upload(rt, Pack(rb));
        using var dc = DeviceArray.Upload(rt, rc);
        using var dd = DeviceArray.Floats(rt, 32 * 4);
        rt.Run("selftest_mma_bf16", new Dim3(1), new Dim3(32), 0, da, db, dc, dd);
        float[] got = dd.Download();
        for (int l = 0; l < 32; l++)
            for (int i = 0; i < 4; i++)
            {
                int row = l / 4 + 8 * (i >> 1), col = 2 * (l % 4) + (i & 1);
                float expected = c[row, col];
                for (int k = 0; k < 16; k++) expected += a[row, k] * b[k, col];
                Assert.True(expected == got[l * 4 + i], $"lane {l} d{i} (row {row}, col {col}): expected {expected}, got {got[l * 4 + i]}");
            }
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Cvt_bf16x2_rounds_to_nearest_even_low_half_first(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        float tie = BitConverter.Int32BitsToSingle(0x3f808000), tieUp = BitConverter.Int32BitsToSingle(0x3f818000);
        float[] x = [.. new[] { 1f, -2.5f, tie, tieUp, -tie, 3.0e-39f, 65504f, 1e30f }, .. Rand.Floats(9, 56, -100f, 100f)];
        using var dx = DeviceArray.Upload(rt, x);
        using var o = DeviceArray.Upload(rt, new int[32]);
        rt.Run("selftest_pack_bf16x2", new Dim3(1), new Dim3(32), 0, dx, o);
        int[] got = o.DownloadInts();
        Assert.Equal((ushort)0x3f80, Halves(got[1]).Lo);  // tie to even: down
        Assert.Equal((ushort)0x3f82, Halves(got[1]).Hi);  // tie to even: up
        for (int i = 0; i < 32; i++) Assert.Equal((Bf16(x[2 * i]), Bf16(x[2 * i + 1])), Halves(got[i]));
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Cp_async_groups_complete_at_their_wait_and_zero_fill(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        const int valid = 40;
        float[] src = Rand.Floats(12, 64 * 4);
        using var ds = DeviceArray.Upload(rt, src);
        using var o = DeviceArray.Floats(rt, 256 + 32);
        rt.Run("selftest_cp_async", new Dim3(1), new Dim3(32), 2 * 128 * sizeof(float), ds, o, valid);
        float[] got = o.Download();
        for (int i = 0; i < 32; i++)
            for (int e = 0; e < 4; e++)
            {
                int next = (i + 1) % 32;
                Assert.Equal(src[4 * next + e], got[4 * i + e]);
                Assert.Equal(32 + next < valid ? src[4 * (32 + next) + e] : 0f, got[128 + 4 * i + e]);
            }
        if (target == KernelTargets.Host)  // the emulator performs a copy only at the wait covering it
            Assert.All(got[256..], v => Assert.True(float.IsNaN(v), $"{v} read before the wait: the copy ran early"));
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Tile_loaders_give_x_times_y_and_x_times_y_transposed(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var r = new Random(5);
        float[] x = new float[256], y = new float[256];
        for (int i = 0; i < 256; i++) { x[i] = r.Next(-3, 4); y[i] = r.Next(-3, 4) * 0.25f; }
        using var dx = DeviceArray.Upload(rt, Pack(x.Select(Bf16).ToArray()));
        using var dy = DeviceArray.Upload(rt, Pack(y.Select(Bf16).ToArray()));
        using var o = DeviceArray.Floats(rt, 512);
        rt.Run("selftest_mma_tile", new Dim3(1), new Dim3(32), 0, dx, dy, o);
        float[] got = o.Download();
        for (int i = 0; i < 16; i++)
            for (int j = 0; j < 16; j++)
            {
                float xy = 0, xyt = 0;
                for (int k = 0; k < 16; k++) { xy += x[i * 16 + k] * y[k * 16 + j]; xyt += x[i * 16 + k] * y[j * 16 + k]; }
                Assert.True(xy == got[i * 16 + j], $"x·y [{i},{j}]: expected {xy}, got {got[i * 16 + j]}");
                Assert.True(xyt == got[256 + i * 16 + j], $"x·yᵀ [{i},{j}]: expected {xyt}, got {got[256 + i * 16 + j]}");
            }
    }
}
