using NeuronTrace.Model;

namespace NeuronTrace.Model.Tests;

/// <summary>The one node id spelling: printed and parsed in NodeId, the older graph key accepted, anything else refused.</summary>
public class NodeIdTests
{
    [Theory]
    [InlineData("mlp_act/L3/P-7/17", NodeSite.MlpAct, 3, 7, 17)]
    [InlineData("attn_z/L0/P-0/0", NodeSite.AttnZ, 0, 0, 0)]
    [InlineData("resid/L12/P-130/4095", NodeSite.Resid, 12, 130, 4095)]
    public void PrintsAndParsesTheOneSpelling(string text, NodeSite site, int layer, int position, int index)
    {
        var id = new NodeId(site, layer, position, index);
        Assert.Equal(text, id.ToString());
        Assert.Equal(id, NodeId.Parse(text));
    }

    [Fact]
    public void AcceptsTheOldGraphKeyAsAnMlpActNode() =>
        Assert.Equal(new NodeId(NodeSite.MlpAct, 3, 7, 7), NodeId.Parse("L3/P7/N7"));

    [Theory]
    [InlineData("mlp_act/L3/P7/7")]
    [InlineData("mlp/L3/P-7/7")]
    [InlineData("mlp_act/L3/P-7")]
    [InlineData("mlp_act/L-1/P-7/7")]
    [InlineData("mlp_act/L99999999999/P-0/0")]
    [InlineData("")]
    public void RefusesAnythingElseInOneLine(string text)
    {
        var e = Assert.Throws<FormatException>(() => NodeId.Parse(text));
        Assert.Contains("bad node id", e.Message);
        Assert.Contains(NodeId.Syntax, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
