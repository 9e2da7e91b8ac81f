using NeuronTrace.Model;
using NeuronTrace.Tracing.Runs;

namespace NeuronTrace.Tracing.Tests;

/// <summary>The run folder's CSV dialect: quoted fields round-trip, and broken files are one-line errors naming the line.</summary>
public class RunFormatTests
{
    [Fact]
    public void QuotedFieldsRoundTrip()
    {
        string[] header = ["a", "b", "c"];
        string[] row = ["plain", "with, comma", "quote \" and\nnewline"];
        string text = Csv.Line(header) + Csv.Line(row) + "\n" + Csv.Line(["1", "", "3"]);
        Assert.Equal("plain,\"with, comma\",\"quote \"\" and\nnewline\"\n", Csv.Line(row));
        var t = Csv.Parse("x.csv", text);
        Assert.Equal(header, t.Header);
        Assert.Equal(2, t.Rows.Count);
        Assert.Equal(row, t.Rows[0].Fields);
        Assert.Equal(["1", "", "3"], t.Rows[1].Fields);
        Assert.Equal(5, t.Rows[1].Line); // the quoted newline counts as a line
        Assert.Equal(["x"], Csv.Parse("y.csv", "h\r\nx\r\n").Rows[0].Fields);
    }

    [Theory]
    [InlineData("a,b\n1,2,3\n", "line 2: 3 columns, expected 2")]
    [InlineData("a,b\n\"1,2\n", "line 2: a quoted field is not closed")]
    [InlineData("a,b\n\"1\"x,2\n", "line 2: text after a closing quote")]
    public void BrokenFilesAreOneLineErrors(string text, string message)
    {
        var e = Assert.Throws<ModelFormatException>(() => Csv.Parse("bad.csv", text));
        Assert.Contains(message, e.Message);
        Assert.Contains("bad.csv", e.Message);
    }

    [Fact]
    public void NodeColumnsSpellTheNodeId()
    {
        var id = new NodeId(NodeSite.Attn, 2, 5, 9);
        Assert.Equal(["attn/L2/P-5/9", "attn", "2", "5", "9"], Csv.NodeFields(id));
        Assert.Equal(RunFormat.NodeColumns.Length, Csv.NodeFields(id).Count());
    }
}
