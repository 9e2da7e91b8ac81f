using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Tests.Kernels;

namespace NeuronTrace.Runtime.Tests.Cpu;

/// <summary><see cref="SimdMath"/> against System.Math in float64: exp within 2 ulp-ish (4e-7 rel), SwiGLU, add.</summary>
public class SimdMathTests
{
    [Fact]
    public void Exp_matches_math_exp_over_the_float_range()
    {
        // A dense sweep over [−87, 88] plus random points, through the vector body and the scalar tail (length 8k + 5).
        var x = Enumerable.Range(0, 20_000).Select(i => -87f + 175f * i / 19_999f).Concat(Rand.Floats(3, 4_005, -20f, 20f)).ToArray();
        var y = (float[])x.Clone();
        SimdMath.ExpInPlace(y);
        double worst = 0;
        for (int i = 0; i < x.Length; i++)
            worst = Math.Max(worst, Math.Abs(y[i] - Math.Exp(x[i])) / Math.Exp(x[i]));
        Assert.True(worst < 4e-7, $"worst relative error {worst:E2}");
    }

    [Fact]
    public void Exp_edge_values()
    {
        float[] x = [float.NaN, float.NegativeInfinity, -1000f, 0f, 1f, 200f, float.NaN, -0f, 0.5f];
        SimdMath.ExpInPlace(x);
        Assert.True(float.IsNaN(x[0]) && float.IsNaN(x[6]), "NaN must stay NaN");
        Assert.InRange(x[1], 0f, 2e-38f);   // clamped: a normal float, not 0 (softmax masks explicitly)
        Assert.InRange(x[2], 0f, 2e-38f);
        Assert.Equal(1f, x[3]);
        Assert.Equal(Math.E, x[4], 6);
        Assert.True(float.IsFinite(x[5]) && x[5] > 1e38f, "large inputs clamp to e^88, not infinity");
        Assert.Equal(1f, x[7]);
        Assert.Equal(Math.Exp(0.5), x[8], 6);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(1003)]
    public void SiluTimes_matches_float64(int n)
    {
        var g = Rand.Floats(n, n, -12f, 12f);
        var u = Rand.Floats(n + 1, n, -2f, 2f);
        var h = new float[n];
        SimdMath.SiluTimes(g, u, h);
        var expected = g.Select((gi, i) => (float)(gi / (1 + Math.Exp(-(double)gi)) * u[i])).ToArray();
        Approx.Equal(expected, h, 1e-7f, 1e-6f, "silu(g)·u");
    }

    [Theory]
    [InlineData(3)]
    [InlineData(16)]
    [InlineData(37)]
    public void AddInPlace_and_Sum(int n)
    {
        var a = Rand.Floats(1, n);
        var b = Rand.Floats(2, n);
        var d = (float[])a.Clone();
        SimdMath.AddInPlace(d, b);
        var e = new float[n];
        SimdMath.Sum(a, b, e);
        for (int i = 0; i < n; i++)
        {
            Assert.Equal(a[i] + b[i], d[i]);
            Assert.Equal(a[i] + b[i], e[i]);
        }
    }

    /// <summary>The fused form rounds once: exactly float(x·s + o) computed in double (exact for floats' products),
    /// which a separate multiply-then-add misses on some inputs; multiply is exact float multiplication.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    [InlineData(1001)]
    public void FusedMultiplyAdd_rounds_once_and_Multiply_is_exact(int n)
    {
        var rng = new Random(n);
        float[] x = new float[n], sc = new float[n], of = new float[n];
        for (int i = 0; i < n; i++) { x[i] = (float)(rng.NextDouble() * 4 - 2); sc[i] = (float)(rng.NextDouble() * 4 - 2); of[i] = (float)(rng.NextDouble() * 4 - 2); }
        var fused = (float[])x.Clone();
        SimdMath.FusedMultiplyAddInPlace(fused, sc, of);
        var product = (float[])x.Clone();
        SimdMath.MultiplyInPlace(product, sc);
        for (int i = 0; i < n; i++)
        {
            Assert.Equal((float)((double)x[i] * sc[i] + of[i]), fused[i]);
            Assert.Equal(x[i] * sc[i], product[i]);
        }
        Assert.Throws<ArgumentException>(() => SimdMath.MultiplyInPlace(new float[3], new float[2]));
    }
}
