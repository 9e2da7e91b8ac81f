using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using Xunit;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// <see cref="MemoryPlan"/> against what the model really allocates, its growth in T (linear: no T² term anywhere
/// since the streaming attention), the refusal line and the batch search, and <see cref="ModelShape"/> against the
/// full loader.
/// </summary>
public class MemoryPlanTests
{
    [Fact]
    public void Forward_item_equals_the_bytes_a_real_forward_holds()
    {
        var c = RandomLlama.SmallConfig() with { KvHeads = 2 };
        using var model = new Llama(RandomLlama.Create(c, seed: 3), CpuBackend.Instance);
        const int batch = 3, T = 37;
        var rng = new Random(1);
        var batchIds = new TokenBatch(Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, T).Select(_ => rng.Next(3, c.VocabSize)).ToArray()).ToList());
        using var pass = model.Forward(batchIds, LogitRows.Last);
        long held = pass.Layers.Sum(l => new[] { l.AttnNormed, l.AttnRstd, l.Q, l.K, l.V, l.Lse, l.Z, l.AttnOut, l.Mid, l.FfnNormed, l.FfnRstd,
            l.Gate, l.Up, l.Act, l.MlpOut, l.Output }.Sum(t => t.Length)) + (long)batch * T * c.Dim;
        long logits = pass.Logits!.Length;
        var plan = MemoryPlan.ForAttribution(c, batch, T, NodeSites.All, AttributionMethod.RelP, patchBaseline: false);
        long planned = plan.Items.Single(i => i.Item == "forward pass").Bytes;
        // The plan counts 2·vocab per logit row (logits and a gradient's worth) against vocab + dim held: within that slack.
        Assert.InRange(planned - held * 4, 0, (long)batch * 2 * c.VocabSize * 4);
        Assert.True(logits <= (long)batch * 2 * c.VocabSize);
    }

    [Fact]
    public void Grows_linearly_with_the_prompt_length()
    {
        var c = RandomLlama.SmallConfig();
        long At(int t) => MemoryPlan.ForAttribution(c, 2, t, NodeSites.All, AttributionMethod.AtP, patchBaseline: true).TotalBytes;
        // Every item is affine in T, so equal steps in T add equal bytes (a T² term would double the second step).
        Assert.Equal(At(2048) - At(1024), At(3072) - At(2048));
        Assert.True(At(2048) - At(1024) > 0);
    }

    [Fact]
    public void Refuses_with_one_line_naming_need_availability_and_a_batch_that_fits()
    {
        var c = RandomLlama.SmallConfig();
        MemoryPlan Plan(int n) => MemoryPlan.ForAttribution(c, n, 512, NodeSites.All, AttributionMethod.RelP, patchBaseline: true);
        long available = Plan(5).TotalBytes + 1;
        int fits = MemoryPlan.LargestFittingBatch(Plan, 64, available);
        Assert.Equal(5, fits);
        var line = Plan(64).Refusal(available, fits);
        Assert.NotNull(line);
        Assert.DoesNotContain('\n', line);
        Assert.Contains("needs about", line);
        Assert.Contains("is available", line);
        Assert.Contains("--batch 5", line);
        Assert.Null(Plan(5).Refusal(available, fits));
        Assert.Contains("no batch fits", Plan(1).Refusal(1, 0));
    }

    [Fact]
    public void A_gpu_run_is_checked_against_the_free_memory_the_device_reports()
    {
        var c = RandomLlama.SmallConfig();
        MemoryPlan Plan(int n) => MemoryPlan.ForAttribution(c, n, 512, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, weightCopies: 1);
        // The recording runtime stands in for a GPU whose cuMemGetInfo reports a configured free size.
        var device = new NeuronTrace.Runtime.Cuda.RecordingDeviceRuntime { FreeBytes = Plan(3).TotalBytes + 1 };
        // Batch 8 does not fit the free memory: the run is given batch 3 and one line that says so.
        var fit = MemoryPlan.FitAttribution(c, 8, 512, NodeSites.All, AttributionMethod.RelP, true, cpu: false, device.FreeBytes, "free on cuda:1");
        Assert.Equal(3, fit.Batch);
        Assert.Null(fit.Refusal);
        Assert.DoesNotContain('\n', fit.Note!);
        Assert.Contains($"batch 8 needs about {MemoryPlan.Gib(Plan(8).TotalBytes)}", fit.Note);
        Assert.Contains($"but {MemoryPlan.Gib(device.FreeBytes.Value)} is free on cuda:1", fit.Note);
        Assert.Null(MemoryPlan.CheckAttribution(c, 8, 512, NodeSites.All, AttributionMethod.RelP, true, cpu: false, device.FreeBytes, "cuda:1"));
        // Not even batch 1 with checkpointing: the one refusal line, naming the device.
        long tiny = MemoryPlan.ForAttribution(c, 1, 512, NodeSites.All, AttributionMethod.RelP, true, weightCopies: 1, checkpoint: true).TotalBytes - 1;
        string? line = MemoryPlan.CheckAttribution(c, 8, 512, NodeSites.All, AttributionMethod.RelP, true, cpu: false, tiny, "cuda:1");
        Assert.NotNull(line);
        Assert.DoesNotContain('\n', line);
        Assert.Contains($"is free on cuda:1", line);
        Assert.Contains("no batch fits", line);
        Assert.Null(MemoryPlan.CheckAttribution(c, 3, 512, NodeSites.All, AttributionMethod.RelP, true, cpu: false, device.FreeBytes, "cuda:1"));
        // One weight copy on a GPU (two on the CPU): a free size between the two plans fits only the GPU plan.
        long between = Plan(3).TotalBytes + c.ParameterCount * 4 / 2;
        Assert.Null(MemoryPlan.CheckAttribution(c, 3, 512, NodeSites.All, AttributionMethod.RelP, true, cpu: false, between, "cuda:0"));
        // Unknown free memory (a runtime with no limit, or no driver): no check, the backend's own open reports.
        Assert.Null(new NeuronTrace.Runtime.Cuda.RecordingDeviceRuntime().FreeBytes);
        Assert.Null(MemoryPlan.CheckAttribution(c, 1 << 12, 512, NodeSites.All, AttributionMethod.RelP, true, cpu: false, null, "cuda:0"));
    }

    [Fact]
    public void Reads_the_shape_without_the_weights_as_the_loader_does()
    {
        var full = ModelLoader.Load(RepoPaths.Stories260KBin).Config;
        Assert.Equal(full, ModelShape.Read(RepoPaths.Stories260KBin) with { NormEps = full.NormEps, RopeTheta = full.RopeTheta });
        var gguf = ModelShape.Read(RepoPaths.Stories260KGguf);
        Assert.Equal((full.Dim, full.HiddenDim, full.Layers, full.Heads, full.KvHeads, full.VocabSize),
            (gguf.Dim, gguf.HiddenDim, gguf.Layers, gguf.Heads, gguf.KvHeads, gguf.VocabSize));
    }

    // Llama-3.1-70B's shape (untied, bf16 file widened to fp32 on the device): the per-device plans of a split.
    static readonly LlamaConfig Shape70B = new()
    {
        Dim = 8192, HiddenDim = 28672, Layers = 80, Heads = 64, KvHeads = 8, VocabSize = 128256, MaxSeqLen = 131072, RopeLayout = RopeLayout.RotateHalf,
    };

    [Theory]
    [InlineData(2)]
    [InlineData(4)]
    [InlineData(8)]
    public void A_split_plan_puts_every_weight_on_exactly_one_device_and_balances_them(int devices)
    {
        var c = Shape70B;
        var parts = MemoryPlan.ForSplitAttribution(c, devices, batch: 4, promptLength: 128, [NodeSite.MlpAct], AttributionMethod.RelP, patchBaseline: true);
        Assert.Equal(devices, parts.Count);
        long Item(MemoryPlan p, string name) => p.Items.Single(i => i.Item == name).Bytes;
        var weights = parts.Select(p => Item(p, "weights")).ToArray();
        Assert.Equal(c.ParameterCount * 4, weights.Sum());
        // no device holds more than its even share plus one layer (the ranges are contiguous and whole layers)
        long layer = LayerPlacement.LayerParameters(c) * 4;
        Assert.All(weights, w => Assert.True(w <= weights.Sum() / devices + layer, $"{MemoryPlan.Gib(w)} of {MemoryPlan.Gib(weights.Sum())}"));
        // the per-layer items add up to the one-device plan's; each device adds one [rows, dim] input (the embedding or the moved stream)
        var whole = MemoryPlan.ForAttribution(c, 4, 128, [NodeSite.MlpAct], AttributionMethod.RelP, patchBaseline: true, weightCopies: 1);
        Assert.Equal(Item(whole, "score sums"), parts.Sum(p => Item(p, "score sums")));
        long input = 2L * 4 * 128 * c.Dim * 4;   // clean + patch forwards
        Assert.Equal(Item(whole, "forward passes (clean + patch)") + (devices - 1) * input, parts.Sum(p => Item(p, "forward passes (clean + patch)")));
        Assert.Contains("+ embedding", parts[0].Describe());
        Assert.Contains("+ head", parts[^1].Describe());
    }
}
