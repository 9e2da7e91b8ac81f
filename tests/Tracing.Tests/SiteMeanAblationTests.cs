using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// The evaluator's device mean ablation (<see cref="InterventionPlan.SetMeanAblation"/>) against the scale/offset plan
/// it replaced, built here as the reference exactly as the evaluator used to: scale = keep mask, offset = (1 − keep)·mean
/// per prompt row. Prompts of different lengths (padding rows), masks covering fewer positions than the prompts have
/// (the rest is ablated), two sites of different widths. Both compute x·1+0 = x or x·0+mean = mean, so the metrics
/// must be identical, not merely close.
/// </summary>
public class SiteMeanAblationTests
{
    [Theory]
    [InlineData(NodeSite.MlpAct, 3)]
    [InlineData(NodeSite.Resid, 2)]
    [InlineData(NodeSite.AttnZ, 7)]
    public void Device_mean_ablation_gives_the_scale_offset_metrics(NodeSite site, int masksPerForward)
    {
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 5), CpuBackend.Instance);
        var task = RandomTasks.Pairs(5, model.Config.VocabSize, seed: 9, minLen: 3, maxLen: 7);
        Assert.True(task.Pairs.Select(p => p.CleanIds.Length).Distinct().Count() > 1, "the test needs padding rows");
        var means = SiteMeans.Compute(model, task.Pairs.Select(p => p.PatchIds!).ToList(), [site]);
        const int positions = 4;   // fewer than the longest prompt: positions 4.. are always ablated
        int width = site.Width(model.Config), count = model.Config.Layers * positions * width;
        var rng = new Random(3);
        var masks = Enumerable.Range(0, 7).Select(m => Enumerable.Range(0, count).Select(_ => rng.NextDouble() < m / 6.0).ToArray()).ToList();

        var evaluator = new SiteMeanAblation(model, task, site, means, Metric.CleanMinusPatch, positions) { MasksPerForward = masksPerForward };
        var actual = evaluator.Evaluate(masks);

        var expected = new List<double>();
        for (int start = 0; start < masks.Count; start += masksPerForward)
            expected.AddRange(ScaleOffsetChunk(model, task, site, means, positions, masks.Skip(start).Take(masksPerForward).ToList()));
        Assert.Equal(expected, actual);
        Assert.True(actual.Distinct().Count() > 3, "masks with different keep rates should give different metrics");
    }

    /// <summary>The evaluator's former chunk: full [rows, width] scale and offset arrays per layer.</summary>
    static double[] ScaleOffsetChunk(Llama model, PromptTask task, NodeSite site, SiteMeans means, int positions, List<bool[]> masks)
    {
        var c = model.Config; var be = model.Backend;
        var pairs = task.Pairs;
        int B = pairs.Count, R = masks.Count, W = site.Width(c);
        var batch = new TokenBatch(Enumerable.Range(0, R).SelectMany(_ => pairs.Select(p => p.CleanIds)).ToList());
        int T = batch.SeqLen;
        using var plan = new InterventionPlan();
        for (int l = 0; l < c.Layers; l++)
        {
            var scale = new float[batch.Rows * W];
            var offset = new float[batch.Rows * W];
            Array.Fill(scale, 1f);
            var mean = means.Get(site, l);
            for (int r = 0; r < R; r++)
                for (int b = 0; b < B; b++)
                {
                    int len = pairs[b].CleanIds.Length;
                    for (int p = 0; p < len; p++)
                    {
                        int row = (r * B + b) * T + len - 1 - p;
                        for (int i = 0; i < W; i++)
                        {
                            if (p < positions && masks[r][(l * positions + p) * W + i]) continue;
                            scale[row * W + i] = 0f;
                            offset[row * W + i] = mean[p * W + i];
                        }
                    }
                }
            plan.Set(site, l, be.Upload(scale, batch.Rows, W), be.Upload(offset, batch.Rows, W));
        }
        using var pass = model.Forward(batch, LogitRows.Last, plan);
        return Metric.CleanMinusPatch.MeanPerReplica(pass.HostLogits(), c.VocabSize, pairs, R);
    }

    [Fact]
    public void Backward_refuses_a_plan_with_a_mean_ablation()
    {
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 5), CpuBackend.Instance);
        var be = model.Backend;
        var batch = new TokenBatch([[1, 5, 7]]);
        int w = model.Config.HiddenDim;
        using var means = be.Allocate(3, w);
        using var plan = new InterventionPlan();
        plan.SetMeanAblation(NodeSite.MlpAct, 0, new MeanAblation(means, new uint[AblationMask.WordsPerRow(w)], [0, 0, 0], [0, 1, 2]));
        using var pass = model.Forward(batch, LogitRows.Last, plan);
        using var grad = be.Allocate(1, model.Config.VocabSize);
        var e = Assert.Throws<NotSupportedException>(() => model.Backward(pass, grad, BackwardRules.Exact, [NodeSite.MlpAct], plan));
        Assert.Contains("forward-only", e.Message);
        Assert.Throws<NotSupportedException>(() => model.BackwardFromSite(pass, NodeSite.Resid, 1, be.Allocate(3, model.Config.Dim),
            BackwardRules.Exact, [NodeSite.MlpAct], plan: plan));
    }
}
