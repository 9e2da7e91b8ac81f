using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;

namespace NeuronTrace.Runtime.Tests.Kernels;

/// <summary>
/// ablation.cu's mean_ablate against <see cref="CpuBackend.MeanAblate"/> on the same inputs: odd widths (partial last
/// words), padding rows, rows outside the masks, block sizes that are not warps, and grids smaller than the data (the
/// grid-stride loop). A copy per element on both sides, so exact.
/// </summary>
public class AblationKernelTests
{
    // rows, width, mask rows, mean rows, block, grid (0 = enough blocks)
    public static IEnumerable<object[]> Cases => KernelTargets.Cross([
        [1, 1, 1, 1, 32, 0u], [7, 33, 3, 2, 256, 0u], [13, 70, 9, 4, 64, 2u], [20, 100, 5, 6, 33, 0u], [9, 257, 4, 3, 128, 1u]]);

    [Theory]
    [MemberData(nameof(Cases))]
    public void Mean_ablate_matches_cpu(string target, int rows, int width, int maskRows, int meanRows, int block, uint grid)
    {
        using var rt = KernelTargets.Open(target);
        if (rt is null) return;
        float[] x = Rand.Floats(rows, rows * width, -2f, 2f), means = Rand.Floats(width, meanRows * width, 5f, 6f);
        var masks = MeanAblateTests.Masks(rows + width, maskRows, width);
        uint[] bits = MeanAblateTests.Bits(masks, width);
        var (keepRow, meanRow) = MeanAblateTests.RowMaps(maskRows, rows, maskRows, meanRows);

        var expected = CpuBackend.Wrap((float[])x.Clone(), rows, width);
        CpuBackend.Instance.MeanAblate(expected, CpuBackend.Wrap(means, meanRows, width), bits, keepRow, meanRow);

        using var dx = DeviceArray.Upload(rt, x);
        using var dm = DeviceArray.Upload(rt, means);
        using var db = DeviceArray.Upload(rt, MemoryMarshal.Cast<uint, int>(bits).ToArray());
        using var dk = DeviceArray.Upload(rt, keepRow);
        using var dr = DeviceArray.Upload(rt, meanRow);
        long n = (long)rows * width;
        var g = new Dim3(grid == 0 ? KernelLaunch.Blocks(n, block) : grid);
        rt.Run("mean_ablate", g, new Dim3((uint)block), 0, dx, dm, db, dk, dr, rows, width, AblationMask.WordsPerRow(width));
        Approx.Equal(expected.Data, dx.Download(), 0, 0, "mean_ablate");
    }
}
