using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using Xunit;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// A GPU run's scores come back to the host, per position of the whole prompt and every layer, whatever the batch
/// (Llama-3.1-8B at 8192 tokens, all four sites: 26 GiB). <see cref="MemoryPlan.HostScoreBytes"/> counts them against
/// the score arrays an attribution really returns, and <see cref="MemoryPlan.FitTask"/> refuses a GPU run whose scores
/// do not fit the host, before anything is read; a CPU plan counts them among its own items instead.
/// </summary>
public class HostScorePlanTests
{
    static readonly LlamaConfig C = RandomLlama.SmallConfig() with { Layers = 3 };
    static readonly NodeSite[] Sites = [NodeSite.MlpAct, NodeSite.MlpOut, NodeSite.Attn, NodeSite.Resid];

    [Fact]
    public void Host_score_bytes_are_the_arrays_an_attribution_returns_plus_their_readout_buffers()
    {
        using var model = new Llama(RandomLlama.Create(C, seed: 5), CpuBackend.Instance);
        var task = RandomTasks.Pairs(4, C.VocabSize, seed: 8);
        int positions = task.Pairs.Max(p => p.CleanIds.Length);
        var scores = Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.RelP, Sites = Sites, BatchSize = 4 });
        long returned = Sites.Sum(s => Enumerable.Range(0, C.Layers).Sum(l => (long)scores.Get(s, l).Length)) * 4;
        // Hand-derived: positions × (hidden + 3 · dim) × layers floats; the readout's buffers (under 1 GiB here) as much again.
        Assert.Equal((long)positions * (C.HiddenDim + 3 * C.Dim) * C.Layers * 4, returned);
        Assert.Equal(2 * returned, MemoryPlan.HostScoreBytes(C, positions, Sites));
        // Past 1 GiB of arrays the buffers stay at 1 GiB (ScoreSums reads a group of layers at a time).
        var wide = C with { Dim = 4096, HiddenDim = 14336, Layers = 32, Heads = 32, KvHeads = 8, MaxSeqLen = 8192 };
        Assert.Equal(26L * (1L << 30) + (1L << 30), MemoryPlan.HostScoreBytes(wide, 8192, Sites));
    }

    [Fact]
    public void A_gpu_run_whose_scores_do_not_fit_the_host_is_refused_whatever_the_batch()
    {
        long need = MemoryPlan.HostScoreBytes(C, 40, Sites);
        AttributionFit Fit(bool cpu, long? host, int batch = 8) => MemoryPlan.FitTask(C, batch, pinned: false, examples: 10, promptLength: 40, Sites,
            [AttributionMethod.RelP], patchBaseline: true, cpu, available: 1L << 40, where: cpu ? "available" : "free on cuda:0", hostAvailable: host);

        foreach (int batch in new[] { 8, 1 })
        {
            var refused = Fit(cpu: false, host: need - 1, batch);
            Assert.NotNull(refused.Refusal);
            Assert.Contains("of host memory (40 positions × mlp_act,mlp_out,attn,resid × 3 layers", refused.Refusal);
            Assert.Contains("score fewer sites (--sites) or shorter prompts", refused.Refusal);
        }
        Assert.Null(Fit(cpu: false, host: need).Refusal);
        Assert.Null(Fit(cpu: false, host: null).Refusal);
        // One site needs less: the same host takes it.
        Assert.Null(MemoryPlan.FitTask(C, 8, false, 10, 40, [NodeSite.Attn], [AttributionMethod.RelP], true, cpu: false, available: 1L << 40,
            hostAvailable: need - 1).Refusal);
        // A CPU plan has the scores among its items and is not given a second, host check.
        Assert.Null(Fit(cpu: true, host: 1).Refusal);
    }
}
