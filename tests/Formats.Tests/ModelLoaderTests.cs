using NeuronTrace.TestSupport;
using static NeuronTrace.Formats.Tests.FormatTestHelpers;
using NeuronTrace.Formats;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;

namespace NeuronTrace.Formats.Tests;

/// <summary>What <see cref="ModelLoader"/> picks from a folder, and the checks it makes across files.</summary>
public sealed class ModelLoaderTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("loader");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string P(string name) => Path.Combine(_dir, name);

    string FolderWith(string name, params string[] files)
    {
        string dir = P(name);
        Directory.CreateDirectory(dir);
        foreach (var f in files) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        return dir;
    }

    [Fact]
    public void BundledFolderWithBinAndGgufLoadsTheBin()
    {
        string folder = Path.GetDirectoryName(RepoPaths.Stories260KBin)!;
        Assert.True(File.Exists(Path.Combine(folder, "stories260K.gguf")));
        var m = ModelLoader.Load(folder);
        Assert.Equal("llama2.c", m.Format);
        Assert.Equal(RepoPaths.Stories260KBin, Path.GetFullPath(m.Path));
        Assert.Equal(RopeLayout.Interleaved, m.Config.RopeLayout);
        Assert.Equal(512, m.RequireTokenizer().VocabSize);
    }

    [Fact]
    public void FolderPreferenceIsConfigThenBinThenGguf()
    {
        var gguf = ModelLoader.Load(FolderWith("gguf-only", RepoPaths.Stories260KGguf, RepoPaths.Tok512));
        Assert.Equal("gguf", gguf.Format); // tok512.bin is a tokenizer, not a second model
        Assert.EndsWith("stories260K.gguf", gguf.Path);

        string hf = P("hf");
        HfFolderWriter.Write(Stories, hf, RepoPaths.Tok512);
        File.Copy(RepoPaths.Stories260KBin, Path.Combine(hf, "stories260K.bin"));
        File.Copy(RepoPaths.Stories260KGguf, Path.Combine(hf, "stories260K.gguf"));
        Assert.Equal("hf", ModelLoader.Load(hf).Format);
    }

    [Fact]
    public void TwoModelsOfTheSameKindAreAmbiguous()
    {
        string bins = FolderWith("bins", RepoPaths.Stories260KBin, RepoPaths.Stories260KGguf);
        File.Copy(RepoPaths.Stories260KBin, Path.Combine(bins, "other.bin"));
        AssertFormatError(() => ModelLoader.Load(bins), bins, "folder holds 2 llama2.c .bin models (other.bin, stories260K.bin); pass one of them");

        string ggufs = FolderWith("ggufs", RepoPaths.Stories260KGguf);
        File.Copy(RepoPaths.Stories260KGguf, Path.Combine(ggufs, "copy.gguf"));
        AssertFormatError(() => ModelLoader.Load(ggufs), ggufs, "folder holds 2 .gguf models (copy.gguf, stories260K.gguf)");

        AssertFormatError(() => ModelLoader.Load(FolderWith("none", RepoPaths.Tok512)), P("none"), "folder has no config.json, .gguf or llama2.c .bin model");
    }

    [Fact]
    public void TokenizerLargerThanTheVocabularyIsRefusedAtLoad()
    {
        // A 32-token model beside a 265-piece SentencePiece tokenizer.model: ids 32..264 would have no embedding row.
        string small = P("small");
        HfFolderWriter.Write(RandomLlama.Create(RandomLlama.SmallConfig(), seed: 1), small, null);
        string tokenizer = Path.Combine(small, "tokenizer.model");
        File.WriteAllBytes(tokenizer, TinyTokenizerFiles.SentencePieceModel());
        AssertFormatError(() => ModelLoader.Load(small), tokenizer, "the tokenizer has 265 tokens but the model's vocab_size is 32");
    }

    [Fact]
    public void TokenizerSmallerThanTheVocabularyIsFine()
    {
        // Padded vocabularies are normal: stories260K's 512 rows with the same 265-piece tokenizer.
        string padded = P("padded");
        HfFolderWriter.Write(Stories, padded, null);
        File.WriteAllBytes(Path.Combine(padded, "tokenizer.model"), TinyTokenizerFiles.SentencePieceModel());
        var m = ModelLoader.Load(padded);
        Assert.Equal(512, m.Config.VocabSize);
        var tok = Assert.IsType<SentencePieceBpeTokenizer>(m.Tokenizer);
        Assert.Equal(265, tok.VocabSize);
        Assert.Equal([1, 264], tok.Encode("ab", addBos: true));
    }

    [Fact]
    public void AMissingTokenizerNamesTheFilesItsFormatLooksFor()
    {
        var bin = ModelLoader.Load(Path.Combine(FolderWith("bare-bin", RepoPaths.Stories260KBin), "stories260K.bin"));
        Assert.Null(bin.Tokenizer);
        Assert.Contains("looked for tok512.bin and tokenizer.bin", Assert.Throws<ModelFormatException>(() => bin.RequireTokenizer()).Message);

        string hf = P("bare-hf");
        HfFolderWriter.Write(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, hf, tokenizerFileToCopy: null);
        var folder = ModelLoader.Load(hf);
        Assert.Null(folder.Tokenizer);
        var e = Assert.Throws<ModelFormatException>(() => folder.RequireTokenizer());
        Assert.StartsWith(hf, e.Message);
        Assert.Contains("looked for tokenizer.json, tokenizer.model, tok512.bin and tokenizer.bin", e.Message);
    }

    [Fact]
    public void ALlama3GgufLoadsItsByteLevelTokenizer()
    {
        // The 263-token byte-level vocabulary of TinyTokenizerTests.GgufByteLevelVocabulary, whose encoding of "the hello"
        // is worked out by hand there, stored the way llama.cpp stores Llama 3 (tokenizer.ggml.model "gpt2" + merges).
        var tokens = Enumerable.Range(0, 256).Select(b => TinyTokenizerFiles.ByteChar(b).ToString())
            .Concat(["he", "ll", "hell", "\u0120hell", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]).ToArray();
        int[] types = tokens.Select((_, id) => id >= 260 ? 3 : 1).ToArray();
        var weights = RandomLlama.Create(RandomLlama.SmallConfig() with { VocabSize = tokens.Length, BosId = 260, EosId = 261 }, seed: 3);
        var vocabulary = new NeuronTrace.Formats.GgufVocabulary(tokens, new float[tokens.Length], types, 260, 261, -1, "gpt2",
            ["h e", "l l", "he ll", "\u0120 hell"]);
        string path = P("llama3.gguf");
        GgufFormat.Write(weights, path, vocabulary: vocabulary);
        var tok = ModelLoader.Load(path).RequireTokenizer();
        Assert.Equal([260, 116, 256, 259, 111], tok.Encode("the hello", addBos: true));

        string noMerges = P("no-merges.gguf");
        GgufFormat.Write(weights, noMerges, vocabulary: vocabulary with { Merges = null });
        Assert.Contains("tokenizer.ggml.merges is missing", Assert.Throws<ModelFormatException>(() => ModelLoader.Load(noMerges)).Message);
        string badMerges = P("bad-merges.gguf");
        GgufFormat.Write(weights, badMerges, vocabulary: vocabulary with { Merges = ["x y"] });
        var e = Assert.Throws<ModelFormatException>(() => ModelLoader.Load(badMerges));
        Assert.StartsWith(badMerges, e.Message);
        Assert.Contains("tokenizer.ggml.merges", e.Message);
    }
}
