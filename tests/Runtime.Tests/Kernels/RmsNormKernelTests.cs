using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// rmsnorm.cu against <see cref="RmsNormOps"/>. Tolerance 1e-5 abs + 1e-5 rel (forward, FrozenScale) and 1e-5 abs +
/// 1e-4 rel (Exact backward, whose projection term cancels): the kernel sums in fp32 over a tree, the CPU op in fp64.
/// Block sizes from one warp to 1024 threads, widths below, at and above the block size, and not multiples of 32.
/// </summary>
public class RmsNormKernelTests
{
    public static IEnumerable<object[]> Cases => KernelTargets.Cross(
    [
        [1, 1, 32], [3, 31, 32], [5, 288, 64], [2, 1000, 256], [7, 65, 96], [4, 4096, 1024], [9, 100, 256],
    ]);

    public const float Eps = 1e-5f;

    /// <summary>A forward case: x over ±2, gains in [0.5, 1.5], and the CPU op's y and rstd at <see cref="Eps"/> (also Bf16KernelTests').</summary>
    internal static (float[] X, float[] W, float[] Y, float[] Rstd) ForwardCase(int rows, int dim)
    {
        float[] x = Rand.Floats(rows * 7 + dim, rows * dim, -2f, 2f), w = Rand.Floats(dim, dim, 0.5f, 1.5f);
        float[] y = new float[x.Length], rstd = new float[rows];
        RmsNormOps.Forward(x, w, Eps, y, rstd, rows, dim);
        return (x, w, y, rstd);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Forward_matches_cpu(string target, int rows, int dim, int block)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var (x, w, y, rstd) = ForwardCase(rows, dim);

        using var dx = DeviceArray.Upload(rt, x);
        using var dw = DeviceArray.Upload(rt, w);
        using var dy = DeviceArray.Floats(rt, x.Length);
        using var ds = DeviceArray.Floats(rt, rows);
        rt.Run("rmsnorm_forward", new Dim3((uint)rows), new Dim3((uint)block), 0, dx, dw, Eps, dy, ds, rows, dim);
        Approx.Equal(rstd, ds.Download(), 0, 1e-5f, "rstd");
        Approx.Equal(y, dy.Download(), 1e-5f, 1e-5f, "y");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Fused_residual_add_and_norm_equals_the_add_then_the_norm_bit_for_bit(string target, int rows, int dim, int block)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        float[] x = Rand.Floats(rows + 2 * dim, rows * dim, -2f, 2f), delta = Rand.Floats(rows + 3, rows * dim, -1f, 1f), w = Rand.Floats(dim, dim, 0.5f, 1.5f);
        const float eps = 1e-5f;
        float[] mid = x.Zip(delta, (a, b) => a + b).ToArray();
        float[] y = new float[x.Length], rstd = new float[rows];
        RmsNormOps.Forward(mid, w, eps, y, rstd, rows, dim);

        using var dx = DeviceArray.Upload(rt, x);
        using var dd = DeviceArray.Upload(rt, delta);
        using var dw = DeviceArray.Upload(rt, w);
        using var dm = DeviceArray.Upload(rt, mid);
        using var refY = DeviceArray.Floats(rt, x.Length);
        using var refS = DeviceArray.Floats(rt, rows);
        rt.Run("rmsnorm_forward", new Dim3((uint)rows), new Dim3((uint)block), 0, dm, dw, eps, refY, refS, rows, dim);
        using var sum = DeviceArray.Floats(rt, x.Length);
        using var fy = DeviceArray.Floats(rt, x.Length);
        using var fs = DeviceArray.Floats(rt, rows);
        rt.Run("add_rmsnorm_forward", new Dim3((uint)rows), new Dim3((uint)block), 0, dx, dd, dw, eps, sum, fy, fs, (nint)0, rows, dim);
        Assert.Equal(mid, sum.Download());
        Assert.Equal(refS.Download(), fs.Download());
        Assert.Equal(refY.Download(), fy.Download());
        Approx.Equal(y, fy.Download(), 1e-5f, 1e-5f, "y against the CPU op");
    }

    [Theory]
    [MemberData(nameof(BackwardCases))]
    public void Backward_matches_cpu(string target, int rows, int dim, int block, NormRule rule)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        float[] x = Rand.Floats(rows + dim, rows * dim, -2f, 2f), w = Rand.Floats(dim + 1, dim, 0.5f, 1.5f);
        float[] gy = Rand.Floats(rows + 3, rows * dim), dx0 = Rand.Floats(rows + 4, rows * dim);
        float[] y = new float[x.Length], rstd = new float[rows];
        RmsNormOps.Forward(x, w, 1e-5f, y, rstd, rows, dim);
        float[] expected = (float[])dx0.Clone();
        RmsNormOps.Backward(gy, x, w, rstd, rule, expected, rows, dim);

        using var ddy = DeviceArray.Upload(rt, gy);
        using var dx = DeviceArray.Upload(rt, x);
        using var dw = DeviceArray.Upload(rt, w);
        using var ds = DeviceArray.Upload(rt, rstd);
        using var ddx = DeviceArray.Upload(rt, dx0);  // accumulates, like the CPU op
        rt.Run("rmsnorm_backward", new Dim3((uint)rows), new Dim3((uint)block), 0, ddy, dx, dw, ds, ddx, rows, dim, rule == NormRule.Exact ? 1 : 0);
        Approx.Equal(expected, ddx.Download(), 1e-5f, rule == NormRule.Exact ? 1e-4f : 1e-5f, $"dx ({rule})");
    }

    public static IEnumerable<object[]> BackwardCases =>
        from c in Cases from rule in new[] { NormRule.Exact, NormRule.FrozenScale } select (object[])[.. c, rule];
}
