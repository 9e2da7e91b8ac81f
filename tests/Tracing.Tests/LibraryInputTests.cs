using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>Tasks built in code skip the loader's checks; the library still names what is wrong instead of crashing inside.</summary>
public class LibraryInputTests
{
    static Llama Model() => new(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 6), CpuBackend.Instance);
    static readonly PromptPair Good = new(1, [1, 5, 9], [1, 6, 9], 10, 11);

    [Fact]
    public void AnAnswerOutsideTheVocabularyIsNamed()
    {
        using var model = Model();
        int v = model.Config.VocabSize;
        var task = new PromptTask("t", [Good, new PromptPair(7, [1, 5, 9], [1, 6, 9], 10, v)]);
        var e = Assert.Throws<ArgumentException>(() => Attributor.Score(model, task, new AttributionOptions()));
        Assert.Contains("line 7: patch_answer token", e.Message);
        var means = SiteMeans.Compute(model, [Good.PatchIds!], [NodeSite.MlpAct]);
        var scores = Attributor.Score(model, new PromptTask("t", [Good]), new AttributionOptions { Sites = [NodeSite.MlpAct] });
        Assert.Contains("line 7", Assert.Throws<ArgumentException>(() => CircuitSweep.Run(model, scores, NodeSite.MlpAct, "relp", task, means, [1])).Message);
    }

    [Fact]
    public void PatchingPromptsOfDifferentLengthsIsNamed()
    {
        using var model = Model();
        var task = new PromptTask("t", [Good, new PromptPair(3, [1, 5, 9], [1, 6], 10, 11)]);
        var e = Assert.Throws<ArgumentException>(() => Attributor.Score(model, task, new AttributionOptions()));
        Assert.Contains("line 3: the clean prompt has 3 tokens and the patch prompt 2", e.Message);
        // The zero baseline never reads the patch prompts.
        Attributor.Score(model, task, new AttributionOptions { Baseline = Baseline.Zero, Metric = Metric.AnswerLogit });
    }

    [Fact]
    public void MeansOfNoPromptsAndScoresOfAnUnscoredSiteAreNamed()
    {
        using var model = Model();
        Assert.Contains("at least one prompt", Assert.Throws<ArgumentException>(() => SiteMeans.Compute(model, [], [NodeSite.MlpAct])).Message);
        var scores = Attributor.Score(model, new PromptTask("t", [Good]), new AttributionOptions { Sites = [NodeSite.MlpAct] });
        var e = Assert.Throws<ArgumentException>(() => new NodeRanking(scores, NodeSite.Attn));
        Assert.Contains("no scores for attn layer 0 (scored: mlp_act", e.Message);
    }
}
