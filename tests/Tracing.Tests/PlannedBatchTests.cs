using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using Xunit;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// <see cref="MemoryPlan.FitAttribution"/>: the batch it chooses under a budget, checkpointing when batch 1's stored
/// activations do not fit, the one refusal line when nothing fits; and the scores of a run at the chosen batch against
/// the run at the requested batch. Batch composition changes only float rounding (a CPU batch is split over two
/// threads, sums added in another order; see <see cref="BatchSplitTests"/>), so the scores agree to 1e-5 of the largest,
/// and exactly between runs the fit gives the same batch.
/// </summary>
public class PlannedBatchTests
{
    static readonly LlamaConfig C = RandomLlama.SmallConfig() with { Layers = 3, MaxSeqLen = 512 };

    static MemoryPlan Plan(int batch, bool checkpoint = false) =>
        MemoryPlan.ForAttribution(C, batch, 300, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, checkpoint: checkpoint);

    [Fact]
    public void Lowers_the_batch_to_the_largest_that_fits_and_says_so_in_one_line()
    {
        long budget = Plan(3).TotalBytes + 1;
        var fit = MemoryPlan.FitAttribution(C, 32, 300, NodeSites.All, AttributionMethod.RelP, true, cpu: true, budget);
        Assert.Equal((3, false), (fit.Batch, fit.Checkpoint));
        Assert.Null(fit.Refusal);
        Assert.NotNull(fit.Note);
        Assert.DoesNotContain('\n', fit.Note);
        Assert.Contains("running in batches of 3", fit.Note);
        Assert.Contains($"batch 32 needs about {MemoryPlan.Gib(Plan(32).TotalBytes)}", fit.Note);
        // A request that fits runs as asked, with no line; unknown memory (a GPU that cannot be asked) is not fitted.
        Assert.Equal(new AttributionFit(2, false, null, null), MemoryPlan.FitAttribution(C, 2, 300, NodeSites.All, AttributionMethod.RelP, true, true, budget));
        Assert.Equal(new AttributionFit(32, false, null, null), MemoryPlan.FitAttribution(C, 32, 300, NodeSites.All, AttributionMethod.RelP, true, false, null));
    }

    [Fact]
    public void Checkpoints_when_batch_1_does_not_fit_and_refuses_only_when_that_does_not_either()
    {
        long between = (Plan(1, checkpoint: true).TotalBytes + Plan(1).TotalBytes) / 2;
        Assert.True(Plan(1, checkpoint: true).TotalBytes < between && between < Plan(1).TotalBytes);
        var fit = MemoryPlan.FitAttribution(C, 8, 300, NodeSites.All, AttributionMethod.RelP, true, cpu: true, between);
        Assert.True(fit.Checkpoint);
        Assert.True(fit.Batch >= 1);
        Assert.True(Plan(fit.Batch, checkpoint: true).TotalBytes <= between);
        Assert.Contains("activation checkpointing", fit.Note);
        Assert.Null(fit.Refusal);

        var none = MemoryPlan.FitAttribution(C, 8, 300, NodeSites.All, AttributionMethod.RelP, true, cpu: true, Plan(1, checkpoint: true).TotalBytes - 1);
        Assert.NotNull(none.Refusal);
        Assert.DoesNotContain('\n', none.Refusal);
        Assert.Contains("no batch fits", none.Refusal);
        Assert.Contains($"needs about {MemoryPlan.Gib(Plan(1, checkpoint: true).TotalBytes)}", none.Refusal);
    }

    [Theory]
    [InlineData(AttributionMethod.RelP)]
    [InlineData(AttributionMethod.AtP)]
    [InlineData(AttributionMethod.IG)]
    public void Scores_at_the_chosen_batch_equal_the_requested_batchs(AttributionMethod method)
    {
        using var model = new Llama(RandomLlama.Create(C, seed: 3), CpuBackend.Instance);
        var task = RandomTasks.Pairs(9, C.VocabSize, seed: 21);
        int longest = task.Pairs.Max(p => p.CleanIds.Length);
        AttributionFit Fit(long budget) => MemoryPlan.FitAttribution(C, 9, longest, NodeSites.All, method, true, cpu: true, budget, igSteps: 3);
        long Need(int n) => MemoryPlan.ForAttribution(C, n, longest, NodeSites.All, method, true, igSteps: 3).TotalBytes;
        var large = Fit(long.MaxValue);
        var small = Fit(Need(2) + 1);
        Assert.Equal(9, large.Batch);
        Assert.Equal(2, small.Batch);
        NodeScores Run(AttributionFit f) => Attributor.Score(model, task, new AttributionOptions
        {
            Method = method, Sites = NodeSites.All, BatchSize = f.Batch, CheckpointLayers = f.Checkpoint, IgSteps = 3,
        });
        var a = Run(large);
        var b = Run(small);
        var again = Run(small);
        foreach (var s in NodeSites.All)
            for (int l = 0; l < C.Layers; l++)
            {
                float[] x = a.Get(s, l), y = b.Get(s, l);
                double max = x.Max(Math.Abs);
                Assert.True(max > 0, $"{s} layer {l}: all zero");
                for (int i = 0; i < x.Length; i++)
                    Assert.True(Math.Abs(x[i] - y[i]) <= 1e-5 * max + 1e-9, $"{method} {s} layer {l} [{i}]: batch 9 {x[i]}, batch 2 {y[i]}");
                Assert.Equal(y, again.Get(s, l));
            }
    }
}
