using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Tests;

public class CircuitSweepTests
{
    [Fact]
    public void EndpointsAreExactAndResultsDoNotDependOnMasksPerForward()
    {
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 21), CpuBackend.Instance);
        var task = RandomTasks.Pairs(6, model.Config.VocabSize, seed: 4);
        var scores = Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.RelP, Sites = [NodeSite.MlpAct] });
        var means = SiteMeans.Compute(model, task.Pairs.Select(p => p.PatchIds!).ToList(), [NodeSite.MlpAct]);
        int total = new NodeRanking(scores, NodeSite.MlpAct).Count;
        int[] ks = [0, 1, 5, 40, total];
        var one = CircuitSweep.Run(model, scores, NodeSite.MlpAct, "relp", task, means, ks, masksPerForward: 1);
        var many = CircuitSweep.Run(model, scores, NodeSite.MlpAct, "relp", task, means, ks, masksPerForward: 7);

        var all = one.Single(p => p.K == total);
        Assert.Equal(1.0, all.Faithfulness, 12);
        Assert.Equal(0.0, all.Completeness, 12);
        Assert.Equal(1.0, all.RandomFaithfulness, 12);
        var none = one.Single(p => p.K == 0);
        Assert.Equal(0.0, none.Faithfulness, 12);
        Assert.Equal(1.0, none.Completeness, 12);
        // Batch size changes the GEMM's summation order (and concurrent tests can change its blocking), so the two differ
        // by ~1e-7; an absolute tolerance, since rounding both to 5 decimals fails whenever they straddle a boundary.
        for (int i = 0; i < one.Count; i++)
        {
            Assert.Equal(one[i].Faithfulness, many[i].Faithfulness, 1e-5);
            Assert.Equal(one[i].Completeness, many[i].Completeness, 1e-5);
            Assert.Equal(one[i].RandomFaithfulness, many[i].RandomFaithfulness, 1e-5);
        }
    }

    [Fact]
    public void TopKAndThresholdSelectTheSameNodes()
    {
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 22), CpuBackend.Instance);
        var task = RandomTasks.Pairs(4, model.Config.VocabSize, seed: 6);
        var scores = Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.AtP, Sites = [NodeSite.MlpOut] });
        var ranking = new NodeRanking(scores, NodeSite.MlpOut);
        foreach (int k in new[] { 1, 3, 17, 100 })
        {
            float threshold = ranking.Threshold(k);
            var top = ranking.TopK(k);
            var byThreshold = scores.Enumerate(NodeSite.MlpOut).Select(x => Math.Abs(x.Score) >= threshold).ToArray();
            Assert.Equal(k, top.Count(x => x));
            Assert.Equal(top, byThreshold);
        }
    }
}
