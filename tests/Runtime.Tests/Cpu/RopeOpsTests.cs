using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Tests.Kernels;

namespace NeuronTrace.Runtime.Tests.Cpu;

/// <summary>
/// <see cref="RopeOps"/> against the rotation written out per pair in float64, both layouts, forward and inverse, head
/// dims on the vector paths (8, 16, 64) and off them (2, 6, 12), rows spanning several sequences and rows &lt; seqLen.
/// </summary>
public class RopeOpsTests
{
    public static IEnumerable<object[]> Cases =>
        from shape in new[] { new[] { 1, 1, 2, 1 }, [6, 3, 8, 3], [10, 4, 64, 5], [7, 2, 6, 7], [34, 2, 16, 17], [3, 5, 12, 9], [128, 8, 8, 64] }
        from interleaved in new[] { true, false }
        from inverse in new[] { false, true }
        select new object[] { shape[0], shape[1], shape[2], shape[3], interleaved, inverse };

    [Theory, MemberData(nameof(Cases))]
    public void Matches_the_pairwise_rotation(int rows, int heads, int headDim, int seqLen, bool interleaved, bool inverse)
    {
        int half = headDim / 2;
        float[] cos = new float[seqLen * half], sin = new float[seqLen * half];
        for (int p = 0; p < seqLen; p++)
            for (int i = 0; i < half; i++)
            {
                double theta = p * Math.Pow(10000.0, -2.0 * i / headDim);
                cos[p * half + i] = (float)Math.Cos(theta);
                sin[p * half + i] = (float)Math.Sin(theta);
            }
        var x = Rand.Floats(rows * 31 + headDim, rows * heads * headDim, -3f, 3f);
        var expected = new float[x.Length];
        for (int r = 0; r < rows; r++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < half; i++)
                {
                    int pos = r % seqLen, o = r * heads * headDim + h * headDim;
                    int i0 = interleaved ? 2 * i : i, i1 = interleaved ? 2 * i + 1 : i + half;
                    double c = cos[pos * half + i], s = (inverse ? -1 : 1) * (double)sin[pos * half + i];
                    expected[o + i0] = (float)(x[o + i0] * c - x[o + i1] * s);
                    expected[o + i1] = (float)(x[o + i0] * s + x[o + i1] * c);
                }
        RopeOps.Apply(x, rows, heads, headDim, seqLen, cos, sin, interleaved, inverse);
        Approx.Equal(expected, x, 1e-6f, 1e-6f, "rotated");
    }
}
