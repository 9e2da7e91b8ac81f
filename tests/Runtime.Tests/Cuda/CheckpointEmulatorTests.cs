using NeuronTrace.Model;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;
using Xunit.Abstractions;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// Activation checkpointing on the CUDA backend over the emulator (the kernels run on the host): the scores of a
/// checkpointed run (each layer's forward recomputed in the backward) against the stored run's, RelP and AtP at all
/// sites, IG at two, unequal prompt lengths across the attention tiles, GQA. The recomputation launches the same kernels on the
/// same inputs; the tolerance, 1e-6 of each site and layer's largest |score|, allows for kernels whose reductions are
/// not ordered (the test prints the worst difference seen; the CPU's twin, tests/Tracing.Tests/CheckpointTests, is
/// bit for bit).
/// </summary>
public class CheckpointEmulatorTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(AttributionMethod.RelP)]
    [InlineData(AttributionMethod.AtP)]
    [InlineData(AttributionMethod.IG)]
    public void Checkpointed_scores_equal_stored_ones_on_the_emulator(AttributionMethod method)
    {
        var config = RandomLlama.SmallConfig() with { Dim = 32, HiddenDim = 48, Heads = 4, KvHeads = 2, MaxSeqLen = 96 };
        var weights = RandomLlama.Create(config, seed: 11);
        var rng = new Random(5);
        var pairs = new[] { 37, 70 }.Select((len, i) =>
        {
            var clean = Enumerable.Range(0, len).Select(t => t == 0 ? 1 : rng.Next(3, config.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[len / 2] = (patch[len / 2] + 1) % (config.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 4, 6);
        }).ToList();
        var task = new PromptTask("checkpoint", pairs);
        // IG runs a forward and backward per site and layer: two sites keep it to minutes on the emulator.
        NodeSite[] sites = method == AttributionMethod.IG ? [NodeSite.Resid, NodeSite.MlpAct] : [.. NodeSites.All];
        var options = new AttributionOptions { Method = method, Sites = sites, BatchSize = 2, IgSteps = 2 };
        using var backend = new Runtime.Cuda.CudaBackend(new HostKernelRuntime());
        using var model = new Llama(weights, backend);
        var stored = Attributor.Score(model, task, options);
        var checkpointed = Attributor.Score(model, task, options with { CheckpointLayers = true });
        double worst = 0;
        foreach (var s in options.Sites)
            for (int l = 0; l < config.Layers; l++)
            {
                float[] a = stored.Get(s, l), b = checkpointed.Get(s, l);
                double max = a.Max(x => Math.Abs((double)x));
                Assert.True(max > 0, $"{s} layer {l}: all zero");
                for (int i = 0; i < a.Length; i++)
                {
                    double d = Math.Abs((double)a[i] - b[i]) / max;
                    worst = Math.Max(worst, d);
                    Assert.True(d <= 1e-6, $"{method} {s} layer {l} [{i}]: stored {a[i]}, checkpointed {b[i]}");
                }
            }
        output.WriteLine($"{method}: worst difference {worst:E2} of the largest score");
    }
}
