using NeuronTrace.Attribution.Tasks;

namespace NeuronTrace.Attribution.Tests;

public class PromptTaskTests
{
    [Fact]
    public void MostCommonLengthKeepsOnlyThatLength()
    {
        var pairs = new[] { 3, 5, 5, 4, 5, 4 }.Select((n, i) => new PromptPair(i + 1, new int[n], new int[n], 1, 2)).ToList();
        var kept = new PromptTask("t", pairs).OfMostCommonLength();
        Assert.Equal([2, 3, 5], kept.Pairs.Select(p => p.Line));
        // Ties go to the longer length.
        var tie = new PromptTask("t", pairs.Take(4).ToList()).OfMostCommonLength();
        Assert.All(tie.Pairs, p => Assert.Equal(5, p.CleanIds.Length));
    }
}
