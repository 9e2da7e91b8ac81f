using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using Xunit;
using Xunit.Abstractions;

namespace NeuronTrace.Tracing.Tests;

/// <summary>The tests that read the process-wide CPU array pool's counters: run alone, after the parallel ones.</summary>
[CollectionDefinition(nameof(PoolCounterCollection), DisableParallelization = true)]
public sealed class PoolCounterCollection;

/// <summary>
/// <see cref="MemoryPlan"/> against an independent count of what an attribution really holds on the CPU: the array
/// pool's peak resident bytes (arrays rented plus kept for reuse; every CPU tensor of 1024 floats or more) over one
/// <see cref="Attributor.Score"/>, at two prompt lengths, with and without activation checkpointing. The plan's tensor
/// items (all but weights, runtime, the thread-static attention scratch and the scores' host copies, which are not pool
/// arrays) must match it.
/// Prompt lengths are odd so no other test's pooled arrays have their lengths.
/// </summary>
[Collection(nameof(PoolCounterCollection))]
public class MemoryPlanResidentTests(ITestOutputHelper output)
{
    static readonly LlamaConfig Shape = new()
    {
        Dim = 64, HiddenDim = 176, Layers = 3, Heads = 4, KvHeads = 2, VocabSize = 128, MaxSeqLen = 1024, RopeLayout = RopeLayout.Interleaved,
        TiedEmbeddings = false,
    };

    // Each case has prompt lengths of its own: the pool keeps arrays by exact length, so a case reusing another's
    // lengths would find its arrays already there and measure too little. Batch 1 throughout: a CPU batch of two is
    // split over two threads, and how far their allocations overlap is up to the scheduler.
    // Measured here: the plan's items come to 1.00-1.02 of the count without checkpointing (IG 0.97), 0.92-1.00 with
    // it. With checkpointing the patch forward runs on a second thread beside the clean one, so how far their layers
    // overlap is up to the scheduler.
    // IG takes 3 steps so its path pass (3 × rows) has shapes of its own.
    [Theory]
    [InlineData(AttributionMethod.RelP, false, 389, 777)]
    [InlineData(AttributionMethod.AtP, false, 391, 779)]
    [InlineData(AttributionMethod.IG, false, 397, 785)]
    [InlineData(AttributionMethod.IGInputs, false, 401, 789)]
    [InlineData(AttributionMethod.RelP, true, 393, 781)]
    [InlineData(AttributionMethod.IG, true, 399, 787)]
    public void The_plan_counts_what_the_pool_holds_at_its_peak(AttributionMethod method, bool checkpoint, int t1, int t2)
    {
        const int batch = 1;
        using var model = new Llama(RandomLlama.Create(Shape, seed: 5), CpuBackend.Instance);
        foreach (int t in new[] { t1, t2 })
        {
            var task = RandomTasks.Pairs(batch, Shape.VocabSize, seed: t, minLen: t, maxLen: t);
            var options = new AttributionOptions { Method = method, Sites = NodeSites.All, BatchSize = batch, IgSteps = 3, CheckpointLayers = checkpoint };
            // Stale arrays of earlier runs would be evicted during this one and hide as many new bytes: start empty.
            CpuTensor.ReleasePooledArrays();
            CpuTensor.ResetPeakResidentBytes();
            long before = CpuTensor.PeakResidentBytes;
            Attributor.Score(model, task, options);
            long measured = CpuTensor.PeakResidentBytes - before;
            var plan = MemoryPlan.ForAttribution(Shape, batch, t, NodeSites.All, method, patchBaseline: true, igSteps: options.IgSteps, checkpoint: checkpoint);
            long planned = plan.Items.Where(i => i.Item is not ("weights" or "runtime" or "attention scratch" or "score means (host copies)")).Sum(i => i.Bytes);
            double ratio = planned / (double)measured;
            output.WriteLine($"{method} batch {batch} T={t} checkpoint {checkpoint}: measured {measured / 1048576.0:F2} MiB, planned {planned / 1048576.0:F2} MiB, ratio {ratio:F3}");
            foreach (var (item, bytes) in plan.Items) output.WriteLine($"  {item}: {bytes / 1048576.0:F2} MiB");
            Assert.InRange(ratio, 0.88, 1.12);
        }
    }
}
