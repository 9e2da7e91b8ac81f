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

    [Fact]
    public void Plans_llama3_8b_at_8192_tokens_onto_one_80_gb_card_with_checkpointing()
    {
        // Llama-3.1-8B's config.json alone: plan reads the shape, never the weights (there are none here).
        string dir = Path.Combine(Path.GetTempPath(), $"nt-plan-8b-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), """
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
             "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false}
            """);
        try
        {
            // An H100 80GB has 79.6 GiB; about 79 GiB is free once a context is made.
            var r = CliHarness.Run("plan", "--model", dir, "--tokens", "8192", "--batch", "1", "--device", "cuda:0", "--device-memory", "79");
            Assert.Equal(0, r.Exit);
            Assert.Contains("memory plan: relp, batch 1 × 8192 tokens, 32 layers × dim 4096 (32 heads, 8 kv)", r.Out);
            Assert.Contains("per device: the whole model on one GPU", r.Out);
            Assert.Contains("given by --device-memory for cuda:0", r.Out);
            // 8192 positions × (14336 + 3 · 4096) widths × 32 layers × 4 bytes = 26 GiB of score arrays, plus 1 GiB of page-locked readout.
            Assert.Matches(@"host memory for the scores\s+27\.00 GiB \(", r.Out);
            Assert.Contains("fits with a change: memory plan: batch 1 needs about", r.Out);
            Assert.Contains("recomputing each layer in the backward (activation checkpointing), batches of 1", r.Out);
            // The checkpointed plan printed last: its total under the 79 GiB.
            var totals = r.Out.Split('\n').Where(l => l.Contains("total (predicted peak)")).ToArray();
            Assert.Equal(2, totals.Length);
            double gib = double.Parse(totals[1].Split(' ', StringSplitOptions.RemoveEmptyEntries)[^2], System.Globalization.CultureInfo.InvariantCulture);
            Assert.InRange(gib, 40, 79);
            // Asked for less than the checkpointed run needs: the one refusal line, naming the memory given.
            var small = CliHarness.Run("plan", "--model", dir, "--tokens", "8192", "--batch", "1", "--device", "cuda:0", "--device-memory", "40");
            Assert.Equal(0, small.Exit);
            Assert.Contains("does not fit: this run needs about", small.Out);
            Assert.Contains("is given by --device-memory for cuda:0", small.Out);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public async Task Attribute_refuses_a_run_the_plan_cannot_fit_with_one_line_and_writes_nothing()
    {
        // The child's GC sees a 48 MiB limit (what the plan compares with on the CPU), under the plan's 64 MiB
        // runtime allowance alone: even batch 1 with checkpointing cannot fit, so attribute refuses before it runs.
        string config = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        string cli = Path.Combine(RepoPaths.Root, "src", "Cli", "bin", config, "net10.0", "neurontrace.dll");
        Assert.True(File.Exists(cli), cli);
        string parent = RepoPaths.TempDir("plan-refusal");
        string outDir = Path.Combine(parent, "scores");
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet", [cli, "attribute", "--sites", "mlp_act", "--out", outDir])
        { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.Environment["DOTNET_GCHeapHardLimit"] = "0x3000000";
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string err = await p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "attribute did not exit");
        CliHarness.AssertOneLineError((p.ExitCode, await stdout, err), p.ExitCode, "this run needs about", "but 48 MiB is available", "no batch fits");
        Assert.NotEqual(0, p.ExitCode);
        Assert.Empty(Directory.GetFileSystemEntries(parent));
    }

    [Fact]
    public void Says_the_cpu_plan_is_this_process()
    {
        var r = CliHarness.Run("plan", "--model", RepoPaths.Stories260KBin, "--tokens", "64", "--batch", "2");
        Assert.Equal(0, r.Exit);
        Assert.Contains("; on the CPU (this process)", r.Out);
    }

    [Theory]
    [InlineData("--tokens", "0", "--tokens must be at least 1")]
    [InlineData("--tokens", "513", "--tokens must be 1 .. 512")]
    [InlineData("--batch", "0", "--batch must be at least 1")]
    [InlineData("--batch", "4097", "--batch 4097: must be at most 4096")]
    [InlineData("--device-memory", "0", "--device-memory must be at least 1")]
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
