using NeuronTrace.Model.Formats;
using NeuronTrace.Model.Tokenizers;

namespace NeuronTrace.Model;

/// <summary>A loaded model: weights, its tokenizer (null when the files have none) and where it came from.</summary>
public sealed record LoadedModel(LlamaWeights Weights, ITextTokenizer? Tokenizer, string Format, string Path)
{
    public LlamaConfig Config => Weights.Config;

    public ITextTokenizer RequireTokenizer() =>
        Tokenizer ?? throw new ModelFormatException(Path, "no tokenizer found beside the model (tok512.bin, tokenizer.model or tokenizer.json)");
}

/// <summary>
/// Loads a model from a file or folder, choosing the format from what is there: a llama2.c <c>.bin</c> (with
/// <c>tok512.bin</c>/<c>tokenizer.bin</c> beside it), a <c>.gguf</c>, or a Hugging Face folder (<c>config.json</c> +
/// safetensors). The RoPE layout follows from the format; the user never passes it.
/// </summary>
public static class ModelLoader
{
    /// <summary>The model bundled with NeuronTrace (stories260K), next to the executable or in the repository.</summary>
    public static string DefaultModelPath => BundledFiles.Find("models", "stories260K", "stories260K.bin");

    public static LoadedModel Load(string? path = null)
    {
        path ??= DefaultModelPath;
        if (Directory.Exists(path)) return LoadFolder(path);
        if (!File.Exists(path)) throw new ModelFormatException(path, "no such file or folder");
        string ext = System.IO.Path.GetExtension(path).ToLowerInvariant();
        if (ext == ".gguf" || HasGgufMagic(path)) return LoadGguf(path);
        if (ext == ".bin") return LoadLlama2c(path);
        throw new ModelFormatException(path, "unknown model format (expected a llama2.c .bin, a .gguf, or a Hugging Face folder with config.json)");
    }

    static LoadedModel LoadLlama2c(string path)
    {
        var weights = Llama2cBinFormat.Load(path);
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        ITextTokenizer? tok = null;
        foreach (var name in new[] { "tok" + weights.Config.VocabSize + ".bin", "tokenizer.bin" })
        {
            string t = System.IO.Path.Combine(dir, name);
            if (File.Exists(t)) { tok = Llama2cTokenizer.Load(t, weights.Config.VocabSize); break; }
        }
        return new LoadedModel(weights, tok, "llama2.c", path);
    }

    static LoadedModel LoadGguf(string path)
    {
        var (weights, vocab) = GgufFormat.Load(path);
        ITextTokenizer? tok = null;
        if (vocab is not null)
        {
            if (vocab.Model != "llama")
                throw new ModelFormatException(path, $"tokenizer.ggml.model \"{vocab.Model}\" is not supported (only SentencePiece \"llama\" vocabularies)");
            tok = SentencePieceBpeTokenizer.FromVocabulary(vocab.Pieces, vocab.Scores, vocab.TokenTypes, vocab.BosId, vocab.EosId, vocab.UnkId);
        }
        return new LoadedModel(weights, tok, "gguf", path);
    }

    static LoadedModel LoadFolder(string dir)
    {
        if (File.Exists(System.IO.Path.Combine(dir, "config.json")))
            return new LoadedModel(HfFolderFormat.Load(dir), TokenizerFiles.LoadFromFolder(dir), "hf", dir);
        var candidates = Directory.GetFiles(dir, "*.gguf").Concat(Directory.GetFiles(dir, "*.bin").Where(f => !IsTokenizerBin(f))).ToArray();
        if (candidates.Length == 1) return Load(candidates[0]);
        throw new ModelFormatException(dir, candidates.Length == 0
            ? "folder has no config.json, .gguf or llama2.c .bin model"
            : $"folder holds {candidates.Length} model files; pass one of them");
    }

    static bool IsTokenizerBin(string f)
    {
        string n = System.IO.Path.GetFileName(f);
        return n == "tokenizer.bin" || (n.StartsWith("tok") && !n.StartsWith("tokenizer") && n.EndsWith(".bin") && n.Length <= 12);
    }

    static bool HasGgufMagic(string path)
    {
        using var fs = File.OpenRead(path);
        Span<byte> m = stackalloc byte[4];
        return fs.Read(m) == 4 && m.SequenceEqual("GGUF"u8);
    }
}
