using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// rope.cu against <see cref="RopeOps"/>, both pair layouts, forward and inverse; and inverse ∘ forward = identity.
/// Tolerance 1e-6 abs + 1e-6 rel: the same two products per element (a GPU may fuse one into an FMA).
/// </summary>
public class RopeKernelTests
{
    // rows = batch · seqLen (row r is position r mod seqLen), heads, headDim, seqLen, block
    public static IEnumerable<object[]> Shapes =>
    [
        [1, 1, 2, 1, 32], [6, 3, 8, 3, 256], [10, 4, 64, 5, 128], [7, 2, 6, 7, 33], [34, 2, 16, 17, 256],
    ];

    public static IEnumerable<object[]> Cases => KernelTargets.Cross(
        from s in Shapes from interleaved in new[] { true, false } from inverse in new[] { false, true } select (object[])[.. s, interleaved, inverse]);

    /// <summary>A case's x, the CPU op's rotation of it, and the tables (also Bf16KernelTests').</summary>
    internal static (float[] X, float[] Expected, float[] Cos, float[] Sin) Case(int rows, int heads, int headDim, int seqLen, bool interleaved, bool inverse)
    {
        var (cos, sin) = Tables(seqLen, headDim);
        float[] x = Rand.Floats(rows * heads + headDim, rows * heads * headDim, -3f, 3f);
        float[] expected = (float[])x.Clone();
        RopeOps.Apply(expected, rows, heads, headDim, seqLen, cos, sin, interleaved, inverse);
        return (x, expected, cos, sin);
    }

    internal static (float[] Cos, float[] Sin) Tables(int seqLen, int headDim)
    {
        int half = headDim / 2;
        float[] c = new float[seqLen * half], s = new float[seqLen * half];
        for (int p = 0; p < seqLen; p++)
            for (int i = 0; i < half; i++)
            {
                double theta = p * Math.Pow(10000.0, -2.0 * i / headDim);
                c[p * half + i] = (float)Math.Cos(theta);
                s[p * half + i] = (float)Math.Sin(theta);
            }
        return (c, s);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Matches_cpu(string target, int rows, int heads, int headDim, int seqLen, int block, bool interleaved, bool inverse)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        var (x, expected, cos, sin) = Case(rows, heads, headDim, seqLen, interleaved, inverse);

        using var dx = DeviceArray.Upload(rt, x);
        using var dc = DeviceArray.Upload(rt, cos);
        using var ds = DeviceArray.Upload(rt, sin);
        long pairs = (long)rows * heads * (headDim / 2);
        rt.Run("rope_apply", new Dim3(KernelLaunch.Blocks(pairs, block)), new Dim3((uint)block), 0, dx, dc, ds,
            rows, heads, headDim, seqLen, interleaved ? 1 : 0, inverse ? 1 : 0);
        Approx.Equal(expected, dx.Download(), 1e-6f, 1e-6f, "rotated x");
    }

    [Theory]
    [MemberData(nameof(KernelTargets.All), MemberType = typeof(KernelTargets))]
    public void Inverse_undoes_forward_with_a_small_grid(string target)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        const int rows = 12, heads = 3, headDim = 10, seqLen = 4;
        var (cos, sin) = Tables(seqLen, headDim);
        float[] x = Rand.Floats(9, rows * heads * headDim);
        using var dx = DeviceArray.Upload(rt, x);
        using var dc = DeviceArray.Upload(rt, cos);
        using var ds = DeviceArray.Upload(rt, sin);
        // 2 blocks of 32 for 180 pairs: the grid-stride loop must cover the rest
        rt.Run("rope_apply", new Dim3(2), new Dim3(32), 0, dx, dc, ds, rows, heads, headDim, seqLen, 1, 0);
        rt.Run("rope_apply", new Dim3(2), new Dim3(32), 0, dx, dc, ds, rows, heads, headDim, seqLen, 1, 1);
        Approx.Equal(x, dx.Download(), 1e-6f, 1e-6f, "inverse(forward(x))");
    }
}
