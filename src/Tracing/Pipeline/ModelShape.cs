using System.Buffers.Binary;
using NeuronTrace.Formats;
using NeuronTrace.Model;

namespace NeuronTrace.Tracing.Pipeline;

/// <summary>
/// A model's shape without reading its weights, for <see cref="MemoryPlan"/>: the llama2.c header (28 bytes), a
/// Hugging Face folder's config.json, or a GGUF file's metadata (memory-mapped; tensors untouched).
/// </summary>
public static class ModelShape
{
    public static LlamaConfig Read(string? path = null)
    {
        path ??= ModelLoader.DefaultModelPath;
        if (Directory.Exists(path))
        {
            string config = Path.Combine(path, "config.json");
            if (File.Exists(config)) return HfConfig.Load(config);
            var bins = Directory.GetFiles(path, "*.bin").Where(f => !Path.GetFileName(f).StartsWith("tok", StringComparison.Ordinal)).ToArray();
            if (bins.Length == 1) return Read(bins[0]);
            var ggufs = Directory.GetFiles(path, "*.gguf");
            if (ggufs.Length == 1) return Read(ggufs[0]);
            throw new ModelFormatException(path, "no config.json, and not exactly one model .bin or .gguf");
        }
        if (!File.Exists(path)) throw new ModelFormatException(path, "no such file or folder");
        return Path.GetExtension(path).Equals(".gguf", StringComparison.OrdinalIgnoreCase) ? Gguf(path) : Llama2c(path);
    }

    static LlamaConfig Llama2c(string path)
    {
        var header = new byte[28];
        using (var f = File.OpenRead(path))
            if (f.ReadAtLeast(header, 28, throwOnEndOfStream: false) < 28)
                throw new ModelFormatException(path, "truncated: shorter than the 28-byte llama2.c header");
        int I(int k) => BinaryPrimitives.ReadInt32LittleEndian(header.AsSpan(4 * k));
        int vocab = I(5);
        if (vocab == int.MinValue) throw new ModelFormatException(path, $"header vocab_size {vocab} is invalid");
        var c = new LlamaConfig
        {
            Dim = I(0), HiddenDim = I(1), Layers = I(2), Heads = I(3), KvHeads = I(4), VocabSize = Math.Abs(vocab), MaxSeqLen = I(6),
            RopeLayout = RopeLayout.Interleaved, TiedEmbeddings = vocab > 0,
        };
        c.Validate(path);
        return c;
    }

    static LlamaConfig Gguf(string path)
    {
        using var g = GgufFile.Open(path);
        int dim = g.GetInt32("llama.embedding_length"), heads = g.GetInt32("llama.attention.head_count");
        var emb = g.FindTensor("token_embd.weight") ?? throw new ModelFormatException(path, "tensor token_embd.weight is missing");
        var c = new LlamaConfig
        {
            Dim = dim, HiddenDim = g.GetInt32("llama.feed_forward_length"), Layers = g.GetInt32("llama.block_count"), Heads = heads,
            KvHeads = g.GetInt32OrNull("llama.attention.head_count_kv") ?? heads, VocabSize = emb.Dims.Length == 2 ? (int)emb.Dims[1] : 0,
            MaxSeqLen = g.GetInt32("llama.context_length"), RopeLayout = RopeLayout.Interleaved, TiedEmbeddings = g.FindTensor("output.weight") is null,
        };
        c.Validate(path);
        return c;
    }
}
