using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Steering;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// The facade's <see cref="TracedModel.Steer"/> and <see cref="TracedModel.FlipRate"/> (what <c>steer</c> runs) against
/// <see cref="Steering"/> called on a model and token ids built by hand, the path <c>steer</c> took before the facade.
/// (The facade has no test project of its own: its other calls are checked through samples/Consumer.)
/// </summary>
public class TracedModelSteerTests
{
    const string Prompt = "Once upon a time, there was a little girl";

    static void AssertSame(SteeringResult expected, SteeringResult actual)
    {
        Assert.Equal(expected.Before, actual.Before);
        Assert.Equal(expected.After, actual.After);
        Assert.Equal(expected.ContinuationBefore, actual.ContinuationBefore);
        Assert.Equal(expected.ContinuationAfter, actual.ContinuationAfter);
        Assert.Equal(expected.EditedValues, actual.EditedValues);
    }

    [Fact]
    public void SteerIsSteeringRunOnTheBosPrependedPrompt()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        var tok = loaded.RequireTokenizer();
        using var llama = new Llama(loaded.Weights, CpuBackend.Instance);
        NeuronEdit[] edits = [NeuronEdit.Parse("L3/N17=x4"), NeuronEdit.Parse("L1/N5@all=c2.5"), NeuronEdit.Parse("L4/N100@P2=src")];
        const string source = "The dog ran to the park and saw a big red ball";

        var facade = model.Steer(Prompt, edits, topTokens: 12, continueSteps: 6, source: source);
        var direct = Steering.Run(llama, tok.Encode(Prompt, addBos: true), edits, 12, 6, tok.Encode(source, addBos: true), tok);
        AssertSame(direct, facade);
        // The edits reach the logits (a set of 1 + prompt-length + 1 values), so the comparison is not of two unedited runs.
        Assert.Equal(1 + tok.Encode(Prompt, addBos: true).Length + 1, facade.EditedValues);
        Assert.NotEqual(facade.Before.Select(t => t.Logit), facade.After.Select(t => t.Logit));
        Assert.Equal(12, facade.After.Count);
        Assert.Equal(6, facade.ContinuationAfter.Count);
    }

    [Fact]
    public void AScaleOfOneChangesNothing()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var r = model.Steer(Prompt, [NeuronEdit.Parse("L2/N40@all=x1")], topTokens: 5, continueSteps: 4);
        Assert.Equal(r.Before, r.After);
        Assert.Equal(r.ContinuationBefore, r.ContinuationAfter);
    }

    [Fact]
    public void BadEditsAreArgumentErrors()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        Assert.Throws<ArgumentException>(() => model.Steer(Prompt, [NeuronEdit.Parse("L99/N1=x2")]));
        Assert.Throws<ArgumentException>(() => model.Steer(Prompt, [NeuronEdit.Parse("L1/N1=src")]));
        Assert.Throws<ArgumentException>(() => model.Steer(Prompt, [NeuronEdit.Parse("L1/N1=x2")], topTokens: 0));
    }

    [Fact]
    public void FlipRateIsSteeringFlipRateOfTheCircuit()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var (train, eval) = TracedModel.Split(model.LoadTask("pronoun_gender"));
        var circuit = model.Attribute(train, AttributionMethod.RelP, [NodeSite.MlpAct]).Top(NodeSite.MlpAct, 40).Select(t => t.Node).ToList();

        var facade = model.FlipRate(eval, circuit, randomSeed: 3);
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        using var llama = new Llama(loaded.Weights, CpuBackend.Instance);
        var direct = Steering.FlipRate(llama, eval, circuit, 3);
        Assert.Equal(direct, facade);
        Assert.Equal(eval.Count, facade.Lines);
        Assert.Equal(40, facade.Nodes);
    }
}
