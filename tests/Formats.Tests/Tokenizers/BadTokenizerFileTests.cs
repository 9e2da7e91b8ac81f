using NeuronTrace.TestSupport;
using Xunit;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

/// <summary>Missing, truncated and corrupt files give a one-line ModelFormatException that names the file.</summary>
public class BadTokenizerFileTests
{
    static string Write(string name, byte[] content)
    {
        string path = Path.Combine(RepoPaths.TempDir("badtok"), name);
        File.WriteAllBytes(path, content);
        return path;
    }

    static void AssertRejects(string path, Func<string, object> load, string? problemContains = null)
    {
        var e = Assert.Throws<ModelFormatException>(() => load(path));
        Assert.Equal(path, e.File);
        Assert.StartsWith(path, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        if (problemContains is not null) Assert.Contains(problemContains, e.Problem);
    }

    public static TheoryData<string> Loaders => new() { "tok512", "spm", "tiktoken", "hfjson" };

    static Func<string, object> Loader(string kind) => kind switch
    {
        "tok512" => p => Llama2cTokenizer.Load(p),
        "spm" => SentencePieceBpeTokenizer.LoadModel,
        "tiktoken" => Llama3Tokenizer.LoadTiktoken,
        _ => Llama3Tokenizer.LoadHfJson,
    };

    [Theory]
    [MemberData(nameof(Loaders))]
    public void MissingFile(string kind) =>
        AssertRejects(Path.Combine(RepoPaths.TempDir("badtok"), "absent.bin"), Loader(kind));

    [Theory]
    [InlineData(2)]      // inside the header
    [InlineData(1000)]   // inside an entry
    [InlineData(6226)]   // one byte short of the end
    public void TruncatedTok512(int length)
    {
        byte[] whole = File.ReadAllBytes(RepoPaths.Tok512);
        AssertRejects(Write("tok512.bin", whole[..length]), p => Llama2cTokenizer.Load(p), "truncated");
    }

    [Fact]
    public void Tok512CutAtAnEntryBoundaryIsCaughtWhenTheVocabSizeIsKnown()
    {
        byte[] whole = File.ReadAllBytes(RepoPaths.Tok512);
        Assert.Equal(512, Llama2cTokenizer.Load(RepoPaths.Tok512, vocabSize: 512).VocabSize);
        // Walk the entries to the end of id 399: without a vocab size, a file cut there would look complete.
        int pos = 4;
        for (int id = 0; id < 400; id++) pos += 8 + BitConverter.ToInt32(whole, pos + 4);
        AssertRejects(Write("tok512.bin", whole[..pos]), p => Llama2cTokenizer.Load(p, vocabSize: 512), "truncated");
    }

    [Fact]
    public void CorruptTok512Length()
    {
        byte[] bytes = File.ReadAllBytes(RepoPaths.Tok512);
        BitConverter.GetBytes(100_000).CopyTo(bytes, 4 + 4); // the length of id 0
        AssertRejects(Write("tok512.bin", bytes), p => Llama2cTokenizer.Load(p), "length");
    }

    [Fact]
    public void TruncatedSentencePieceModel()
    {
        byte[] model = TinyTokenizerFiles.SentencePieceModel();
        AssertRejects(Write("tokenizer.model", model[..(model.Length / 2)]), SentencePieceBpeTokenizer.LoadModel);
    }

    [Fact]
    public void GarbageSentencePieceModel() =>
        AssertRejects(Write("tokenizer.model", [0x0A, 0xFF, 0xFF, 0xFF, 0x0F, 1, 2, 3]), SentencePieceBpeTokenizer.LoadModel, "corrupt");

    [Fact]
    public void UnigramSentencePieceModelIsRefused() =>
        AssertRejects(Write("tokenizer.model", TinyTokenizerFiles.SentencePieceModel(modelType: 1)), SentencePieceBpeTokenizer.LoadModel, "BPE");

    [Fact]
    public void TruncatedLlama2Model()
    {
        if (TokenizerCases.Shared("llama2") is not { } s) return; // plain clone without ../shared
        byte[] head = File.ReadAllBytes(s.ModelPath)[..100_000];
        AssertRejects(Write("tokenizer.model", head), SentencePieceBpeTokenizer.LoadModel);
    }

    [Fact]
    public void CorruptTiktokenFile()
    {
        AssertRejects(Write("tokenizer.model", "IQ== 0\nnot-base64! 1\n"u8.ToArray()), Llama3Tokenizer.LoadTiktoken, "line 2");
        AssertRejects(Write("tokenizer.model", "IQ== 0\nIQ== 0\n"u8.ToArray()), Llama3Tokenizer.LoadTiktoken, "repeated");
        AssertRejects(Write("tokenizer.model", "IQ==\n"u8.ToArray()), Llama3Tokenizer.LoadTiktoken, "line 1");
    }

    [Fact]
    public void CorruptTokenizerJson()
    {
        AssertRejects(Write("tokenizer.json", "{\"model\": {"u8.ToArray()), Llama3Tokenizer.LoadHfJson);
        AssertRejects(Write("tokenizer.json", "{\"version\": \"1.0\"}"u8.ToArray()), Llama3Tokenizer.LoadHfJson);
        AssertRejects(Write("tokenizer.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}"u8.ToArray()), Llama3Tokenizer.LoadHfJson, "Unigram");
    }
}
