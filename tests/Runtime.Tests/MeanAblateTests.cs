using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Tests.Kernels;

namespace NeuronTrace.Runtime.Tests;

/// <summary>
/// <see cref="CpuBackend.MeanAblate"/> and <see cref="AblationMask"/> against a reference written from the definition
/// on plain bool masks (no bits): widths around the 32-bit words and the 8-lane SIMD groups, padding rows, rows
/// outside the masks, all-kept and all-ablated words, and a size that takes the multi-threaded path. The op only
/// copies values, so the comparison is exact.
/// </summary>
public class MeanAblateTests
{
    /// <summary>A mask row per (maskRows), random with some all-true / all-false runs so the word shortcuts are hit.</summary>
    public static bool[][] Masks(int seed, int maskRows, int width)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, maskRows).Select(m => Enumerable.Range(0, width).Select(i => (m % 4) switch
        {
            0 => true,
            1 => false,
            2 => (i / 32) % 2 == 0,
            _ => rng.NextDouble() < 0.5,
        }).ToArray()).ToArray();
    }

    /// <summary>The bit layout by the definition: bit i % 32 of word i / 32, rows padded to whole words.</summary>
    public static uint[] Bits(bool[][] masks, int width)
    {
        int words = (width + 31) / 32;
        var bits = new uint[masks.Length * words];
        for (int m = 0; m < masks.Length; m++)
            for (int i = 0; i < width; i++)
                if (masks[m][i]) bits[m * words + i / 32] |= 1u << (i % 32);
        return bits;
    }

    /// <summary>Per row: −1 mean row (padding) every 5th row, −1 keep row every 3rd, else random rows.</summary>
    public static (int[] KeepRow, int[] MeanRow) RowMaps(int seed, int rows, int maskRows, int meanRows)
    {
        var rng = new Random(seed);
        var keep = new int[rows];
        var mean = new int[rows];
        for (int r = 0; r < rows; r++)
        {
            mean[r] = r % 5 == 4 ? -1 : rng.Next(meanRows);
            keep[r] = r % 3 == 2 ? -1 : rng.Next(maskRows);
        }
        return (keep, mean);
    }

    public static float[] Reference(float[] x, int width, float[] means, bool[][] masks, int[] keepRow, int[] meanRow)
    {
        var y = (float[])x.Clone();
        for (int r = 0; r < keepRow.Length; r++)
        {
            if (meanRow[r] < 0) continue;
            for (int i = 0; i < width; i++)
            {
                bool keep = keepRow[r] >= 0 && masks[keepRow[r]][i];
                if (!keep) y[r * width + i] = means[meanRow[r] * width + i];
            }
        }
        return y;
    }

    [Theory]
    [InlineData(7, 1, 3, 2)]
    [InlineData(11, 31, 5, 3)]
    [InlineData(10, 33, 4, 6)]
    [InlineData(13, 70, 9, 4)]
    [InlineData(5, 100, 2, 7)]
    [InlineData(301, 3500, 8, 5)]   // 1.05 M values: the multi-threaded path
    public void Matches_the_definition(int rows, int width, int maskRows, int meanRows)
    {
        float[] x = Rand.Floats(rows, rows * width, -2f, 2f), means = Rand.Floats(width, meanRows * width, 5f, 6f);
        var masks = Masks(rows + width, maskRows, width);
        var (keepRow, meanRow) = RowMaps(maskRows, rows, maskRows, meanRows);
        var expected = Reference(x, width, means, masks, keepRow, meanRow);

        var t = CpuBackend.Wrap((float[])x.Clone(), rows, width);
        CpuBackend.Instance.MeanAblate(t, CpuBackend.Wrap(means, meanRows, width), Bits(masks, width), keepRow, meanRow);

        Assert.Equal(expected, t.Data);
        // Not vacuous: some values were replaced and some kept.
        Assert.Contains(t.Data, v => v >= 5f);
        Assert.Contains(t.Data, v => v < 5f);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(31)]
    [InlineData(32)]
    [InlineData(33)]
    [InlineData(95)]
    [InlineData(200)]
    public void PackRow_writes_the_documented_layout(int width)
    {
        var masks = Masks(width, 4, width);
        var expected = Bits(masks, width);
        int words = AblationMask.WordsPerRow(width);
        var packed = new uint[masks.Length * words];
        for (int m = 0; m < masks.Length; m++) AblationMask.PackRow(masks[m], packed.AsSpan(m * words, words));
        Assert.Equal(expected, packed);
        for (int m = 0; m < masks.Length; m++)
            for (int i = 0; i < width; i++) Assert.Equal(masks[m][i], AblationMask.IsKept(packed, words, m, i));
    }

    [Fact]
    public void Refuses_rows_outside_the_masks_or_means()
    {
        var cpu = CpuBackend.Instance;
        var x = new CpuTensor(3, 40);
        var means = new CpuTensor(2, 40);
        var bits = new uint[2 * 2];   // two mask rows of two words
        Assert.Throws<ArgumentOutOfRangeException>(() => cpu.MeanAblate(x, means, bits, [0, 2, -1], [0, 0, 0]));
        Assert.Throws<ArgumentOutOfRangeException>(() => cpu.MeanAblate(x, means, bits, [0, 1, -1], [0, 2, 0]));
        Assert.Throws<ArgumentException>(() => cpu.MeanAblate(x, means, bits, [0, 1], [0, 0]));
        Assert.Throws<ArgumentException>(() => cpu.MeanAblate(x, means, new uint[3], [0, 1, -1], [0, 0, 0]));
        Assert.Throws<ArgumentException>(() => cpu.MeanAblate(x, new CpuTensor(2, 39), bits, [0, 1, -1], [0, 0, 0]));
    }
}
