using Xunit;
using NeuronTrace.TestSupport;
using NeuronTrace.Formats;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

public class SentencePieceBpeTokenizerTests
{
    static readonly Lazy<SentencePieceBpeTokenizer> Stories = new(() =>
    {
        var v = GgufVocabulary.Read(RepoPaths.Stories260KGguf);
        return SentencePieceBpeTokenizer.FromVocabulary(v.Tokens, v.Scores, v.TokenTypes, v.BosId, v.EosId, v.UnkId);
    });

    static readonly Lazy<(SentencePieceBpeTokenizer Tok, IReadOnlyList<TokenizerCase> Cases)?> Llama2 = new(() =>
        TokenizerCases.Shared("llama2") is { } s ? (SentencePieceBpeTokenizer.LoadModel(s.ModelPath), s.Cases) : null);

    public static TheoryData<int> GoldenIndexes => new(Enumerable.Range(0, 50));
    public static TheoryData<int> Llama2Indexes => new(Enumerable.Range(0, 66));

    [Theory]
    [MemberData(nameof(GoldenIndexes))]
    public void GgufVocabularyGivesTheLlama2cGoldenIds(int index)
    {
        var c = TokenizerCases.Golden[index];
        TokenizerCases.AssertIds(c, Stories.Value.Encode(c.Text, addBos: true), "stories260K GGUF vocabulary: ");
        Assert.Equal(c.Text, Stories.Value.Decode(c.Ids));
    }

    [Fact]
    public void GgufVocabularyShape()
    {
        var tok = Stories.Value;
        Assert.Equal(512, tok.VocabSize);
        Assert.Equal((1, 2, 0), (tok.BosId, tok.EosId, tok.UnkId));
        Assert.Equal("\u2581Once", tok.Piece(403));
        Assert.Equal("Once", tok.Decode(1, 403));
        Assert.Equal(" Once", tok.Decode(403, 403));
        Assert.Equal("", tok.Decode(403, 2)); // control pieces print nothing
        Assert.Equal([], tok.Encode("", addBos: false));
    }

    [Fact]
    public void Llama2CaseFileHas66Cases()
    {
        if (Llama2.Value is not { } l) return; // plain clone without ../shared
        Assert.Equal(66, l.Cases.Count);
    }

    [Theory]
    [MemberData(nameof(Llama2Indexes))]
    public void EncodesLlama2Case(int index)
    {
        if (Llama2.Value is not { } l) return; // plain clone without ../shared
        var c = l.Cases[index];
        TokenizerCases.AssertIds(c, l.Tok.Encode(c.Text, addBos: false), "Llama 2: ");
        Assert.Equal([1, .. c.Ids], l.Tok.Encode(c.Text, addBos: true));
    }

    [Theory]
    [MemberData(nameof(Llama2Indexes))]
    public void DecodesLlama2CaseBackToText(int index)
    {
        if (Llama2.Value is not { } l) return;
        var c = l.Cases[index];
        Assert.Equal(c.Text, l.Tok.Decode(c.Ids));
        Assert.Equal(c.Text, l.Tok.Decode([1, .. c.Ids, 2]));
    }

    [Fact]
    public void Llama2ModelShape()
    {
        if (Llama2.Value is not { } l) return;
        var tok = l.Tok;
        Assert.Equal(32000, tok.VocabSize);
        Assert.Equal((1, 2, 0), (tok.BosId, tok.EosId, tok.UnkId));
        Assert.Equal("<s>", tok.Piece(1));
        Assert.Equal("<0x0A>", tok.Piece(13));
        Assert.Equal(SentencePieceBpeTokenizer.Byte, tok.TokenType(13));
        Assert.Equal([259], tok.Encode(" ", addBos: false));
    }

    [Fact]
    public void LongTextEncodesQuickly()
    {
        // A long run with no spaces is one BPE sequence; a quadratic merge loop would take seconds here.
        string text = string.Concat(Enumerable.Repeat("Once upon a time there was a big dog. ", 2000)) + new string('a', 20000);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        int[] ids = Stories.Value.Encode(text, addBos: false);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"took {sw.Elapsed}");
        Assert.Equal(text, Stories.Value.Decode(ids));
    }
}
