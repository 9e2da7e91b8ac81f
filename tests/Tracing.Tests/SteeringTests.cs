using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Steering;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

public class SteeringTests
{
    static Llama Small(int seed) => new(RandomLlama.Create(RandomLlama.SmallConfig(), seed), CpuBackend.Instance);

    static readonly int[] Prompt = [1, 5, 9, 3, 17, 22, 8];

    [Fact]
    public void MultiplierOneLeavesLogitsUnchangedExactly()
    {
        using var model = Small(31);
        int v = model.Config.VocabSize;
        NeuronEdit[] edits =
        [
            new(0, 3, PositionKind.All, 0, EditMode.Scale, 1f),
            NeuronEdit.Scale(1, 7, 0, 1f),
            new(1, 11, PositionKind.Absolute, 2, EditMode.Scale, 1f),
        ];
        var r = Steering.Steering.Run(model, Prompt, edits, topTokens: v, continueSteps: 5);
        Assert.Equal(Prompt.Length + 2, r.EditedValues);
        Assert.Equal(r.Before.Select(t => (t.Id, t.Logit, t.Prob)), r.After.Select(t => (t.Id, t.Logit, t.Prob)));
        Assert.Equal(r.ContinuationBefore, r.ContinuationAfter);
    }

    [Fact]
    public void ScalingChangesLogits()
    {
        using var model = Small(32);
        var all = Enumerable.Range(0, model.Config.HiddenDim).Select(i => new NeuronEdit(1, i, PositionKind.All, 0, EditMode.Scale, -3f)).ToList();
        var r = Steering.Steering.Run(model, Prompt, all, topTokens: model.Config.VocabSize, continueSteps: 0);
        Assert.NotEqual(r.Before[0].Logit, r.After.Single(t => t.Id == r.Before[0].Id).Logit);
        Assert.Empty(r.ContinuationAfter);
    }

    [Fact]
    public void SetConstantIsWhatTheSiteHolds()
    {
        using var model = Small(33);
        int w = model.Config.HiddenDim;
        NeuronEdit[] edits = [NeuronEdit.Set(1, 5, 0, 2.5f), NeuronEdit.Set(0, 2, 3, -1.25f), new(1, 9, PositionKind.All, 0, EditMode.Set, 0.75f)];
        var resolved = Steering.Steering.Resolve(model, Prompt, edits, null);
        using var plan = Steering.Steering.BuildPlan(model, resolved, Prompt.Length);
        using var pass = model.Forward(new TokenBatch([Prompt]), LogitRows.Last, plan);
        using var clean = model.Forward(new TokenBatch([Prompt]), LogitRows.Last);
        var l1 = pass.HostSite(NodeSite.MlpAct, 1);
        var l0 = pass.HostSite(NodeSite.MlpAct, 0);
        int last = Prompt.Length - 1;
        Assert.Equal(2.5f, l1[last * w + 5]);
        Assert.Equal(-1.25f, l0[(last - 3) * w + 2]);
        for (int t = 0; t < Prompt.Length; t++) Assert.Equal(0.75f, l1[t * w + 9]);
        // Layer 0 before the edited position is untouched (causal), and other units of layer 0 at position 0 too.
        var c0 = clean.HostSite(NodeSite.MlpAct, 0);
        for (int i = 0; i < w; i++) Assert.Equal(c0[i], l0[i]);
    }

    [Fact]
    public void FromSourceWithTheSamePromptChangesNothing()
    {
        using var model = Small(34);
        var edits = Enumerable.Range(0, 10).Select(i => new NeuronEdit(i % 2, i * 2, PositionKind.All, 0, EditMode.FromSource)).ToList();
        var r = Steering.Steering.Run(model, Prompt, edits, topTokens: model.Config.VocabSize, continueSteps: 4, sourceIds: Prompt);
        Assert.Equal(r.Before.Select(t => (t.Id, t.Logit)), r.After.Select(t => (t.Id, t.Logit)));
        Assert.Equal(r.ContinuationBefore, r.ContinuationAfter);
    }

    [Fact]
    public void FromSourceMatchesPositionsFromTheEnd()
    {
        using var model = Small(35);
        int w = model.Config.HiddenDim;
        int[] source = [1, 4, 4, 12, 30];
        var resolved = Steering.Steering.Resolve(model, Prompt, [new NeuronEdit(1, 6, PositionKind.All, 0, EditMode.FromSource)], source);
        Assert.Equal(source.Length, resolved.Count); // the prompt's first two positions have no source counterpart
        using var src = model.Forward(new TokenBatch([source]), LogitRows.None);
        var a = src.HostSite(NodeSite.MlpAct, 1);
        foreach (var e in resolved)
        {
            int fromEnd = Prompt.Length - 1 - e.Position;
            Assert.Equal(a[(source.Length - 1 - fromEnd) * w + 6], e.Offset);
            Assert.Equal(0f, e.Scale);
        }
    }

    [Theory]
    [InlineData("L3/N17=x2", 3, 17, PositionKind.FromEnd, 0, EditMode.Scale, 2f)]
    [InlineData("L0/N5@P2=c-1.5", 0, 5, PositionKind.FromEnd, 2, EditMode.Set, -1.5f)]
    [InlineData("L1/N9@all=src", 1, 9, PositionKind.All, 0, EditMode.FromSource, 0f)]
    [InlineData("l2/n4@A3=x0", 2, 4, PositionKind.Absolute, 3, EditMode.Scale, 0f)]
    public void ParsesSpecs(string spec, int layer, int neuron, PositionKind kind, int pos, EditMode mode, float value)
    {
        Assert.Equal(new NeuronEdit(layer, neuron, kind, pos, mode, value), NeuronEdit.Parse(spec));
    }

    [Theory]
    [InlineData("L3/N17")]
    [InlineData("L3N17=x2")]
    [InlineData("L3/N17@Q1=x2")]
    [InlineData("L3/N17=xabc")]
    [InlineData("L3/N17=y2")]
    public void RejectsBadSpecs(string spec) => Assert.Throws<FormatException>(() => NeuronEdit.Parse(spec));

    [Fact]
    public void OutOfRangeEditsAreRejected()
    {
        using var model = Small(36);
        Assert.Throws<ArgumentException>(() => Steering.Steering.Run(model, Prompt, [NeuronEdit.Scale(5, 0, 0, 2f)], 3, 0));
        Assert.Throws<ArgumentException>(() => Steering.Steering.Run(model, Prompt, [NeuronEdit.Scale(0, 999, 0, 2f)], 3, 0));
        Assert.Throws<ArgumentException>(() => Steering.Steering.Run(model, Prompt, [NeuronEdit.Scale(0, 1, 40, 2f)], 3, 0));
        Assert.Throws<ArgumentException>(() => Steering.Steering.Run(model, Prompt, [NeuronEdit.FromSource(0, 1, 0)], 3, 0));
        // A =src edit at a position the (shorter) source prompt lacks would change nothing: refused, from the end or absolute.
        int[] source = [1, 4, 6];
        var e1 = Assert.Throws<ArgumentException>(() => Steering.Steering.Run(model, Prompt, [NeuronEdit.FromSource(0, 1, 3)], 3, 0, source));
        Assert.Contains("3-token source prompt", e1.Message);
        Assert.Throws<ArgumentException>(() => Steering.Steering.Run(model, Prompt, [new NeuronEdit(0, 1, PositionKind.Absolute, 1, EditMode.FromSource)], 3, 0, source));
        // The source's own positions, and @all (which skips the positions the source lacks), still work.
        Assert.Equal(1, Steering.Steering.Run(model, Prompt, [NeuronEdit.FromSource(0, 1, 2)], 3, 0, source).EditedValues);
        Assert.Equal(3, Steering.Steering.Run(model, Prompt, [new NeuronEdit(0, 1, PositionKind.All, 0, EditMode.FromSource)], 3, 0, source).EditedValues);
    }

    [Fact]
    public void RelPCircuitFlipsMoreLinesThanRandomNeuronsOnStories260K()
    {
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        using var model = new Llama(loaded.Weights, CpuBackend.Instance);
        var task = PromptTask.Load(Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl"), loaded.RequireTokenizer());
        var train = task.Take(48);
        var eval = new PromptTask("eval", task.Pairs.Skip(48).ToList());
        var scores = Attributor.Score(model, train, new AttributionOptions { Method = AttributionMethod.RelP, Sites = [NodeSite.MlpAct] });
        var circuit = scores.Enumerate(NodeSite.MlpAct).OrderByDescending(x => Math.Abs(x.Score)).Take(100).Select(x => x.Node).ToList();
        var rates = Steering.Steering.FlipRate(model, eval, circuit, randomSeed: 1);
        Assert.Equal(eval.Count, rates.Lines);
        Assert.Equal(100, rates.Nodes);
        Assert.True(rates.CircuitRate > rates.RandomRate, $"circuit {rates.CircuitRate:P1} vs random {rates.RandomRate:P1} (baseline {rates.BaselineRate:P1})");
        Assert.True(rates.CircuitRate > rates.BaselineRate);
    }
}
