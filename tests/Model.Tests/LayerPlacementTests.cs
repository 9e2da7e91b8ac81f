using NeuronTrace.Model;
using Xunit;

namespace NeuronTrace.Model.Tests;

/// <summary><see cref="LayerPlacement.BalancedStarts(long[], long, long, int)"/> against every way of cutting the layers (brute force).</summary>
public class LayerPlacementTests
{
    [Fact]
    public void Hand_cases()
    {
        // four equal layers, embedding and head of two layers' size each: 2+2 | 2+2
        Assert.Equal([0, 2], LayerPlacement.BalancedStarts([1, 1, 1, 1], 2, 2, 2));
        // a heavy embedding and no head: 3+1 | 1+1+1
        Assert.Equal([0, 1], LayerPlacement.BalancedStarts([1, 1, 1, 1], 3, 0, 2));
        Assert.Equal([0], LayerPlacement.BalancedStarts([5, 1], 0, 0, 1));
        Assert.Equal([0, 1, 2], LayerPlacement.BalancedStarts([5, 1, 7], 0, 0, 3));
    }

    [Fact]
    public void The_largest_device_is_as_small_as_any_cut_allows()
    {
        var rng = new Random(7);
        for (int trial = 0; trial < 300; trial++)
        {
            int n = rng.Next(1, 9), parts = rng.Next(1, n + 1);
            long[] layer = Enumerable.Range(0, n).Select(_ => (long)rng.Next(1, 20)).ToArray();
            long first = rng.Next(0, 30), last = rng.Next(0, 30);
            int[] starts = LayerPlacement.BalancedStarts(layer, first, last, parts);
            Assert.Equal(parts, starts.Length);
            Assert.Equal(0, starts[0]);
            for (int p = 1; p < parts; p++) Assert.True(starts[p] > starts[p - 1], "each device needs a layer");
            Assert.Equal(Best(layer, first, last, parts), MaxLoad(layer, first, last, starts));
        }
    }

    static long MaxLoad(long[] layer, long first, long last, int[] starts)
    {
        long max = 0;
        for (int p = 0; p < starts.Length; p++)
        {
            int end = p + 1 < starts.Length ? starts[p + 1] : layer.Length;
            long load = layer[starts[p]..end].Sum() + (p == 0 ? first : 0) + (p == starts.Length - 1 ? last : 0);
            max = Math.Max(max, load);
        }
        return max;
    }

    // every choice of parts − 1 cut points among the n − 1 gaps
    static long Best(long[] layer, long first, long last, int parts)
    {
        long best = long.MaxValue;
        int n = layer.Length;
        for (int mask = 0; mask < 1 << (n - 1); mask++)
        {
            if (System.Numerics.BitOperations.PopCount((uint)mask) != parts - 1) continue;
            var starts = new List<int> { 0 };
            for (int g = 0; g < n - 1; g++) if ((mask & (1 << g)) != 0) starts.Add(g + 1);
            best = Math.Min(best, MaxLoad(layer, first, last, [.. starts]));
        }
        return best;
    }
}
