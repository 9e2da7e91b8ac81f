using Xunit;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

public class Llama3TokenizerTests
{
    static readonly Lazy<(Llama3Tokenizer Tok, IReadOnlyList<TokenizerCase> Cases)?> Llama3 = new(() =>
        TokenizerCases.Shared("llama3") is { } s ? (Llama3Tokenizer.LoadTiktoken(s.ModelPath), s.Cases) : null);

    public static TheoryData<int> Llama3Indexes => new(Enumerable.Range(0, 71));

    [Fact]
    public void Llama3CaseFileHas71Cases()
    {
        if (Llama3.Value is not { } l) return; // plain clone without ../shared
        Assert.Equal(71, l.Cases.Count);
    }

    [Theory]
    [MemberData(nameof(Llama3Indexes))]
    public void EncodesLlama3Case(int index)
    {
        if (Llama3.Value is not { } l) return; // plain clone without ../shared
        var c = l.Cases[index];
        TokenizerCases.AssertIds(c, l.Tok.Encode(c.Text, addBos: false), "Llama 3 tiktoken: ");
        Assert.Equal([128000, .. c.Ids], l.Tok.Encode(c.Text, addBos: true));
        Assert.Equal(c.Text, l.Tok.Decode(c.Ids));
    }

    [Fact]
    public void VocabularyAndSpecialTokens()
    {
        if (Llama3.Value is not { } l) return;
        var tok = l.Tok;
        Assert.Equal(128256, tok.VocabSize);
        Assert.Equal((128000, 128001, 128009), (tok.BosId, tok.EosId, tok.EotId));
        Assert.Equal("<|begin_of_text|>", tok.Piece(128000));
        Assert.Equal("<|start_header_id|>", tok.Piece(128006));
        Assert.Equal("<|end_header_id|>", tok.Piece(128007));
        Assert.Equal("<|eom_id|>", tok.Piece(128008));
        Assert.Equal("<|python_tag|>", tok.Piece(128010));
        Assert.Equal("<|reserved_special_token_0|>", tok.Piece(128002));
        Assert.Equal("<|reserved_special_token_250|>", tok.Piece(128255));
        Assert.Equal([2028, 374, 264, 1296, 11914, 13], tok.Encode("This is a test sentence.", addBos: false));
        Assert.Equal("This is a test sentence.", tok.Decode([128000, 2028, 374, 264, 1296, 11914, 13, 128001]));
        Assert.Equal(" is", tok.Decode(2028, 374));
    }

    [Fact]
    public void PlainEncodeIgnoresSpecialTokenTextButEncodeWithSpecialTokensParsesIt()
    {
        if (Llama3.Value is not { } l) return;
        const string text = "<|begin_of_text|>Hi<|eot_id|>";
        int[] plain = l.Tok.Encode(text, addBos: false);
        Assert.DoesNotContain(128000, plain);
        Assert.DoesNotContain(128009, plain);
        Assert.Equal([128000, .. l.Tok.Encode("Hi", addBos: false), 128009], l.Tok.EncodeWithSpecialTokens(text));
        Assert.Equal("Hi<|eot_id|>", l.Tok.Decode(l.Tok.EncodeWithSpecialTokens(text))); // BOS dropped, other specials by name
    }

    [Fact]
    public void ChatTemplateIsMethodSection82Prompt()
    {
        const string question = "What is the capital of the state containing Dallas?";
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n" +
            question + "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nAnswer:",
            ChatTemplate.Llama31(question, "Answer:"));
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            ChatTemplate.Llama31("Hi", "", "Be brief."));
    }

    [Fact]
    public void ChatTemplateTokenizesToTheSpecialIds()
    {
        if (Llama3.Value is not { } l) return;
        var tok = l.Tok;
        const string question = "What is the capital of the state containing Dallas?";
        int[] ids = tok.EncodeWithSpecialTokens(ChatTemplate.Llama31(question, "Answer:"));
        int[] expected =
        [
            128000, 128006, 9125, 128007, 271, 128009,
            128006, 882, 128007, .. tok.Encode("\n\n" + question, addBos: false), 128009,
            128006, 78191, 128007, .. tok.Encode("\n\nAnswer:", addBos: false),
        ];
        Assert.Equal(expected, ids);
        Assert.Equal(["\n\n", "Answer", ":"], tok.Encode("\n\nAnswer:", addBos: false).Select(tok.Piece));
        Assert.Equal(question, tok.Decode(tok.Encode(question, addBos: false)));
    }
}
