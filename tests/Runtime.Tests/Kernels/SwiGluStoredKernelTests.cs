using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// The swiglu.cu kernels of the stored bf16 state (IBackend.StoreForBackward): the forward that also writes the rounded
/// gate and up, and swiglu_backward_bf16_stored, SwiGLU's backward reading them, against <see cref="SwiGluOps.Backward"/>:
/// 1. on the bf16-rounded gate and up, with the fp32 kernel's tolerance (1e-6 abs + 1e-5 rel: the fast exp), so the
///    kernel is the fp32 op on its stored inputs, and its [dgate | dup] operand is exactly the rounding of its outputs;
/// 2. on the unrounded fp32 gate and up (what the fp32 storage gave), within the stated bf16 tolerance: each input is
///    off by at most 2^-9 of itself, |g| ≤ 8 and |u| ≤ 2 here, |silu'| ≤ 1.1 and |silu''| ≤ 0.5, so
///    |Δdup| ≤ 1.1·8·2^-9·|dh| ≈ 0.017·|dh| and |Δdgate| ≤ (2·0.5·8·2^-9 + 2^-9·|dgate|/|dh|)·|dh|: 2e-2 abs (|dh| ≤ 1)
///    plus 2^-8 rel.
/// </summary>
public class SwiGluStoredKernelTests
{
    // The same shapes, grids and rules as the fp32-input bf16 backward's tests.
    public static IEnumerable<object[]> Cases => Bf16KernelTests.GateGradCases;

    [Theory]
    [MemberData(nameof(Cases))]
    public void Backward_from_bf16_gate_and_up_is_the_cpu_op_on_the_rounded_inputs(string target, int rows, int width, int block, uint grid, GateRule rule)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        int n = rows * width;
        var (gh, g, u, fromFp32Gate, fromFp32Up) = SwiGluKernelTests.BackwardCase(n, rule);
        Assert.True(gh.All(x => MathF.Abs(x) <= 1f), "the tolerance below assumes |dh| ≤ 1");
        ushort[] g16 = g.Select(Bf16KernelTests.Round).ToArray(), u16 = u.Select(Bf16KernelTests.Round).ToArray();
        float[] gr = g16.Select(Widen).ToArray(), ur = u16.Select(Widen).ToArray();
        float[] eg = new float[n], eu = new float[n];
        SwiGluOps.Backward(gh, gr, ur, rule, eg, eu);

        using var ddh = DeviceArray.Upload(rt, gh);
        using var dg = Bf16KernelTests.UploadHalves(rt, g16);
        using var du = Bf16KernelTests.UploadHalves(rt, u16);
        using var dgate = DeviceArray.Floats(rt, n);
        using var dup = DeviceArray.Floats(rt, n);
        using var d16 = DeviceArray.Floats(rt, n);   // 2n bf16 values
        int code = rule switch { GateRule.Exact => 0, GateRule.IdentityHalf => 1, _ => 2 };
        rt.Run("swiglu_backward_bf16_stored", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0,
            ddh, dg, du, dgate, dup, d16, rows, width, code);
        float[] gotG = dgate.Download(), gotU = dup.Download();
        Approx.Equal(eg, gotG, 1e-6f, 1e-5f, $"dgate on the rounded inputs ({rule})");
        Approx.Equal(eu, gotU, 1e-6f, 1e-5f, $"dup on the rounded inputs ({rule})");
        var halves = Bf16KernelTests.Halves(d16, 2L * n);
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < width; j++)
            {
                Assert.True(Bf16KernelTests.Round(gotG[r * width + j]) == halves[2 * r * width + j], $"[{r}, {j}] dgate16 ({rule})");
                Assert.True(Bf16KernelTests.Round(gotU[r * width + j]) == halves[2 * r * width + width + j], $"[{r}, {width + j}] dup16 ({rule})");
            }

        Approx.Equal(fromFp32Gate, gotG, 2e-2f, 1f / 256, $"dgate against the fp32 inputs ({rule})");
        Approx.Equal(fromFp32Up, gotU, 2e-2f, 1f / 256, $"dup against the fp32 inputs ({rule})");
    }

    public static IEnumerable<object[]> ForwardCases => KernelTargets.Cross([[1, 256, 0u], [255, 256, 0u], [5000, 256, 3u], [4099, 96, 0u]]);

    /// <summary>swiglu_forward_bf16_store: h as the CPU op (the fp32 kernel's tolerance), h16 its rounding, and g16, u16
    /// the rounding of the inputs, exactly (what the forward stores for the backward).</summary>
    [Theory]
    [MemberData(nameof(ForwardCases))]
    public void Forward_stores_h_and_the_rounded_gate_and_up(string target, int n, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var (g, u, expected) = SwiGluKernelTests.ForwardCase(n);
        using var dg = DeviceArray.Upload(rt, g);
        using var du = DeviceArray.Upload(rt, u);
        using var dh = DeviceArray.Floats(rt, n);
        using var h16 = DeviceArray.Floats(rt, (n + 1) / 2);
        using var g16 = DeviceArray.Floats(rt, (n + 1) / 2);
        using var u16 = DeviceArray.Floats(rt, (n + 1) / 2);
        rt.Run("swiglu_forward_bf16_store", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0, dg, du, dh, h16, g16, u16, (long)n);
        CheckStoredForward(expected, dh, h16, g16, u16, g, u);
    }

    public static IEnumerable<object[]> StackedCases => KernelTargets.Cross([[1, 1, 32, 0u], [3, 100, 256, 0u], [8, 96, 64, 2u], [17, 33, 256, 0u]]);

    /// <summary>swiglu_forward_bf16_stacked: gate and up read in place from the [rows, 2·width] output of the stacked
    /// [W1; W3] product (row r: gate, then up): h as the CPU op on the same values (the fp32 kernel's tolerance), h16 its
    /// rounding, g16 and u16 the rounding of the gate and up halves, exactly (what the store kernel writes).</summary>
    [Theory]
    [MemberData(nameof(StackedCases))]
    public void Stacked_forward_reads_gate_and_up_halves_in_place(string target, int rows, int width, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        int n = rows * width;
        var (g, u, expected) = SwiGluKernelTests.ForwardCase(n);
        var stacked = new float[2 * n];
        for (int r = 0; r < rows; r++)
        {
            Array.Copy(g, r * width, stacked, r * 2 * width, width);
            Array.Copy(u, r * width, stacked, r * 2 * width + width, width);
        }
        using var ds = DeviceArray.Upload(rt, stacked);
        using var dh = DeviceArray.Floats(rt, n);
        using var h16 = DeviceArray.Floats(rt, (n + 1) / 2);
        using var g16 = DeviceArray.Floats(rt, (n + 1) / 2);
        using var u16 = DeviceArray.Floats(rt, (n + 1) / 2);
        rt.Run("swiglu_forward_bf16_stacked", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0,
            ds, (long)rows, width, dh, h16, g16, u16);
        CheckStoredForward(expected, dh, h16, g16, u16, g, u);
    }

    /// <summary>h as the CPU op (the fp32 kernel's tolerance); h16 its rounding and g16, u16 the rounding of gate and up, exactly.</summary>
    static void CheckStoredForward(float[] expected, DeviceArray dh, DeviceArray h16, DeviceArray g16, DeviceArray u16, float[] g, float[] u)
    {
        int n = expected.Length;
        var got = dh.Download();
        Approx.Equal(expected, got, 1e-6f, 1e-5f, "h");
        ushort[] hh = Bf16KernelTests.Halves(h16, n), gh = Bf16KernelTests.Halves(g16, n), uh = Bf16KernelTests.Halves(u16, n);
        for (int i = 0; i < n; i++)
        {
            Assert.True(Bf16KernelTests.Round(got[i]) == hh[i], $"h16[{i}]");
            Assert.True(Bf16KernelTests.Round(g[i]) == gh[i], $"g16[{i}]: expected 0x{Bf16KernelTests.Round(g[i]):X4}, got 0x{gh[i]:X4}");
            Assert.True(Bf16KernelTests.Round(u[i]) == uh[i], $"u16[{i}]");
        }
    }

    static float Widen(ushort b) => BitConverter.Int32BitsToSingle(b << 16);
}
