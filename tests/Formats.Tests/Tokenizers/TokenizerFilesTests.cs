using NeuronTrace.TestSupport;
using Xunit;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

public class TokenizerFilesTests
{
    [Fact]
    public void EmptyFolderHasNoTokenizer() => Assert.Null(TokenizerFiles.LoadFromFolder(RepoPaths.TempDir("tokdir")));

    [Fact]
    public void Tok512Folder()
    {
        var tok = Assert.IsType<Llama2cTokenizer>(TokenizerFiles.LoadFromFolder(Path.GetDirectoryName(RepoPaths.Tok512)!));
        Assert.Equal([1, 403, 407, 261, 378], tok.Encode("Once upon a time", addBos: true));
    }

    [Fact]
    public void TokenizerModelIsToldApartByContent()
    {
        string spm = RepoPaths.TempDir("tokdir");
        File.WriteAllBytes(Path.Combine(spm, "tokenizer.model"), TinyTokenizerFiles.SentencePieceModel());
        Assert.IsType<SentencePieceBpeTokenizer>(TokenizerFiles.LoadFromFolder(spm));

        string tiktoken = RepoPaths.TempDir("tokdir");
        File.WriteAllText(Path.Combine(tiktoken, "tokenizer.model"), TinyTokenizerFiles.TiktokenRanks());
        Assert.IsType<Llama3Tokenizer>(TokenizerFiles.LoadFromFolder(tiktoken));
    }

    [Fact]
    public void SharedLlamaModelsAreToldApartByContent()
    {
        if (TokenizerCases.Shared("llama2") is not { } l2 || TokenizerCases.Shared("llama3") is not { } l3) return; // plain clone
        Assert.IsType<SentencePieceBpeTokenizer>(TokenizerFiles.LoadFromFolder(Path.GetDirectoryName(l2.ModelPath)!));
        Assert.IsType<Llama3Tokenizer>(TokenizerFiles.LoadFromFolder(Path.GetDirectoryName(l3.ModelPath)!));
    }

    [Fact]
    public void TokenizerJsonComesFirst()
    {
        string dir = RepoPaths.TempDir("tokdir");
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), TinyTokenizerFiles.ByteLevelJson(ignoreMerges: true));
        File.WriteAllBytes(Path.Combine(dir, "tokenizer.model"), TinyTokenizerFiles.SentencePieceModel());
        File.Copy(RepoPaths.Tok512, Path.Combine(dir, "tok512.bin"));
        Assert.IsType<Llama3Tokenizer>(TokenizerFiles.LoadFromFolder(dir));
        File.Delete(Path.Combine(dir, "tokenizer.json"));
        Assert.IsType<SentencePieceBpeTokenizer>(TokenizerFiles.LoadFromFolder(dir));
        File.Delete(Path.Combine(dir, "tokenizer.model"));
        Assert.IsType<Llama2cTokenizer>(TokenizerFiles.LoadFromFolder(dir));
    }

    [Fact]
    public void CorruptFileInFolderThrows()
    {
        string dir = RepoPaths.TempDir("tokdir");
        string path = Path.Combine(dir, "tokenizer.model");
        File.WriteAllBytes(path, [0x0A, 0x05, 0x0A]);
        Assert.Equal(path, Assert.Throws<ModelFormatException>(() => TokenizerFiles.LoadFromFolder(dir)).File);
    }
}
