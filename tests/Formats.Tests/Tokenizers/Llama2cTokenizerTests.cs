using Xunit;
using System.Text.Json;
using NeuronTrace.TestSupport;
using NeuronTrace.Formats.Tokenizers;

namespace NeuronTrace.Formats.Tests;

public class Llama2cTokenizerTests
{
    static readonly Llama2cTokenizer Tok = Llama2cTokenizer.Load(RepoPaths.Tok512);

    public static TheoryData<int> GoldenIndexes => new(Enumerable.Range(0, 50));

    [Fact]
    public void GoldenFileHasFiftyCases() => Assert.Equal(50, TokenizerCases.Golden.Count);

    [Fact]
    public void VocabularyShape()
    {
        Assert.Equal(512, Tok.VocabSize);
        Assert.Equal(1, Tok.BosId);
        Assert.Equal(2, Tok.EosId);
        Assert.Equal("<unk>", Tok.Piece(0));
        Assert.Equal("\n<s>\n", Tok.Piece(1));
        Assert.Equal("<0x41>", Tok.Piece(0x41 + 3));
        Assert.Equal(" Once", Tok.Piece(403));
        Assert.Equal(-(403 - 259), Tok.Score(403));
    }

    [Theory]
    [MemberData(nameof(GoldenIndexes))]
    public void EncodesGoldenCase(int index)
    {
        var c = TokenizerCases.Golden[index];
        TokenizerCases.AssertIds(c, Tok.Encode(c.Text, addBos: true));
        // Without BOS the same ids follow.
        Assert.Equal(c.Ids[1..], Tok.Encode(c.Text, addBos: false));
    }

    [Theory]
    [MemberData(nameof(GoldenIndexes))]
    public void DecodesGoldenCaseBackToText(int index)
    {
        var c = TokenizerCases.Golden[index];
        Assert.Equal(c.Text, Tok.Decode(c.Ids));
    }

    [Fact]
    public void PiecesMatchGoldenPieces()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Golden, "tokenizer_cases.json")));
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            var ids = c.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32());
            var pieces = c.GetProperty("pieces").EnumerateArray().Select(x => x.GetString());
            Assert.Equal(pieces, ids.Select(Tok.Piece));
        }
    }

    [Fact]
    public void StreamingDecodeStripsSpaceAfterBosAndPrintsBytesLikeLlama2c()
    {
        Assert.Equal("Once", Tok.Decode(1, 403));
        Assert.Equal(" Once", Tok.Decode(403, 403));
        Assert.Equal("\n", Tok.Decode(5, 10 + 3));  // <0x0A> prints a newline
        Assert.Equal("", Tok.Decode(5, 0xE2 + 3)); // one byte of a multi-byte character: safe_printf prints nothing
        Assert.Equal("", Tok.Decode(5, 0x01 + 3)); // a control byte likewise
        Assert.Equal([0xE2], Tok.DecodeBytes(5, 0xE2 + 3));
    }

    [Fact]
    public void StreamingDecodeReproducesTheGoldenStory()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Golden, "golden.json")));
        var story = doc.RootElement.GetProperty("default_story");
        int[] ids = story.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray();
        string expected = story.GetProperty("text").GetString()!;
        // run.c feeds BOS first and prints decode(token, next) for each generated token.
        var text = new System.Text.StringBuilder();
        int previous = 1;
        foreach (int id in ids.SkipWhile(i => i == 1))
        {
            text.Append(Tok.Decode(previous, id));
            previous = id;
        }
        Assert.Equal(expected.TrimEnd('\n'), text.ToString().TrimEnd('\n'));
    }
}
