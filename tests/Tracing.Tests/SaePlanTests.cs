using NeuronTrace.Model;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Sae;
using NeuronTrace.Tracing.Scoring;
using Xunit;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// An SAE in the memory plan: <see cref="SparseAutoencoder.PlannedBytes"/>, from the config alone, is the bytes of the
/// arrays <see cref="SparseAutoencoder.Load"/> then holds (both layouts, every SAELens architecture of the fixtures),
/// and a CPU plan adds exactly that as one item (a GPU plan, of the device's memory, does not: SAEs live on the host).
/// </summary>
public class SaePlanTests
{
    public static TheoryData<string> Folders => ["resid_2", "saelens_jumprelu", "saelens_relu", "saelens_topk"];

    [Theory]
    [MemberData(nameof(Folders))]
    public void Planned_bytes_from_the_config_are_the_loaded_arrays(string name)
    {
        string dir = Path.Combine(RepoPaths.Fixtures, "sae", name);
        var sae = SparseAutoencoder.Load(dir);
        long loaded = 4L * (sae.EncoderWeight.Length + sae.EncoderBias.Length + sae.DecoderRows.Length + sae.DecoderBias.Length +
            sae.DecoderNorms.Length + sae.Thresholds.Length);
        Assert.Equal(loaded, SparseAutoencoder.PlannedBytes(dir));
    }

    [Fact]
    public void A_cpu_plan_counts_the_saes_and_a_gpu_plan_does_not()
    {
        var c = RandomLlama.SmallConfig();
        MemoryPlan Plan(int copies, long sae) => MemoryPlan.ForAttribution(c, 2, 16, [NodeSite.Resid], AttributionMethod.RelP, true, weightCopies: copies, saeBytes: sae);
        const long sae = 123_456_789;
        Assert.Equal(Plan(2, 0).TotalBytes + sae, Plan(2, sae).TotalBytes);
        Assert.Equal(sae, Plan(2, sae).Items.Single(i => i.Item == "SAE weights").Bytes);
        Assert.Equal("SAE weights", Plan(2, sae).Dominant);
        Assert.Equal(Plan(1, 0).TotalBytes, Plan(1, sae).TotalBytes);
        Assert.Throws<ArgumentOutOfRangeException>(() => Plan(2, -1));
        Assert.Throws<ModelFormatException>(() => SparseAutoencoder.PlannedBytes(Path.Combine(RepoPaths.Fixtures, "sae", "no-such-sae")));
    }

    [Theory]
    [InlineData("{\"d_in\": 2147483647, \"d_sae\": 2147483647}", "more memory than any machine has")]
    [InlineData("{\"d_in\": -4, \"d_sae\": 8}", "must be positive")]
    [InlineData("[1, 2]", "not a JSON object")]
    [InlineData("{\"d_in\": 4", "not valid JSON")]
    public void A_hostile_sae_config_is_one_line_naming_the_file_never_a_small_plan(string cfg, string expected)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"nt-sae-plan-{Environment.ProcessId}-{Math.Abs(cfg.GetHashCode())}");
        Directory.CreateDirectory(dir);
        try
        {
            File.WriteAllText(Path.Combine(dir, "cfg.json"), cfg);
            var e = Assert.Throws<ModelFormatException>(() => SparseAutoencoder.PlannedBytes(dir));
            Assert.Contains(expected, e.Message);
            Assert.Contains("cfg.json", e.Message);
            Assert.DoesNotContain('\n', e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
