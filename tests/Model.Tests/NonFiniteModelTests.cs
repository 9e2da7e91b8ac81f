using NeuronTrace.Model;
using NeuronTrace.TestSupport;
using NeuronTrace.Formats;

namespace NeuronTrace.Model.Tests;

/// <summary>Numbers that load without complaint but make every logit NaN are refused at load, named.</summary>
public class NonFiniteModelTests
{
    [Theory]
    [InlineData(float.NaN, "layer 1 w2")]
    [InlineData(float.PositiveInfinity, "token embedding")]
    [InlineData(float.NegativeInfinity, "final norm")]
    public void ANonFiniteWeightIsNamed(float value, string tensor)
    {
        var w = RandomLlama.Create(RandomLlama.SmallConfig(), seed: 4);
        float[] target = tensor switch { "layer 1 w2" => w.Layers[1].W2, "token embedding" => w.TokenEmbedding, _ => w.FinalNorm };
        // Past the first vectorised block and not at a block boundary, so both the SIMD and the scalar scan are used.
        int at = Math.Min(target.Length - 1, 77);
        target[at] = value;
        var e = Assert.Throws<ModelFormatException>(() => w.Validate("model.bin"));
        Assert.Contains(tensor, e.Message);
        Assert.Contains($"index {at}", e.Message);
        Assert.StartsWith("model.bin", e.Message);
    }

    [Fact]
    public void FiniteWeightsPass()
    {
        var w = RandomLlama.Create(RandomLlama.SmallConfig(), seed: 4);
        w.Validate("model.bin");
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        loaded.Weights.Validate("stories260K.bin");
    }

    [Theory]
    [InlineData(0f, 10000f, "norm epsilon")]
    [InlineData(-1e-5f, 10000f, "norm epsilon")]
    [InlineData(float.NaN, 10000f, "norm epsilon")]
    [InlineData(1e-5f, 0f, "rope theta")]
    [InlineData(1e-5f, float.PositiveInfinity, "rope theta")]
    public void OutOfRangeHyperParametersAreRefused(float eps, float theta, string named)
    {
        var c = RandomLlama.SmallConfig() with { NormEps = eps, RopeTheta = theta };
        var e = Assert.Throws<ModelFormatException>(() => c.Validate("config.json"));
        Assert.Contains(named, e.Message);
    }

    [Fact]
    public void RopeScalingNeedsHighAboveLow()
    {
        var c = RandomLlama.SmallConfig() with { RopeScaling = new Llama3RopeScaling(8f, 4f, 1f, 8192) };
        Assert.Contains("high > low", Assert.Throws<ModelFormatException>(() => c.Validate("config.json")).Message);
        (RandomLlama.SmallConfig() with { RopeScaling = new Llama3RopeScaling(8f, 1f, 4f, 8192) }).Validate("config.json");
    }
}
