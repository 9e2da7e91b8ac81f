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
/// Attribution scores computed entirely on the CUDA backend (over the CPU emulator): the fused (base − clean) ⊙ gradient
/// accumulation by position from the end (accumulate_scores) for the patch, zero and mean baselines, the sparse metric
/// seed (sparse_matmul_input_grad) and the dense one it falls back to (top-3 logits), and the final scaled gather before
/// the one download — against the CPU backend on prompts of unequal length. 1e-4 of the largest score (fp32, different
/// summation orders in the products).
/// </summary>
public class AttributionOnCudaTests
{
    [Theory]
    [InlineData(AttributionMethod.RelP, Baseline.Patch, "logit-diff")]
    [InlineData(AttributionMethod.RelP, Baseline.Zero, "answer-logit")]
    [InlineData(AttributionMethod.RelP, Baseline.Mean, "top-3")]
    [InlineData(AttributionMethod.AtP, Baseline.Mean, "logit-diff")]
    [InlineData(AttributionMethod.IG, Baseline.Patch, "logit-diff")]
    [InlineData(AttributionMethod.IGInputs, Baseline.Patch, "answer-logit")]
    public void Scores_on_the_cuda_backend_match_the_cpu(AttributionMethod method, Baseline baseline, string metric)
    {
        var weights = RandomLlama.Create(RandomLlama.SmallConfig(), seed: 5);
        var task = LastTokenPairs.Task(5, weights.Config.VocabSize, seed: 2);
        using var cpu = new Llama(weights, CpuBackend.Instance);
        var options = new AttributionOptions
        {
            Method = method, Baseline = baseline, Sites = [NodeSite.Resid, NodeSite.MlpAct], IgSteps = 2, BatchSize = 3,
            Metric = metric switch
            {
                "logit-diff" => Metric.TowardsPatch,
                "answer-logit" => Metric.AnswerLogit,
                _ => Metric.SumOfTopKLogits(cpu, task, k: 3),
            },
        };
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
                    Assert.True(Math.Abs(a[i] - b[i]) <= 1e-4 * max, $"{method} {baseline} {metric} {s} layer {l} [{i}]: cpu {a[i]} cuda {b[i]}");
            }
    }
}
