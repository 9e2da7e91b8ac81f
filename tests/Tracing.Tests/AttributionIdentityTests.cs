using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using Xunit.Abstractions;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>Identities the methods must satisfy, on a small random Llama (independent of any fixture).</summary>
public class AttributionIdentityTests(ITestOutputHelper output)
{
    static Llama SmallModel() => new(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 11), CpuBackend.Instance);

    internal static double MeanMetric(Llama model, PromptTask task, bool patch, Metric metric)
    {
        var batch = new TokenBatch(task.Pairs.Select(p => patch ? p.PatchIds! : p.CleanIds).ToList());
        using var pass = model.Forward(batch, LogitRows.Last);
        var logits = pass.HostLogits();
        int v = model.Config.VocabSize;
        return task.Pairs.Select((p, b) => (double)metric.Value(logits.AsSpan(b * v, v), p)).Average();
    }

    [Fact]
    public void IntegratedGradientsOverAFullResidualLayerApproachesTheMetricChange()
    {
        using var model = SmallModel();
        var task = RandomTasks.Pairs(6, model.Config.VocabSize, seed: 5);
        double target = MeanMetric(model, task, true, Metric.TowardsPatch) - MeanMetric(model, task, false, Metric.TowardsPatch);
        double previous = double.MaxValue;
        foreach (int steps in new[] { 1, 4, 16, 64 })
        {
            var scores = Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.IG, Sites = [NodeSite.Resid], IgSteps = steps });
            // The per-position means times the number of examples at each position sum to the example mean of the total.
            double total = SumOverLayerTimesCounts(scores, task, layer: 0);
            double err = Math.Abs(total - target);
            output.WriteLine($"IG steps {steps,3}: sum of scores {total:F6}, m(patch) - m(clean) {target:F6}, error {err:E2}");
            Assert.True(err < previous * 1.05 + 1e-6, $"error did not shrink: {err} after {previous}");
            previous = err;
        }
        Assert.True(previous < 0.02 * Math.Max(1, Math.Abs(target)), $"IG completeness error {previous} too large for 64 steps");
    }

    [Fact]
    public void AttributionPatchingEqualsIntegratedGradientsWithOneStep()
    {
        using var model = SmallModel();
        var task = RandomTasks.Pairs(5, model.Config.VocabSize, seed: 9);
        var atp = Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.AtP });
        var ig = Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.IG, IgSteps = 1 });
        foreach (var s in NodeSites.All)
            for (int l = 0; l < model.Config.Layers; l++)
            {
                var a = atp.Get(s, l); var b = ig.Get(s, l);
                for (int i = 0; i < a.Length; i++)
                    Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5f * Math.Max(1f, Math.Abs(a[i])), $"{s.Name()} L{l} [{i}]: AtP {a[i]} vs IG(1) {b[i]}");
            }
    }

    [Fact]
    public void RelPWithFrozenAttentionConservesRelevanceOverEveryResidualCut()
    {
        using var model = SmallModel();
        var be = CpuBackend.Instance;
        var batch = new TokenBatch([[1, 5, 9, 3, 17, 4], [1, 8, 2, 30]]);
        using var pass = model.Forward(batch, LogitRows.Last);
        int v = model.Config.VocabSize;
        var logits = pass.HostLogits();
        var g = new float[logits.Length];
        double m = 0;
        for (int b = 0; b < batch.Size; b++) { g[b * v + 7] = 1; g[b * v + 12] = -1; m += logits[b * v + 7] - logits[b * v + 12]; }
        using var dl = be.Upload(g, batch.Size, v);
        foreach (var (rules, conserves) in new[] { (BackwardRules.RelPFrozenAttention, true), (BackwardRules.Exact, false) })
        {
            using var grads = model.Backward(pass, dl, rules, [NodeSite.Resid]);
            for (int l = 0; l < model.Config.Layers; l++)
            {
                var r = pass.HostSite(NodeSite.Resid, l);
                var gr = grads.Host(NodeSite.Resid, l);
                double sum = 0;
                for (int i = 0; i < r.Length; i++) sum += (double)r[i] * gr[i];
                output.WriteLine($"{(conserves ? "RelP frozen attention" : "exact gradient")} layer {l}: sum r*g = {sum:F6}, metric {m:F6}");
                if (conserves) Assert.True(Math.Abs(sum - m) < 1e-4 * Math.Max(1, Math.Abs(m)), $"layer {l}: relevance {sum} != metric {m}");
                else Assert.True(Math.Abs(sum - m) > 1e-3, "the exact gradient should not conserve (the test would be vacuous)");
            }
            // The embeddings are a complete cut too.
            if (conserves)
            {
                var x = new float[pass.Embedded.Length]; be.Download(pass.Embedded, x);
                var gx = new float[x.Length]; be.Download(grads.Embedding!, gx);
                double sum = 0;
                for (int i = 0; i < x.Length; i++) sum += (double)x[i] * gx[i];
                Assert.True(Math.Abs(sum - m) < 1e-4 * Math.Max(1, Math.Abs(m)), $"embedding relevance {sum} != metric {m}");
            }
        }
    }

    internal static double SumOverLayerTimesCounts(NodeScores scores, PromptTask task, int layer)
    {
        int w = NodeSite.Resid.Width(scores.Config);
        var a = scores.Get(NodeSite.Resid, layer);
        double total = 0;
        for (int p = 0; p < scores.Positions; p++)
        {
            int n = task.Pairs.Count(x => x.CleanIds.Length > p);
            for (int i = 0; i < w; i++) total += (double)a[p * w + i] * n;
        }
        return total / task.Count;
    }
}
