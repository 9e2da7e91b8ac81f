using NeuronTrace.TestSupport;
using Xunit;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

/// <summary>Each loader on a small file written here, with expected ids worked out by hand.</summary>
public class TinyTokenizerTests
{
    static string Write(string name, byte[] content)
    {
        string path = Path.Combine(RepoPaths.TempDir("tok"), name);
        File.WriteAllBytes(path, content);
        return path;
    }

    static string Write(string name, string content) => Write(name, System.Text.Encoding.UTF8.GetBytes(content));

    public static TheoryData<string> SentencePieceSources => new() { "tokenizer.model", "tokenizer.json", "gguf-arrays" };

    static ITextTokenizer LoadSentencePiece(string source)
    {
        switch (source)
        {
            case "tokenizer.model": return SentencePieceBpeTokenizer.LoadModel(Write("tokenizer.model", TinyTokenizerFiles.SentencePieceModel()));
            case "tokenizer.json":
                string dir = Path.GetDirectoryName(Write("tokenizer.json", TinyTokenizerFiles.SentencePieceJson()))!;
                return Assert.IsType<SentencePieceBpeTokenizer>(TokenizerFiles.LoadFromFolder(dir));
            default:
                var v = TinyTokenizerFiles.SentencePieceVocab();
                return SentencePieceBpeTokenizer.FromVocabulary(v.Select(x => x.Piece).ToArray(), v.Select(x => x.Score).ToArray(),
                    v.Select(x => x.Type).ToArray(), bosId: 1, eosId: 2, unkId: 0);
        }
    }

    [Theory]
    [MemberData(nameof(SentencePieceSources))]
    public void SentencePieceMergesByScoreLeftmostFirstWithByteFallback(string source)
    {
        var tok = LoadSentencePiece(source);
        Assert.Equal(265, tok.VocabSize);
        Assert.Equal((1, 2), (tok.BosId, tok.EosId));
        Assert.Equal([1, 264], tok.Encode("ab", addBos: true));
        Assert.Equal([259, 261, 260, 259, 0x63 + 3], tok.Encode("ba c", addBos: false)); // 'c' is no piece: byte <0x63>
        Assert.Equal([262, 264], tok.Encode("a ab", addBos: false));
        Assert.Equal([], tok.Encode("", addBos: false));
        Assert.Equal([259, 259, 262], tok.Encode("  a", addBos: false)); // no whitespace cleanup
        Assert.Equal([262, 0x3C + 3, 0x73 + 3, 0x3E + 3], tok.Encode("a<s>", addBos: false)); // control text is plain text
        Assert.Equal("ba c", tok.Decode([1, 259, 261, 260, 259, 0x63 + 3, 2]));
        Assert.Equal("a", tok.Decode(1, 262));
        Assert.Equal(" a", tok.Decode(260, 262));
        Assert.Equal("\u2581ab", tok.Piece(264));
    }

    [Fact]
    public void SentencePieceModelWithWhitespaceCleanup()
    {
        var tok = SentencePieceBpeTokenizer.LoadModel(Write("tokenizer.model", TinyTokenizerFiles.SentencePieceModel(removeExtraWhitespaces: true)));
        Assert.Equal([262, 264], tok.Encode("   a    ab  ", addBos: false));
        Assert.Equal([], tok.Encode("   ", addBos: false));
    }

    [Fact]
    public void SentencePieceWithoutByteFallbackFoldsUnknownRunsIntoOneUnk()
    {
        var v = TinyTokenizerFiles.SentencePieceVocab().Where(x => x.Type != 6).ToArray();
        // Ids shift down by 256 without the byte pieces: "▁" 3, "a" 4, "b" 5.
        var tok = SentencePieceBpeTokenizer.FromVocabulary(v.Select(x => x.Piece).ToArray(), v.Select(x => x.Score).ToArray(),
            v.Select(x => x.Type).ToArray(), bosId: 1, eosId: 2, unkId: 0);
        Assert.Equal([3, 5, 0, 5], tok.Encode("bxyb", addBos: false));
    }

    [Fact]
    public void TiktokenMergesByLowestRank()
    {
        var tok = Llama3Tokenizer.LoadTiktoken(Write("tokenizer.model", TinyTokenizerFiles.TiktokenRanks()));
        Assert.Equal(258 + 256, tok.VocabSize);
        Assert.Equal((258, 259, 267), (tok.BosId, tok.EosId, tok.EotId));
        Assert.Equal([258, 256, 257, 111, 32, 119, 111, 114, 108, 100], tok.Encode("hello world", addBos: true));
        Assert.Equal([256, 267], tok.EncodeWithSpecialTokens("he<|eot_id|>"));
        Assert.Equal("hello world", tok.Decode([258, 256, 257, 111, 32, 119, 111, 114, 108, 100, 259]));
        Assert.Equal("he", tok.Piece(256));
        Assert.Equal("<0xE2>", tok.Piece(0xE2));
    }

    [Theory]
    [InlineData(false, new[] { 116, 257, 261, 111 })]
    [InlineData(true, new[] { 262, 261, 111 })]
    public void HfByteLevelJsonMergesByRank(bool ignoreMerges, int[] expected)
    {
        var tok = Llama3Tokenizer.LoadHfJson(Write("tokenizer.json", TinyTokenizerFiles.ByteLevelJson(ignoreMerges)));
        Assert.Equal(266, tok.VocabSize);
        Assert.Equal((263, 264, 265), (tok.BosId, tok.EosId, tok.EotId));
        Assert.Equal(expected, tok.Encode("the hello", addBos: false));
        Assert.Equal([263, .. expected], tok.Encode("the hello", addBos: true));
        Assert.Equal("the hello", tok.Decode([263, .. expected, 264]));
        Assert.Equal([263, .. expected, 265], tok.EncodeWithSpecialTokens("<|begin_of_text|>the hello<|eot_id|>"));
        Assert.DoesNotContain(265, tok.Encode("the hello<|eot_id|>", addBos: false));
        Assert.Equal([0xC3, 0xA9], tok.Encode("\u00e9", addBos: false)); // é: two byte tokens, no merges
        Assert.Equal(" hell", tok.Piece(261));
        Assert.Equal("\u00e9", tok.Decode([0xC3, 0xA9]));
    }

    [Fact]
    public void GgufByteLevelVocabulary()
    {
        var tokens = Enumerable.Range(0, 256).Select(b => TinyTokenizerFiles.ByteChar(b).ToString())
            .Concat(["he", "ll", "hell", "\u0120hell", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]).ToArray();
        int[] types = tokens.Select((_, id) => id >= 260 ? 3 : 1).ToArray();
        var tok = Llama3Tokenizer.FromGgufVocabulary(tokens, ["h e", "l l", "he ll", "\u0120 hell"], types, bosId: 260, eosId: 261);
        Assert.Equal(263, tok.VocabSize);
        Assert.Equal((260, 261, 262), (tok.BosId, tok.EosId, tok.EotId));
        Assert.Equal([260, 116, 256, 259, 111], tok.Encode("the hello", addBos: true));
        Assert.Equal([260, 256, 262], tok.EncodeWithSpecialTokens("<|begin_of_text|>he<|eot_id|>"));
        Assert.Equal("the hello", tok.Decode([260, 116, 256, 259, 111, 261]));
        Assert.Throws<FormatException>(() => Llama3Tokenizer.FromGgufVocabulary(tokens, ["x y"], types, 260, 261));
    }

    [Fact]
    public void HfSentencePieceJsonIsRefusedByLoadHfJson()
    {
        string path = Write("tokenizer.json", TinyTokenizerFiles.SentencePieceJson());
        var e = Assert.Throws<ModelFormatException>(() => Llama3Tokenizer.LoadHfJson(path));
        Assert.Equal(path, e.File);
    }
}
