using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using Xunit;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// On the CPU a small model's batches are scored as two halves on two threads (own sums, added at the end). The scores
/// must not depend on that: one pair per batch (never split) is the reference, for every method, with prompts of
/// unequal lengths so the halves differ in padding. Batch composition only changes float rounding (GEMM blocking, padding): measured ≈1e-6 relative; 1e-5 of the largest score.
/// </summary>
public class BatchSplitTests
{
    [Theory]
    [InlineData(AttributionMethod.AtP)]
    [InlineData(AttributionMethod.RelP)]
    [InlineData(AttributionMethod.IG)]
    [InlineData(AttributionMethod.IGInputs)]
    [InlineData(AttributionMethod.AtP, Baseline.Zero)]
    [InlineData(AttributionMethod.AtP, Baseline.Mean)]
    [InlineData(AttributionMethod.RelP, Baseline.Mean)]
    [InlineData(AttributionMethod.IG, Baseline.Mean)]
    public void Split_batches_score_as_one_pair_at_a_time(AttributionMethod method, Baseline baseline = Baseline.Patch)
    {
        // The mean baseline is the whole task's mean: with a per-batch mean, one pair per batch would score all zeros.
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 3), CpuBackend.Instance);
        var task = RandomTasks.Pairs(7, model.Config.VocabSize, seed: 9);
        Assert.True(task.Pairs.Select(p => p.CleanIds.Length).Distinct().Count() > 1, "the task should mix prompt lengths");
        var sites = new[] { NodeSite.Resid, NodeSite.Attn, NodeSite.MlpAct };
        var split = Attributor.Score(model, task, new AttributionOptions { Method = method, Sites = sites, BatchSize = 7, IgSteps = 3, Baseline = baseline });
        var single = Attributor.Score(model, task, new AttributionOptions { Method = method, Sites = sites, BatchSize = 1, IgSteps = 3, Baseline = baseline });
        foreach (var s in sites)
            for (int l = 0; l < model.Config.Layers; l++)
            {
                float[] a = split.Get(s, l), b = single.Get(s, l);
                double max = a.Max(Math.Abs);
                Assert.True(max > 0, $"{s} layer {l}: all scores zero");
                for (int i = 0; i < a.Length; i++)
                    Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5 * max + 1e-9, $"{method} {baseline} {s} layer {l} [{i}]: {a[i]} split vs {b[i]} single");
            }
    }

    [Theory]
    [InlineData(AttributionMethod.IG)]
    [InlineData(AttributionMethod.IGInputs)]
    public void The_IG_path_in_several_passes_scores_as_in_one(AttributionMethod method)
    {
        // A batch (half) holds at most 4 prompts of at most 7 tokens, 28 rows per path point: 1 row per pass still runs
        // one point per pass (5 passes), 60 rows two or more (the last pass short).
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 3), CpuBackend.Instance);
        var task = RandomTasks.Pairs(7, model.Config.VocabSize, seed: 9);
        var sites = new[] { NodeSite.Resid, NodeSite.MlpAct };
        NodeScores Run(int rowsPerPass) => Attributor.Score(model, task, new AttributionOptions
        {
            Method = method, Sites = sites, BatchSize = 7, IgSteps = 5, IgRowsPerPass = rowsPerPass,
        });
        var one = Run(8192);
        foreach (int rowsPerPass in new[] { 1, 60 })
        {
            var chunked = Run(rowsPerPass);
            foreach (var s in sites)
                for (int l = 0; l < model.Config.Layers; l++)
                {
                    float[] a = one.Get(s, l), b = chunked.Get(s, l);
                    double max = a.Max(Math.Abs);
                    Assert.True(max > 0);
                    for (int i = 0; i < a.Length; i++)
                        Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5 * max, $"{method} {rowsPerPass} rows/pass {s} L{l} [{i}]: {b[i]} vs {a[i]}");
                }
        }
    }
}

/// <summary>Progress from attribution never passes its total, also when IG's batches are split across two threads.</summary>
public class AttributionProgressTests
{
    sealed class Recorder : IProgress<NeuronTrace.Tracing.Pipeline.WorkProgress>
    {
        public readonly List<NeuronTrace.Tracing.Pipeline.WorkProgress> Reports = [];
        public void Report(NeuronTrace.Tracing.Pipeline.WorkProgress value) { lock (Reports) Reports.Add(value); }
    }

    [Theory]
    [InlineData(AttributionMethod.IG, 7)]   // 7 pairs in one batch: split into two halves on a 2-core machine
    [InlineData(AttributionMethod.IG, 3)]   // batches of 3, 3 and 1: the last is not split
    [InlineData(AttributionMethod.RelP, 3)]
    public void Progress_ends_exactly_at_its_total(AttributionMethod method, int batch)
    {
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 3), CpuBackend.Instance);
        var task = RandomTasks.Pairs(7, model.Config.VocabSize, seed: 9);
        var sites = new[] { NodeSite.Resid, NodeSite.MlpAct };
        var rec = new Recorder();
        Attributor.Score(model, task, new AttributionOptions { Method = method, Sites = sites, BatchSize = batch, IgSteps = 2 }, rec);
        Assert.NotEmpty(rec.Reports);
        Assert.All(rec.Reports, p => Assert.True(p.Done <= p.Total, $"{p.Stage} {p.Done}/{p.Total}"));
        var last = rec.Reports[^1];
        Assert.Equal(last.Total, last.Done);
        Assert.Equal(rec.Reports.Count, (int)last.Total);
    }
}
