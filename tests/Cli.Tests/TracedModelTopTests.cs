using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// The facade's <see cref="TracedModel.AttributeTop"/> (the top-k selected where the scores were summed, no slab
/// readout) against <see cref="TracedModel.Attribute"/> followed by <see cref="NodeScoresExtensions.Top"/> (NodeRanking
/// over the downloaded scores), on the bundled model on the CPU: the same nodes, scores and order for every k, ties
/// included (on pronoun_gender many nodes score exactly 0, so a k past the nonzero ones cuts into a tie).
/// </summary>
public class TracedModelTopTests
{
    [Fact]
    public void AttributeTop_gives_the_top_k_of_the_downloaded_scores()
    {
        using var model = TracedModel.Open();
        var (train, _) = TracedModel.Split(model.LoadTask("pronoun_gender"));
        foreach (var site in new[] { NodeSite.MlpAct, NodeSite.Resid })
        {
            var scores = model.Attribute(train, AttributionMethod.RelP, [site]);
            int count = model.Config.Layers * scores.Positions * site.Width(model.Config);
            int nonzero = Enumerable.Range(0, model.Config.Layers).Sum(l => scores.Get(site, l).Count(v => v != 0));
            Assert.True(nonzero < count, $"{site}: no zero scores, so no tie is tested");
            foreach (int k in new[] { 0, 1, 20, nonzero + 5, count + 1 })
            {
                var want = scores.Top(site, k);
                var got = model.AttributeTop(train, site, k);
                Assert.Equal(want.Select(t => t.Node), got.Select(t => t.Node));
                Assert.Equal(want.Select(t => t.Score), got.Select(t => t.Score));
            }
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => model.AttributeTop(train, NodeSite.MlpAct, -1));
    }
}
