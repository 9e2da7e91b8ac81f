using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using Xunit.Abstractions;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>The case studies' metric: the sum of the model's own top-k clean logits, tokens fixed from the clean run.</summary>
public class TopLogitsMetricTests(ITestOutputHelper output)
{
    [Fact]
    public void FocusTokensAreTheTopLogitsOfUpstreamLlama2c()
    {
        var golden = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Golden, "golden.json"))).RootElement;
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        using var model = new Llama(loaded.Weights, CpuBackend.Instance);
        int v = model.Config.VocabSize, line = 0;
        var pairs = new List<PromptPair>();
        var upstreamLast = new List<float[]>();
        foreach (var prompt in golden.GetProperty("prompts").EnumerateArray())
        {
            int[] ids = prompt.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();
            var bytes = File.ReadAllBytes(Path.Combine(RepoPaths.Golden, prompt.GetProperty("logits_file").GetString()!));
            var all = new float[bytes.Length / 4];
            Buffer.BlockCopy(bytes, 0, all, 0, bytes.Length);
            upstreamLast.Add(all[^v..]);
            pairs.Add(new PromptPair(++line, ids, null, ids[^1], null));
        }
        Assert.True(pairs.Count >= 3);
        var task = new PromptTask("golden", pairs);
        var metric = Metric.SumOfTopKLogits(model, task, k: 5, batchSize: 2);
        for (int i = 0; i < pairs.Count; i++)
        {
            var upstream = upstreamLast[i];
            var expected = Enumerable.Range(0, v).OrderByDescending(j => upstream[j]).Take(5).ToArray();
            output.WriteLine($"prompt {i}: ours {string.Join(",", metric.FocusTokens(pairs[i]))}, upstream {string.Join(",", expected)}");
            Assert.Equal(expected, metric.FocusTokens(pairs[i]));
            // The metric reads the logits it is given at the fixed tokens: on upstream's logits, upstream's top-5 sum.
            Assert.Equal(expected.Sum(j => (double)upstream[j]), metric.Value(upstream, pairs[i]), 1e-4);
            var g = new float[v];
            metric.Gradient(upstream, pairs[i], g);
            Assert.Equal(Enumerable.Range(0, v).Select(j => expected.Contains(j) ? 1f : 0f), g);
        }
    }

    [Fact]
    public void IntegratedGradientsCompletenessHoldsForTheFixedTokens()
    {
        // IG over a complete cut sums to m(patch) − m(clean). That only holds if the patch run reads the clean run's
        // tokens: the patch prompts' own top-k differ here, so a metric that re-ranked per run would miss it.
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 11), CpuBackend.Instance);
        var task = RandomTasks.Pairs(6, model.Config.VocabSize, seed: 5);
        var metric = Metric.SumOfTopKLogits(model, task, k: 3);
        var patchTask = new PromptTask("patch", task.Pairs.Select(p => p with { CleanIds = p.PatchIds! }).ToList());
        var patchOwn = Metric.SumOfTopKLogits(model, patchTask, k: 3);
        Assert.Contains(Enumerable.Range(0, task.Count), i => !metric.FocusTokens(task.Pairs[i]).SequenceEqual(patchOwn.FocusTokens(patchTask.Pairs[i])));

        double target = AttributionIdentityTests.MeanMetric(model, task, true, metric) - AttributionIdentityTests.MeanMetric(model, task, false, metric);
        var scores = Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.IG, Sites = [NodeSite.Resid], IgSteps = 64, Metric = metric });
        double total = AttributionIdentityTests.SumOverLayerTimesCounts(scores, task, layer: 0);
        output.WriteLine($"IG 64 steps: sum of scores {total:F6}, m(patch) - m(clean) {target:F6}");
        Assert.True(Math.Abs(total - target) < 0.02 * Math.Abs(target) + 1e-4, $"sum {total} vs {target}");
    }

    [Theory]
    [InlineData(AttributionMethod.AtP)]
    [InlineData(AttributionMethod.RelP)]
    [InlineData(AttributionMethod.IG)]
    public void ScoresAreTheSumOverTheFocusTokensOfSingleLogitScores(AttributionMethod method)
    {
        // Every method is linear in ∂m/∂logits, so the top-2 sum scores as answer logit (token 1) + answer logit (token 2).
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 12), CpuBackend.Instance);
        var task = RandomTasks.Pairs(5, model.Config.VocabSize, seed: 8);
        var metric = Metric.SumOfTopKLogits(model, task, k: 2);
        NodeSite[] sites = [NodeSite.MlpAct, NodeSite.Attn];
        NodeScores Run(PromptTask t, Metric m) =>
            Attributor.Score(model, t, new AttributionOptions { Method = method, Sites = sites, IgSteps = 4, Metric = m });
        PromptTask Answering(int rank) => new("answer", task.Pairs.Select(p => p with { CleanAnswer = metric.FocusTokens(p)[rank] }).ToList());
        var both = Run(task, metric);
        var first = Run(Answering(0), Metric.AnswerLogit);
        var second = Run(Answering(1), Metric.AnswerLogit);
        foreach (var site in sites)
            for (int l = 0; l < model.Config.Layers; l++)
            {
                var a = both.Get(site, l); var x = first.Get(site, l); var y = second.Get(site, l);
                double scale = a.Max(Math.Abs);
                Assert.True(scale > 0);
                for (int i = 0; i < a.Length; i++)
                    Assert.True(Math.Abs(a[i] - (x[i] + y[i])) <= 1e-5 * scale, $"{site} L{l} [{i}]: {a[i]} vs {x[i]} + {y[i]}");
            }
    }

    [Fact]
    public void KOutsideTheVocabularyIsRefused()
    {
        using var model = new Llama(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 12), CpuBackend.Instance);
        var task = RandomTasks.Pairs(2, model.Config.VocabSize, seed: 8);
        Assert.Contains("outside", Assert.Throws<ArgumentException>(() => Metric.SumOfTopKLogits(model, task, 0)).Message);
        var metric = Metric.SumOfTopKLogits(model, task, 1);
        var other = RandomTasks.Pairs(2, model.Config.VocabSize, seed: 9);
        Assert.Contains("another task", Assert.Throws<ArgumentException>(() => metric.FocusTokens(other.Pairs[0])).Message);
    }
}
