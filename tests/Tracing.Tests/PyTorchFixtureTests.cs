using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using Xunit.Abstractions;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// Our activations, gradients and scores on stories260K against the float64 PyTorch autograd reference
/// (tests/fixtures/README.md). Tolerance: max |ours − ref| ≤ 1e-4 · max |ref| per array (fp32 against fp64); the
/// task-mean score arrays (task/...) are also checked element by element: |ours − ref| ≤ 1e-3 · |ref| + 1e-5 · max |ref|.
/// </summary>
public class PyTorchFixtureTests(ITestOutputHelper output)
{
    static readonly PyTorchFixture F = PyTorchFixture.Instance;
    static readonly Lazy<Llama> Model = new(() => new Llama(ModelLoader.Load().Weights, CpuBackend.Instance));
    const double Tolerance = 1e-4;
    /// <summary>The element-wise check's floor: ten times below the per-array bound, so small scores are held to 1e-5 of the largest.</summary>
    const double ElementFloor = 1e-5;

    public static TheoryData<string> RuleSets => new() { "exact", "relp", "relp_frozen_attn" };

    static BackwardRules Rules(string name) => name switch
    {
        "exact" => BackwardRules.Exact,
        "relp" => BackwardRules.RelP,
        "relp_frozen_attn" => BackwardRules.RelPFrozenAttention,
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(RuleSets))]
    public void GradientsAtEverySiteEqualAutograd(string ruleSet)
    {
        var model = Model.Value;
        // All 8 pairs in one right-padded batch (lengths 4..10).
        var batch = new TokenBatch(F.Pairs.Select(p => p.CleanIds).ToList());
        using var pass = model.Forward(batch, LogitRows.Last);
        int v = model.Config.VocabSize;
        var g = new float[batch.Size * v];
        var logits = pass.HostLogits();
        for (int b = 0; b < batch.Size; b++)
        {
            Metric.TowardsPatch.Gradient(logits.AsSpan(b * v, v), F.Pairs[b], g.AsSpan(b * v, v));
            Assert.Equal(F.MetricClean[b], Metric.TowardsPatch.Value(logits.AsSpan(b * v, v), F.Pairs[b]), tolerance: 5e-5);
        }
        using var dl = CpuBackend.Instance.Upload(g, batch.Size, v);
        using var grads = model.Backward(pass, dl, Rules(ruleSet), NodeSites.All);
        double worst = 0;
        foreach (var site in NodeSites.All)
            for (int l = 0; l < model.Config.Layers; l++)
            {
                int w = site.Width(model.Config);
                var ours = grads.Host(site, l);
                var act = pass.HostSite(site, l);
                for (int b = 0; b < batch.Size; b++)
                {
                    int T = batch.Lengths[b];
                    worst = Math.Max(worst, Compare($"pair{b}/grad/{ruleSet}/{site.Name()}/{l}", ours, b * batch.SeqLen * w, T * w));
                    Compare($"pair{b}/clean/{site.Name()}/{l}", act, b * batch.SeqLen * w, T * w);
                }
            }
        output.WriteLine($"{ruleSet}: worst gradient error {worst:E2} of the array's max |value|");
    }

    [Theory]
    [InlineData(AttributionMethod.RelP, "relp")]
    [InlineData(AttributionMethod.RelP, "relp_frozen_attn")]
    [InlineData(AttributionMethod.AtP, "exact")]
    public void ScoresEqualTheReferenceScores(AttributionMethod method, string ruleSet)
    {
        var model = Model.Value;
        var task = new PromptTask("fixture", F.Pairs);
        var options = new AttributionOptions { Method = method, BatchSize = 3 };
        if (method == AttributionMethod.RelP) options = options with { RelPRules = Rules(ruleSet) };
        var scores = Attributor.Score(model, task, options);
        double worst = 0;
        foreach (var site in NodeSites.All)
            for (int l = 0; l < model.Config.Layers; l++)
            {
                int w = site.Width(model.Config);
                var expected = new double[scores.Positions * w];
                var count = new int[scores.Positions];
                for (int b = 0; b < F.Pairs.Count; b++)
                {
                    var g = F.Get($"pair{b}/grad/{ruleSet}/{site.Name()}/{l}");
                    var c = F.Get($"pair{b}/clean/{site.Name()}/{l}");
                    var p = F.Get($"pair{b}/patch/{site.Name()}/{l}");
                    int T = F.Pairs[b].CleanIds.Length;
                    for (int t = 0; t < T; t++)
                    {
                        int pos = T - 1 - t;
                        count[pos] += 1;
                        for (int i = 0; i < w; i++) expected[pos * w + i] += (double)(p[t * w + i] - c[t * w + i]) * g[t * w + i];
                    }
                }
                var ours = scores.Get(site, l);
                double max = 1e-12, err = 0;
                for (int pos = 0; pos < scores.Positions; pos++)
                    for (int i = 0; i < w; i++)
                    {
                        double e = expected[pos * w + i] / count[pos];
                        max = Math.Max(max, Math.Abs(e));
                        err = Math.Max(err, Math.Abs(e - ours[pos * w + i]));
                    }
                worst = Math.Max(worst, err / max);
                Assert.True(err <= Tolerance * max, $"{method} {site.Name()} L{l}: max error {err} vs max |score| {max}");
            }
        output.WriteLine($"{method} ({ruleSet}): worst score error {worst:E2} of the max |score|");
    }

    /// <summary>
    /// Paired scores against the fixture's task means over all 8 pairs (batches of 3, so 3 batches with padding):
    /// feature-circuits IG at every site and layer, RelP with the frozen attention pattern, and IG over the input embeddings.
    /// </summary>
    [Theory]
    [InlineData("ig")]
    [InlineData("relp_frozen_attn")]
    [InlineData("ig_inputs")]
    public void PairedTaskScoresEqualTheReference(string name)
    {
        var options = name switch
        {
            "ig" => new AttributionOptions { Method = AttributionMethod.IG, IgSteps = 10 },
            "relp_frozen_attn" => new AttributionOptions { Method = AttributionMethod.RelP, RelPRules = BackwardRules.RelPFrozenAttention },
            "ig_inputs" => new AttributionOptions { Method = AttributionMethod.IGInputs, IgSteps = 10 },
            _ => throw new ArgumentException(name),
        };
        var scores = Attributor.Score(Model.Value, new PromptTask("fixture", F.Pairs), options with { BatchSize = 3 });
        CompareTaskScores(name, scores);
    }

    /// <summary>
    /// Unpaired scores (the clean prompts alone, metric logit(clean answer)) with the zero and the mean baseline, against
    /// the fixture's task means. The mean baseline is the mean clean value over the whole task at each site, layer and
    /// position from the end, whatever the batching: the same numbers for batches of 3 and of 8.
    /// </summary>
    [Theory]
    [InlineData(AttributionMethod.AtP, Baseline.Zero, 3)]
    [InlineData(AttributionMethod.RelP, Baseline.Zero, 3)]
    [InlineData(AttributionMethod.AtP, Baseline.Mean, 3)]
    [InlineData(AttributionMethod.RelP, Baseline.Mean, 3)]
    [InlineData(AttributionMethod.AtP, Baseline.Mean, 8)]
    [InlineData(AttributionMethod.RelP, Baseline.Mean, 8)]
    public void UnpairedBaselineScoresEqualTheReference(AttributionMethod method, Baseline baseline, int batchSize)
    {
        var task = new PromptTask("fixture-unpaired", F.Pairs.Select(p => new PromptPair(p.Line, p.CleanIds, null, p.CleanAnswer, null, p.Case)).ToList());
        Assert.False(task.IsPaired);
        var scores = Attributor.Score(Model.Value, task, new AttributionOptions
        {
            Method = method, Baseline = baseline, Metric = Metric.AnswerLogit, BatchSize = batchSize,
        });
        CompareTaskScores($"nopair/{(method == AttributionMethod.AtP ? "atp" : "relp")}/{(baseline == Baseline.Zero ? "zero" : "mean")}", scores);
    }

    /// <summary>
    /// Every site and layer of <paramref name="scores"/> against the fixture's task/<paramref name="name"/>/S/l ([positions, width],
    /// row p = position p from the end): max |ours − ref| ≤ 1e-4 · max |ref| per array, and element-wise
    /// |ours − ref| ≤ 1e-3 · |ref| + 1e-5 · max |ref|.
    /// </summary>
    void CompareTaskScores(string name, NodeScores scores)
    {
        double worstArray = 0, worstBound = 0, worstRel = 0;
        foreach (var site in NodeSites.All)
            for (int l = 0; l < scores.Config.Layers; l++)
            {
                var expected = F.Get($"task/{name}/{site.Name()}/{l}");
                var ours = scores.Get(site, l);
                Assert.Equal(expected.Length, ours.Length);
                double max = Math.Max(1e-12, expected.Max(x => Math.Abs((double)x))), err = 0;
                for (int i = 0; i < expected.Length; i++)
                {
                    double r = expected[i], d = Math.Abs(ours[i] - r);
                    err = Math.Max(err, d);
                    double bound = 1e-3 * Math.Abs(r) + ElementFloor * max;
                    Assert.True(d <= bound, $"{name} {site.Name()} L{l} element {i} (position {i / site.Width(scores.Config)} from the end): " +
                        $"ours {ours[i]} vs reference {r}, |diff| {d} > {bound}");
                    worstBound = Math.Max(worstBound, d / bound);
                    if (Math.Abs(r) >= 1e-2 * max) worstRel = Math.Max(worstRel, d / Math.Abs(r));
                }
                worstArray = Math.Max(worstArray, err / max);
                Assert.True(err <= Tolerance * max, $"{name} {site.Name()} L{l}: max error {err} vs max |score| {max}");
            }
        output.WriteLine($"task/{name}: worst max|diff|/max|ref| {worstArray:E2}; worst |diff|/(1e-3|ref| + 1e-5 max|ref|) {worstBound:E2}; " +
            $"worst |diff|/|ref| over elements with |ref| >= 1e-2 max|ref| {worstRel:E2}");
    }

    [Fact]
    public void IntegratedGradientsEqualTheReference()
    {
        var model = Model.Value;
        var task = new PromptTask("pair0", [F.Pairs[0]]);
        var scores = Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.IG, IgSteps = 10, Sites = [NodeSite.MlpAct] });
        int w = model.Config.HiddenDim, T = F.Pairs[0].CleanIds.Length;
        for (int l = 0; l < model.Config.Layers; l++)
        {
            var expected = F.Get($"pair0/ig/mlp_act/{l}");
            var ours = scores.Get(NodeSite.MlpAct, l);
            double max = expected.Max(Math.Abs), err = 0;
            for (int t = 0; t < T; t++)
                for (int i = 0; i < w; i++) err = Math.Max(err, Math.Abs(expected[t * w + i] - ours[(T - 1 - t) * w + i]));
            output.WriteLine($"IG mlp_act L{l}: max error {err:E2}, max |score| {max:E2}");
            Assert.True(err <= Tolerance * max, $"IG L{l}: {err} vs {max}");
        }
    }

    static double Compare(string name, float[] ours, int offset, int count)
    {
        var expected = F.Get(name);
        Assert.Equal(count, expected.Length);
        double max = 1e-12, err = 0;
        for (int i = 0; i < count; i++)
        {
            max = Math.Max(max, Math.Abs(expected[i]));
            err = Math.Max(err, Math.Abs(expected[i] - ours[offset + i]));
        }
        Assert.True(err <= Tolerance * max, $"{name}: max |ours - autograd| {err} vs max |autograd| {max}");
        return err / max;
    }
}
