using NeuronTrace.Formats;

namespace NeuronTrace.Model.Tests;

/// <summary>Llama 3.1 RoPE scaling against the published formula, for Llama 3.1 8B's settings.</summary>
public class RopeTablesTests
{
    const int HeadDim = 128;
    const double Theta = 500000, Factor = 8, Low = 1, High = 4, Original = 8192;

    static readonly LlamaConfig Llama31Head = new()
    {
        Dim = 4096, HiddenDim = 14336, Layers = 1, Heads = 32, KvHeads = 8, VocabSize = 128256, MaxSeqLen = 131072,
        RopeLayout = RopeLayout.RotateHalf, RopeTheta = (float)Theta, RopeScaling = new Llama3RopeScaling((float)Factor, (float)Low, (float)High, (int)Original),
    };

    enum Regime { Unchanged, Divided, Blended }

    /// <summary>
    /// Written out here from the Llama 3.1 reference (apply_scaling in Meta's llama repository), not from RopeTables:
    /// inv = theta^(-2i/d); wavelen = 2π/inv; below original/high keep it, above original/low divide by factor,
    /// in between blend with smooth = (original/wavelen - low) / (high - low).
    /// </summary>
    static (double Unscaled, double Scaled, Regime Regime) Reference(int i)
    {
        double inv = 1.0 / Math.Pow(Theta, 2.0 * i / HeadDim);
        double wavelen = 2 * Math.PI / inv;
        if (wavelen < Original / High) return (inv, inv, Regime.Unchanged);
        if (wavelen > Original / Low) return (inv, inv / Factor, Regime.Divided);
        double smooth = (Original / wavelen - Low) / (High - Low);
        return (inv, (1 - smooth) * inv / Factor + smooth * inv, Regime.Blended);
    }

    [Fact]
    public void InverseFrequenciesFollowTheLlama31FormulaInEveryRegime()
    {
        Assert.Equal(HeadDim, Llama31Head.HeadDim);
        var actual = RopeTables.InverseFrequencies(Llama31Head);
        Assert.Equal(HeadDim / 2, actual.Length);
        for (int i = 0; i < actual.Length; i++)
        {
            var (_, scaled, regime) = Reference(i);
            Assert.True(Math.Abs(actual[i] - scaled) <= 1e-13 * scaled, $"pair {i} ({regime}): {actual[i]:R} vs {scaled:R}");
        }

        // Wavelengths 2π·500000^(i/64) cross 2048 between pairs 28 and 29 and 8192 between 34 and 35.
        var regimes = Enumerable.Range(0, HeadDim / 2).Select(i => Reference(i).Regime).ToArray();
        Assert.All(regimes[..29], r => Assert.Equal(Regime.Unchanged, r));
        Assert.All(regimes[29..35], r => Assert.Equal(Regime.Blended, r));
        Assert.All(regimes[35..], r => Assert.Equal(Regime.Divided, r));

        // Spot values worked by hand: pair 0 has inv 1; pair 32 has inv 500000^-1/2 = √2/1000, wavelength 4442.88,
        // smooth (8192/4442.88 - 1)/3 = 0.28128, so inv·(0.71872/8 + 0.28128) = 5.24846e-4; pair 63 is 500000^-63/64 / 8.
        Assert.Equal(1.0, actual[0]);
        Assert.Equal(5.248461609929547e-4, actual[32], 1e-15);
        Assert.Equal(Math.Sqrt(2) / 1000 * 0.37112, actual[32], 1e-8);
        Assert.Equal(3.068925988914511e-7, actual[63], 1e-18);
    }

    [Fact]
    public void WithoutScalingFrequenciesAreTheBasePowers()
    {
        var actual = RopeTables.InverseFrequencies(Llama31Head with { RopeScaling = null });
        for (int i = 0; i < actual.Length; i++)
            Assert.True(Math.Abs(actual[i] - Reference(i).Unscaled) <= 1e-13 * actual[i], $"pair {i}");
    }

    [Fact]
    public void GgufFrequencyFactorsAreTheRatioOfUnscaledToScaled()
    {
        var factors = GgufFormat.Llama3FrequencyFactors(Llama31Head.RopeScaling!, HeadDim, Theta);
        Assert.Equal(HeadDim / 2, factors.Length);
        for (int i = 0; i < factors.Length; i++)
        {
            var (unscaled, scaled, regime) = Reference(i);
            float expected = (float)(unscaled / scaled);
            Assert.True(Math.Abs(factors[i] - expected) <= 1e-6f * expected, $"pair {i} ({regime}): {factors[i]} vs {expected}");
            if (regime == Regime.Unchanged) Assert.Equal(1f, factors[i]);
            if (regime == Regime.Divided) Assert.Equal(8f, factors[i]);
            if (regime == Regime.Blended) Assert.InRange(factors[i], 1f, 8f);
        }
        // Pair 32 by hand: 1 / 0.37112 = 2.6945.
        Assert.Equal(2.6945, factors[32], 1e-3);
    }
}
