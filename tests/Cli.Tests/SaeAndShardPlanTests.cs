using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// The memory plan before any weight is read, for the two runs that used to skip it (issue 14):
/// 1. <c>--sae</c>: the SAEs are sized from their configs (<c>SparseAutoencoder.PlannedBytes</c>) and counted in the
///    plan, then read after it. An SAE whose config claims 200,000 features over the 64-wide residual stream (~100 MiB
///    of fp32 arrays) and whose weights file is not a safetensors file: under a 128 MiB heap the run is refused by the
///    plan (it names the SAE as what dominates), so the SAE was counted without being read; without the limit the plan
///    passes and the SAE's weights file is refused before the model's (scrambled) weights are read.
/// 2. <c>trace --shard</c>: an attribution shard is planned as the unsharded trace is (the batch chosen or the run
///    refused) before the weights are read: refused under 48 MiB (the plan's 64 MiB runtime allowance alone does not
///    fit) with the memory line on the scrambled model, whose data is refused once the plan fits; under 72 MiB on the
///    real model the plan lowers the batch and the shard completes.
/// </summary>
[Collection("console")]
public sealed class SaeAndShardPlanTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("sae-shard-plan");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string HugeSaeWithUnreadableWeights()
    {
        string dir = Path.Combine(_dir, "huge-sae");
        Directory.CreateDirectory(Path.Combine(dir, "checkpoints"));
        File.WriteAllText(Path.Combine(dir, "hyperparams.json"), """
            { "d_model": 64, "d_sae": 200000, "act_fn": "relu", "norm_activation": "none",
              "hook_point_in": "blocks.2.hook_resid_post", "hook_point_out": "blocks.2.hook_resid_post" }
            """);
        File.WriteAllText(Path.Combine(dir, "checkpoints", "final.safetensors"), "this is not a safetensors file");
        return dir;
    }

    [Theory]
    [InlineData("attribute")]
    [InlineData("trace")]
    public void An_sae_is_counted_in_the_plan_from_its_config_and_read_after_it(string command)
    {
        string model = PlanBeforeLoadTests.ScrambledGguf(_dir), sae = HugeSaeWithUnreadableWeights();
        string outDir = Path.Combine(_dir, "out");
        string[] args = [command, "--model", model, "--task", "gender_name", "--method", "relp", "--sites", "resid", "--sae", sae, "--out", outDir];
        var refused = PlanBeforeLoadTests.RunLimited(128L << 20, args);
        string[] lines = refused.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => !l.StartsWith("model ", StringComparison.Ordinal)).ToArray();
        Assert.True(refused.Exit != 0 && lines.Length == 1, $"exit {refused.Exit}: {refused.Err}");
        Assert.Contains("this run needs about", lines[0]);
        Assert.Contains("(mostly SAE weights: ", lines[0]);
        Assert.Contains("but 128 MiB is available", lines[0]);
        Assert.DoesNotContain("safetensors", refused.Err);
        Assert.False(Directory.Exists(outDir));

        // Where the run fits, the SAE is read after the plan and before the model's weights: its file is refused first.
        var fits = CliHarness.Run(args);
        Assert.NotEqual(0, fits.Exit);
        Assert.Contains("final.safetensors", fits.Err);
        Assert.DoesNotContain("this run needs about", fits.Err);
        Assert.DoesNotContain("non-finite", fits.Err);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void Plan_counts_an_sae_from_its_config_alone()
    {
        // (2·F·d + 3·F + d)·4 bytes with d 64, F 200,000: 104,800,256 B = 99.9 MiB, counted without reading the (unreadable) weights.
        string sae = HugeSaeWithUnreadableWeights();
        string[] args = ["plan", "--model", RepoPaths.Stories260KBin, "--tokens", "64", "--batch", "4"];
        var without = CliHarness.Run(args);
        var with = CliHarness.Run([.. args, "--sae", sae]);
        Assert.True(with.Exit == 0, with.Err);
        Assert.Matches(@"\n  SAE weights\s+100 MiB", with.Out);
        Assert.DoesNotContain("SAE weights", without.Out);
        // Each total is printed rounded to 1 MiB.
        Assert.InRange(TotalMib(with.Out) - TotalMib(without.Out), 99.9 - 1, 99.9 + 1);

        // On a GPU the SAEs are scored on the host, so plan names them beside the scores' host memory.
        var gpu = CliHarness.Run([.. args, "--sae", sae, "--device", "cuda:0"]);
        Assert.True(gpu.Exit == 0, gpu.Err);
        Assert.Matches(@"host memory for the SAE weights\s+100 MiB", gpu.Out);

        // A bad SAE config is refused in one line, as trace and attribute refuse it.
        File.WriteAllText(Path.Combine(sae, "hyperparams.json"), "{ \"d_model\": 64 }");
        var bad = CliHarness.Run([.. args, "--sae", sae]);
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("missing integer \"d_sae\"", bad.Err);
        Assert.Single(bad.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    static double TotalMib(string plan)
    {
        string line = plan.Split('\n').First(l => l.Contains("total (predicted peak)"));
        var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        double v = double.Parse(parts[^2], System.Globalization.CultureInfo.InvariantCulture);
        return parts[^1] == "GiB" ? v * 1024 : v;
    }

    [Fact]
    public void A_trace_shard_is_planned_before_the_weights_are_read()
    {
        string model = PlanBeforeLoadTests.ScrambledGguf(_dir);
        string shardDir = Path.Combine(_dir, "shard");
        string[] Args(string m, string dir) => ["trace", "--model", m, "--task", "gender_name", "--sites", "mlp_act,attn", "--shard", "0/2", "--out", dir];
        var refused = PlanBeforeLoadTests.RunLimited(48L << 20, Args(model, shardDir));
        Assert.True(refused.Exit != 0, refused.Err);
        Assert.Matches(@"^neurontrace: error: this run needs about .* but 48 MiB is available; ", refused.Err);
        Assert.DoesNotContain("non-finite", refused.Err);
        Assert.False(File.Exists(Path.Combine(shardDir, "shard.json")));

        var fits = CliHarness.Run(Args(model, shardDir));
        Assert.NotEqual(0, fits.Exit);
        Assert.Contains("non-finite", fits.Err);
        Assert.DoesNotContain("this run needs about", fits.Err);

        // On the real model under 72 MiB: the batch asked (the task's 11 examples of its most common length) does not
        // fit, the plan lowers it and the shard completes.
        string lowered = Path.Combine(_dir, "lowered");
        var r = PlanBeforeLoadTests.RunLimited(72L << 20, Args(RepoPaths.Stories260KGguf, lowered));
        Assert.True(r.Exit == 0, r.Err);
        var m = System.Text.RegularExpressions.Regex.Match(r.Err, @"memory plan: batch (\d+) × \d+ tokens \(batch (\d+) does not fit\)");
        Assert.True(m.Success, r.Err);
        Assert.True(int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) < int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture), r.Err);
        Assert.True(File.Exists(Path.Combine(lowered, "shard.json")));
    }
}
