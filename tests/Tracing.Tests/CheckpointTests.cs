using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using Xunit;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// Activation checkpointing (<see cref="AttributionOptions.CheckpointLayers"/>: the forward keeps each layer's input,
/// the backward recomputes the layer) against the stored forward, the reference: the recomputation runs the same ops
/// on the same rows, so on the CPU every score is bit-identical, for every method, with unequal prompt lengths (padding)
/// and GQA. And the plan: its predicted peak drops by the stored layers it no longer counts.
/// </summary>
public class CheckpointTests
{
    [Theory]
    [InlineData(AttributionMethod.AtP, Baseline.Patch)]
    [InlineData(AttributionMethod.RelP, Baseline.Patch)]
    [InlineData(AttributionMethod.IG, Baseline.Patch)]
    [InlineData(AttributionMethod.IGInputs, Baseline.Patch)]
    [InlineData(AttributionMethod.RelP, Baseline.Zero)]
    [InlineData(AttributionMethod.IG, Baseline.Mean)]
    public void Checkpointed_scores_equal_stored_ones_bit_for_bit(AttributionMethod method, Baseline baseline)
    {
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig() with { Layers = 3 }, seed: 3), CpuBackend.Instance);
        var task = RandomTasks.Pairs(5, model.Config.VocabSize, seed: 12);
        Assert.True(task.Pairs.Select(p => p.CleanIds.Length).Distinct().Count() > 1, "the task should mix prompt lengths");
        var options = new AttributionOptions { Method = method, Sites = NodeSites.All, BatchSize = 5, IgSteps = 3, Baseline = baseline };
        var stored = Attributor.Score(model, task, options);
        var checkpointed = Attributor.Score(model, task, options with { CheckpointLayers = true });
        foreach (var s in NodeSites.All)
            for (int l = 0; l < model.Config.Layers; l++)
            {
                float[] a = stored.Get(s, l), b = checkpointed.Get(s, l);
                Assert.True(a.Any(x => x != 0), $"{s} layer {l}: all scores zero");
                for (int i = 0; i < a.Length; i++)
                    Assert.True(BitConverter.SingleToInt32Bits(a[i]) == BitConverter.SingleToInt32Bits(b[i]),
                        $"{method} {baseline} {s} layer {l} [{i}]: stored {a[i]:R}, checkpointed {b[i]:R}");
            }
    }

    [Fact]
    public void A_recomputed_layer_equals_the_stored_one_and_only_one_is_held()
    {
        var c = RandomLlama.SmallConfig() with { Layers = 3, KvHeads = 2 };
        using var model = new Llama(RandomLlama.Create(c, seed: 8), CpuBackend.Instance);
        var batch = new TokenBatch([[1, 5, 9, 7, 3, 11], [1, 4, 6]]);
        using var stored = model.Forward(batch);
        using var checkpointed = model.Forward(batch, checkpoint: true);
        Assert.NotNull(checkpointed.LayerInputs);
        Assert.All(checkpointed.Layers, Assert.Null);
        for (int l = c.Layers - 1; l >= 0; l--)
        {
            foreach (var site in NodeSites.All)
                Assert.Equal(stored.HostSite(site, l), checkpointed.HostSite(site, l));
            Assert.Equal(1, checkpointed.Layers.Count(s => s is not null));
        }
        Assert.Equal(stored.HostLogits(), checkpointed.HostLogits());
    }

    [Fact]
    public void The_plan_drops_the_stored_layers_when_checkpointed()
    {
        var c = RandomLlama.SmallConfig() with { Dim = 256, HiddenDim = 688, Layers = 4, Heads = 8, KvHeads = 8, VocabSize = 512, MaxSeqLen = 8192 };
        const int batch = 2, T = 4096;
        long Forward(bool checkpoint) => MemoryPlan.ForAttribution(c, batch, T, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, checkpoint: checkpoint)
            .Items.Where(i => i.Item.StartsWith("forward pass", StringComparison.Ordinal) || i.Item.StartsWith("paired", StringComparison.Ordinal)).Sum(i => i.Bytes);
        // An independent count, per row: a layer's state is 8·dim + 2·kv + 3·hidden + 2 + heads floats. Stored: clean
        // holds every layer and the embedding; the patch half of the paired forward its embedding and its site values
        // (attn_z, attn, mlp_out, resid: dim each; mlp_act: hidden) per layer; the paired forward two layers of both.
        // Checkpointed: each layer's input for both, and one recomputed layer each.
        long rows = batch * T, layer = 8L * c.Dim + 2L * c.KvDim + 3L * c.HiddenDim + 2 + c.Heads;
        long sites = 4L * c.Dim + c.HiddenDim;
        long logits = batch * (c.VocabSize + c.Dim + 1L);
        Assert.Equal((rows * (c.Layers * layer + c.Dim) + rows * (c.Dim + c.Layers * sites) + logits + 4 * rows * layer + 2 * rows * c.Dim) * 4, Forward(false));
        Assert.Equal((2 * rows * c.Layers * c.Dim + 2 * rows * layer + logits) * 4, Forward(true));
        Assert.True(Forward(true) < Forward(false) / 3);
    }
}
