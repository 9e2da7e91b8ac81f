using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>Numbers out of range are refused before any work starts: one line on stderr, nothing else printed.</summary>
[Collection("console")]
public class OptionRangeTests
{
    static void Refused((int Exit, string Out, string Err) r, int exit, string mustContain)
    {
        CliHarness.AssertOneLineError(r, exit, mustContain);
        Assert.Equal("", r.Out.Trim());
    }

    [Theory]
    [InlineData("--target", "1.5", "--target 1.5")]
    [InlineData("--target", "0", "--target 0")]
    [InlineData("--target", "NaN", "--target NaN")]
    [InlineData("--train", "0", "--train must be at least 1")]
    [InlineData("--relp-attention", "foo", "unknown --relp-attention")]
    public void TraceChecksItsNumbersBeforeLoadingTheModel(string option, string value, string message)
    {
        string dir = Path.Combine(RepoPaths.TempDir("range"), "run");
        Refused(CliHarness.Run("trace", option, value, "--out", dir), 2, message);
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void TraceRefusesMoreTrainingExamplesThanTheTaskLeavesToEvaluate()
    {
        string dir = Path.Combine(RepoPaths.TempDir("range"), "run");
        var r = CliHarness.Run("trace", "--train", "9999", "--out", dir);
        Assert.Equal(1, r.Exit);
        Assert.Contains("9999 training examples asked", r.Err);
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void GenerateRefusesAPromptLongerThanTheContext()
    {
        string prompt = string.Concat(Enumerable.Repeat("Once upon a time there was a dog. ", 120));
        Refused(CliHarness.Run("generate", "--prompt", prompt, "--steps", "10"), 1, "exceeds the model's context of 512");
    }
}
