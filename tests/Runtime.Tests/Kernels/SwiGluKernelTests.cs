using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// swiglu.cu against <see cref="SwiGluOps"/>, forward and the three gate rules. Tolerance 1e-6 abs + 1e-5 rel: the
/// kernel's sigmoid uses the fast exp (ex2.approx(x·log2 e) on the GPU, exp2f of the same product on the host),
/// the CPU op MathF.Exp. Gates span ±8 so both sigmoid tails are covered.
/// </summary>
public class SwiGluKernelTests
{
    public static IEnumerable<object[]> Cases => KernelTargets.Cross([[1, 256, 0u], [255, 256, 0u], [257, 64, 0u], [5000, 256, 3u], [4099, 96, 0u]]);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Forward_matches_cpu(string target, int n, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var (g, u, expected) = ForwardCase(n);
        using var dg = DeviceArray.Upload(rt, g);
        using var du = DeviceArray.Upload(rt, u);
        using var dh = DeviceArray.Floats(rt, n);
        rt.Run("swiglu_forward", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0, dg, du, dh, (long)n);
        Approx.Equal(expected, dh.Download(), 1e-6f, 1e-5f, "h");
    }

    /// <summary>A forward case of n elements (gates over ±8) and the CPU op's h (also Bf16KernelTests').</summary>
    internal static (float[] Gate, float[] Up, float[] H) ForwardCase(int n)
    {
        float[] g = Rand.Floats(n, n, -8f, 8f), u = Rand.Floats(n + 1, n, -2f, 2f), h = new float[n];
        SwiGluOps.Forward(g, u, h);
        return (g, u, h);
    }

    /// <summary>A backward case of n elements (gates over ±8) and the CPU op's dgate, dup (also Bf16KernelTests').</summary>
    internal static (float[] Dh, float[] Gate, float[] Up, float[] Dgate, float[] Dup) BackwardCase(int n, GateRule rule)
    {
        float[] g = Rand.Floats(n, n, -8f, 8f), u = Rand.Floats(n + 1, n, -2f, 2f), gh = Rand.Floats(n + 2, n);
        float[] eg = new float[n], eu = new float[n];
        SwiGluOps.Backward(gh, g, u, rule, eg, eu);
        return (gh, g, u, eg, eu);
    }

    public static IEnumerable<object[]> BackwardCases =>
        from c in Cases from rule in new[] { GateRule.Exact, GateRule.IdentityHalf, GateRule.Identity } select (object[])[.. c, rule];

    [Theory]
    [MemberData(nameof(BackwardCases))]
    public void Backward_matches_cpu(string target, int n, int block, uint grid, GateRule rule)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var (gh, g, u, eg, eu) = BackwardCase(n, rule);
        using var ddh = DeviceArray.Upload(rt, gh);
        using var dg = DeviceArray.Upload(rt, g);
        using var du = DeviceArray.Upload(rt, u);
        using var dgate = DeviceArray.Floats(rt, n);
        using var dup = DeviceArray.Floats(rt, n);
        int code = rule switch { GateRule.Exact => 0, GateRule.IdentityHalf => 1, _ => 2 };
        rt.Run("swiglu_backward", new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid), new Dim3((uint)block), 0,
            ddh, dg, du, dgate, dup, (long)n, code);
        Approx.Equal(eg, dgate.Download(), 1e-6f, 1e-5f, $"dgate ({rule})");
        Approx.Equal(eu, dup.Download(), 1e-6f, 1e-5f, $"dup ({rule})");
    }
}
