using NeuronTrace.TestSupport;
using Xunit;

namespace NeuronTrace.Cli.Tests;

/// <summary><c>plan</c>: prints the items and the total without loading weights; bad numbers get one line and exit 1.</summary>
public class PlanCommandTests
{
    [Fact]
    public void Prints_the_plan_and_whether_it_fits()
    {
        var r = CliHarness.Run("plan", "--model", RepoPaths.Stories260KBin, "--tokens", "256", "--batch", "4");
        Assert.Equal(0, r.Exit);
        Assert.Contains("memory plan: relp, batch 4 × 256 tokens", r.Out);
        Assert.Contains("total (predicted peak)", r.Out);
        Assert.Contains("fits", r.Out);
    }

    [Fact]
    public void On_a_gpu_compares_with_the_free_memory_or_says_why_it_is_not_known()
    {
        var r = CliHarness.Run("plan", "--model", RepoPaths.Stories260KBin, "--tokens", "256", "--device", "cuda:0");
        Assert.Equal(0, r.Exit);
        Assert.Contains("total (predicted peak)", r.Out);
        if (NeuronTrace.Runtime.Cuda.CudaDevice.TryQueryMemory(0, out _, out _, out string why))
            Assert.Contains("free on cuda:0", r.Out);
        else  // this machine has no GPU: the line names why, and nothing is refused
            Assert.Contains($"free memory on cuda:0: not known ({why})", r.Out);
    }

    [Theory]
    [InlineData("--tokens", "0", "--tokens must be at least 1")]
    [InlineData("--tokens", "513", "--tokens must be 1 .. 512")]
    [InlineData("--batch", "0", "--batch must be at least 1")]
    [InlineData("--batch", "4097", "--batch 4097: must be at most 4096")]
    public void Refuses_out_of_range_numbers(string option, string value, string message)
    {
        string[] args = option == "--tokens"
            ? ["plan", "--model", RepoPaths.Stories260KBin, option, value]
            : ["plan", "--model", RepoPaths.Stories260KBin, "--tokens", "16", option, value];
        var r = CliHarness.Run(args);
        Assert.NotEqual(0, r.Exit);
        Assert.Contains(message, r.Err);
        Assert.DoesNotContain("   at ", r.Err);
    }
}
