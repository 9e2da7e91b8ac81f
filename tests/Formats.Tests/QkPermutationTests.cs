using Xunit;
using NeuronTrace.Formats;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

public class QkPermutationTests
{
    [Fact]
    public void MovesEvenRowsToTheFirstHalfOfEachHead()
    {
        // 2 heads of 4 rows, 1 column: each value is its row index.
        float[] w = [0, 1, 2, 3, 4, 5, 6, 7];
        var p = QkPermutation.ToRotateHalf(w, heads: 2, rows: 8, cols: 1);
        Assert.Equal([0f, 2, 1, 3, 4, 6, 5, 7], p);
        Assert.Equal(w, QkPermutation.ToInterleaved(p, 2, 8, 1));
    }

    [Fact]
    public void MatchesTheViewTransposeReshapeDefinition()
    {
        // permute(w, h, r, c) = w.view(h, r/h/2, 2, c).transpose(1, 2).reshape(r, c), computed by index arithmetic.
        int h = 4, r = 32, c = 3, half = r / h / 2;
        var w = Enumerable.Range(0, r * c).Select(i => (float)i).ToArray();
        var p = QkPermutation.ToRotateHalf(w, h, r, c);
        for (int hi = 0; hi < h; hi++)
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < half; i++)
                    for (int col = 0; col < c; col++)
                    {
                        int outRow = (hi * 2 + j) * half + i;      // index in the transposed (h, 2, half) view
                        int inRow = (hi * half + i) * 2 + j;       // index in the original (h, half, 2) view
                        Assert.Equal(w[inRow * c + col], p[outRow * c + col]);
                    }
    }

    [Fact]
    public void ToLayoutIsANoOpForTheSameLayoutAndInvertible()
    {
        var w = FormatTestHelpers.Stories;
        Assert.Same(w, QkPermutation.ToLayout(w, RopeLayout.Interleaved));
        var hf = QkPermutation.ToLayout(w, RopeLayout.RotateHalf);
        Assert.Equal(RopeLayout.RotateHalf, hf.Config.RopeLayout);
        Assert.False(FormatTestHelpers.BitEqual(w.Layers[0].Wq, hf.Layers[0].Wq));
        Assert.Same(w.Layers[0].Wv, hf.Layers[0].Wv);
        FormatTestHelpers.AssertSameArrays(w, QkPermutation.ToLayout(hf, RopeLayout.Interleaved));
    }
}
