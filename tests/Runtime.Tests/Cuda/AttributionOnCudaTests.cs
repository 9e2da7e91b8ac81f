using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using Xunit;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// Attribution scores computed entirely on the CUDA backend (over the CPU emulator): the delta ⊙ gradient products,
/// their scatter by position from the end, and the final gather and 1/count scaling before the one download — against
/// the CPU backend on prompts of unequal length. 1e-4 of the largest score (fp32, different summation orders).
/// </summary>
public class AttributionOnCudaTests
{
    [Theory]
    [InlineData(AttributionMethod.RelP)]
    [InlineData(AttributionMethod.IG)]
    public void Scores_on_the_cuda_backend_match_the_cpu(AttributionMethod method)
    {
        var weights = RandomLlama.Create(RandomLlama.SmallConfig(), seed: 5);
        var rng = new Random(2);
        var pairs = Enumerable.Range(0, 5).Select(i =>
        {
            int len = 3 + i % 3;
            var clean = Enumerable.Range(0, len).Select(t => t == 0 ? 1 : rng.Next(3, weights.Config.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[len - 1] = (patch[len - 1] + 1) % (weights.Config.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 4, 6);
        }).ToList();
        var task = new PromptTask("random", pairs);
        var options = new AttributionOptions { Method = method, Sites = [NodeSite.Resid, NodeSite.MlpAct], IgSteps = 2, BatchSize = 3 };
        using var cpu = new Llama(weights, CpuBackend.Instance);
        using var backend = new CudaBackend(new HostKernelRuntime());
        using var gpu = new Llama(weights, backend);
        var expected = Attributor.Score(cpu, task, options);
        var got = Attributor.Score(gpu, task, options);
        foreach (var s in options.Sites)
            for (int l = 0; l < weights.Config.Layers; l++)
            {
                float[] a = expected.Get(s, l), b = got.Get(s, l);
                double max = a.Max(Math.Abs);
                Assert.True(max > 0, $"{s} layer {l}: all zero");
                for (int i = 0; i < a.Length; i++)
                    Assert.True(Math.Abs(a[i] - b[i]) <= 1e-4 * max, $"{method} {s} layer {l} [{i}]: cpu {a[i]} cuda {b[i]}");
            }
    }
}
