using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Formats;

/// <summary>A loaded model: weights, its tokenizer (null when the files have none) and where it came from.</summary>
internal sealed record LoadedModel(LlamaWeights Weights, ITextTokenizer? Tokenizer, string Format, string Path)
{
    public LlamaConfig Config => Weights.Config;

    /// <summary>What the model is without its weights (its header's description).</summary>
    public ModelDescription Description => new(Config, Tokenizer, Format, Path);

    /// <summary>The tokenizer, or a one-line error naming the files this format looks for.</summary>
    public ITextTokenizer RequireTokenizer() => Description.RequireTokenizer();
}

/// <summary>What a model is without its weights: its configuration, tokenizer, format and path.</summary>
/// <param name="Config">The model's shape and hyper-parameters.</param>
/// <param name="Tokenizer">Its tokenizer; null when the files have none.</param>
/// <param name="Format"><c>llama2.c</c>, <c>gguf</c> or <c>hf</c>.</param>
/// <param name="Path">The file or folder the model was found at.</param>
public sealed record ModelDescription(LlamaConfig Config, ITextTokenizer? Tokenizer, string Format, string Path)
{
    /// <summary>The tokenizer, or a one-line error naming the files this format looks for.</summary>
    internal ITextTokenizer RequireTokenizer() => Tokenizer ?? throw new ModelFormatException(Path, Format switch
    {
        "llama2.c" => $"no tokenizer beside the model (looked for tok{Config.VocabSize}.bin and tokenizer.bin)",
        "gguf" => "the file holds no tokenizer.ggml vocabulary",
        _ => "no tokenizer in the folder (looked for tokenizer.json, tokenizer.model, tok512.bin and tokenizer.bin)",
    });
}

/// <summary>
/// Loads a model from a file or folder, choosing the format from what is there: a llama2.c <c>.bin</c> (with
/// <c>tok512.bin</c>/<c>tokenizer.bin</c> beside it), a <c>.gguf</c>, or a Hugging Face folder (<c>config.json</c> +
/// safetensors), or a Hugging Face id ORG/NAME[@REVISION] found in the local hub cache (<see cref="HubCache"/>). The RoPE layout follows from the format; the user never passes it.
/// </summary>
public static class ModelLoader
{
    /// <summary>The model bundled with NeuronTrace (stories260K), next to the executable or in the repository.</summary>
    public static string DefaultModelPath => BundledFiles.Find("models", "stories260K", "stories260K.bin");

    /// <param name="path">A file, a folder or a hub id; null for the bundled model.</param>
    /// <param name="hubCacheFolder">Where hub ids are looked up (<see cref="HubCache.Folder"/> by default).</param>
    internal static LoadedModel Load(string? path = null, string? hubCacheFolder = null)
    {
        var (where, format) = Locate(path ?? DefaultModelPath, hubCacheFolder);
        return format switch
        {
            "hf" => LoadHfFolder(where),
            "gguf" => LoadGguf(where),
            _ => LoadLlama2c(where),
        };
    }

    /// <summary>
    /// The weights of a model <see cref="Describe"/> described, with the tokenizer it already read: <c>trace</c> and
    /// <c>attribute</c> describe, tokenise and plan first, and read the weights only for a run that fits.
    /// </summary>
    /// <exception cref="ModelFormatException">The tensor data is truncated or unreadable, or the file no longer has the
    /// shape it was described with (changed in between).</exception>
    internal static LoadedModel Load(ModelDescription described)
    {
        var weights = described.Format switch
        {
            "hf" => HfFolderFormat.Load(described.Path),
            "gguf" => GgufFormat.Load(described.Path).Weights,
            _ => Llama2cBinFormat.Load(described.Path),
        };
        if (weights.Config != described.Config)
            throw new ModelFormatException(described.Path, "the model changed while it was being opened (its header now describes another shape)");
        return new LoadedModel(weights, described.Tokenizer, described.Format, described.Path);
    }

    /// <summary>
    /// The configuration and tokenizer without the weights, for <c>info</c> and <c>plan</c>: from a Hugging Face folder's
    /// config.json, a GGUF file's metadata and tensor table (memory-mapped; tensor data untouched but for the tiny RoPE
    /// frequency table of Llama 3 files) or a llama2.c file's 28-byte header, each with its tokenizer. A 3 GB model
    /// costs megabytes; the file's size is still checked against what the header describes.
    /// </summary>
    /// <param name="path">A file, a folder or a hub id ORG/NAME[@REVISION]; null for the bundled model.</param>
    /// <param name="hubCacheFolder">Where hub ids are looked up (the Hugging Face hub cache by default).</param>
    /// <exception cref="ModelFormatException">The model is missing, truncated or not a format this loader reads.</exception>
    public static ModelDescription Describe(string? path = null, string? hubCacheFolder = null)
    {
        var (where, format) = Locate(path ?? DefaultModelPath, hubCacheFolder);
        switch (format)
        {
            case "hf":
            {
                var config = HfConfig.Load(System.IO.Path.Combine(where, HfConfig.FileName));
                return new ModelDescription(config, LoadHfTokenizer(where, config), "hf", where);
            }
            case "gguf":
            {
                var (config, vocab) = GgufFormat.Describe(where);
                return new ModelDescription(config, GgufTokenizer(where, vocab), "gguf", where);
            }
            default:
            {
                LlamaConfig config;
                using (var fs = InputFiles.OpenRead(where)) config = Llama2cBinFormat.ReadConfig(fs, where);
                return new ModelDescription(config, FindLlama2cTokenizer(where, config.VocabSize), "llama2.c", where);
            }
        }
    }

    /// <summary>
    /// Where the model is and in which format ("hf" for a folder, "gguf" or "llama2.c" for a file), with the checks that
    /// need no parsing: existence, an empty or special file, an unknown extension, an ambiguous folder.
    /// </summary>
    static (string Path, string Format) Locate(string path, string? hubCacheFolder)
    {
        if (Directory.Exists(path)) return LocateInFolder(path);
        // A path that exists wins; otherwise ORG/NAME[@REVISION] is looked up in the local Hugging Face cache.
        if (!File.Exists(path) && HubCache.IsModelId(path)) return LocateInFolder(HubCache.Resolve(path, hubCacheFolder));
        if (!File.Exists(path)) throw new ModelFormatException(path, "no such file or folder");
        InputFiles.RequireRegular(path);   // before anything opens it: a FIFO would block, a device read without end
        string ext = System.IO.Path.GetExtension(path).ToLowerInvariant();
        if (ext == ".gguf" || HasGgufMagic(path)) return (path, "gguf");
        if (ext == ".bin") return (path, "llama2.c");
        throw new ModelFormatException(path, "unknown model format (expected a llama2.c .bin, a .gguf, or a Hugging Face folder with config.json)");
    }

    static LoadedModel LoadLlama2c(string path)
    {
        var weights = Llama2cBinFormat.Load(path);
        return new LoadedModel(weights, FindLlama2cTokenizer(path, weights.Config.VocabSize), "llama2.c", path);
    }

    /// <summary>tok{vocab}.bin or tokenizer.bin beside a llama2.c model, or null.</summary>
    static ITextTokenizer? FindLlama2cTokenizer(string path, int vocabSize)
    {
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!;
        foreach (var name in new[] { "tok" + vocabSize + ".bin", "tokenizer.bin" })
        {
            string t = System.IO.Path.Combine(dir, name);
            if (File.Exists(t)) return Tokenizers.Llama2cTokenizer.Load(t, vocabSize);
        }
        return null;
    }

    static LoadedModel LoadGguf(string path)
    {
        var (weights, vocab) = GgufFormat.Load(path);
        return new LoadedModel(weights, GgufTokenizer(path, vocab), "gguf", path);
    }

    /// <summary>The tokenizer a GGUF vocabulary describes, or null without one.</summary>
    static ITextTokenizer? GgufTokenizer(string path, GgufVocabulary? vocab)
    {
        if (vocab is null) return null;
        return vocab.Model switch
        {
            "llama" => SentencePieceBpeTokenizer.FromVocabulary(vocab.Pieces, vocab.Scores, vocab.TokenTypes, vocab.BosId, vocab.EosId, vocab.UnkId),
            // Llama 3 GGUFs: byte-level BPE, the merge rules beside the tokens.
            "gpt2" => ByteLevel(vocab),
            _ => throw new ModelFormatException(path, $"tokenizer.ggml.model {ErrorText.Quote(vocab.Model)} is not supported (SentencePiece \"llama\" or byte-level \"gpt2\" vocabularies)"),
        };

        ITextTokenizer ByteLevel(GgufVocabulary v)
        {
            var merges = v.Merges ?? throw new ModelFormatException(path, "tokenizer.ggml.model is \"gpt2\" but tokenizer.ggml.merges is missing");
            try { return Llama3Tokenizer.FromGgufVocabulary(v.Pieces, merges, v.TokenTypes, v.BosId, v.EosId); }
            catch (FormatException e) { throw new ModelFormatException(path, $"tokenizer.ggml.merges: {e.Message}"); }
        }
    }

    /// <summary>
    /// A folder with <c>config.json</c> is a Hugging Face checkpoint. Otherwise the model is its one llama2.c
    /// <c>.bin</c> (tokenizer .bin files aside) or, failing that, its one <c>.gguf</c>: a .bin beside a .gguf wins,
    /// as in the bundled <c>models/stories260K</c>, where the .bin is the upstream original and the default model.
    /// Two or more files of the winning kind are ambiguous.
    /// </summary>
    static (string Path, string Format) LocateInFolder(string dir)
    {
        if (File.Exists(System.IO.Path.Combine(dir, "config.json"))) return (dir, "hf");
        var bins = Directory.GetFiles(dir, "*.bin").Where(f => !IsTokenizerBin(f)).Order(StringComparer.Ordinal).ToArray();
        var ggufs = Directory.GetFiles(dir, "*.gguf").Order(StringComparer.Ordinal).ToArray();
        var candidates = bins.Length > 0 ? bins : ggufs;
        if (candidates.Length == 1) return Locate(candidates[0], null);
        throw new ModelFormatException(dir, candidates.Length == 0
            ? "folder has no config.json, .gguf or llama2.c .bin model"
            : $"folder holds {candidates.Length} {(bins.Length > 0 ? "llama2.c .bin" : ".gguf")} models ({string.Join(", ", candidates.Select(System.IO.Path.GetFileName))}); pass one of them");
    }

    static LoadedModel LoadHfFolder(string dir)
    {
        var weights = HfFolderFormat.Load(dir);
        return new LoadedModel(weights, LoadHfTokenizer(dir, weights.Config), "hf", dir);
    }

    static ITextTokenizer? LoadHfTokenizer(string dir, LlamaConfig config)
    {
        if (TokenizerFiles.FindInFolder(dir) is not { } tokenizerFile) return null;
        var tok = TokenizerFiles.Load(tokenizerFile);
        // A tokenizer smaller than the embedding is normal (vocabularies padded to a round size); a larger one
        // produces ids the model has no row for, which would only fail mid-generation.
        if (tok.VocabSize > config.VocabSize)
            throw new ModelFormatException(tokenizerFile, $"the tokenizer has {tok.VocabSize} tokens but the model's vocab_size is {config.VocabSize}");
        return tok;
    }

    static bool IsTokenizerBin(string f)
    {
        string n = System.IO.Path.GetFileName(f);
        return n == "tokenizer.bin" || (n.StartsWith("tok") && !n.StartsWith("tokenizer") && n.EndsWith(".bin") && n.Length <= 12);
    }

    static bool HasGgufMagic(string path)
    {
        using var fs = InputFiles.OpenRead(path);
        Span<byte> m = stackalloc byte[4];
        return fs.Read(m) == 4 && m.SequenceEqual("GGUF"u8);
    }
}
