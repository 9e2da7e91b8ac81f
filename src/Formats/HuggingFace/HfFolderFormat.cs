using NeuronTrace.Runtime;
using System.Text.Json;
using NeuronTrace.Model;

namespace NeuronTrace.Formats;

/// <summary>
/// A Hugging Face <c>LlamaForCausalLM</c> folder: config.json plus model.safetensors, or shards listed by
/// model.safetensors.index.json. HF checkpoints hold Q/K rows permuted for rotate_half RoPE; the weights are returned
/// as stored, with <see cref="RopeLayout.RotateHalf"/>.
/// </summary>
internal static class HfFolderFormat
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    public static LlamaWeights Load(string dir)
    {
        if (!Directory.Exists(dir)) throw new ModelFormatException(dir, "folder not found");
        var config = HfConfig.Load(Path.Combine(dir, HfConfig.FileName));
        using var src = TensorSource.Open(dir);

        long d = config.Dim, h = config.HiddenDim, kv = config.KvDim, v = config.VocabSize;
        float[] Read(string name, params long[] shape) => src.Read(name, shape).ToFloats();
        // Matrices stay in the file's precision (16-bit ones mapped, not copied); norms are widened to fp32.
        WeightData Matrix(string name, params long[] shape) => src.Read(name, shape);

        RequireOnlyModelTensors(dir, src.Names, config.Layers);
        var emb = Matrix("model.embed_tokens.weight", v, d);
        // HF ties whenever tie_word_embeddings is set, whatever lm_head holds. Otherwise (transformers' LlamaConfig
        // defaults it to false) lm_head is required: tying anyway would run a different model than transformers does.
        bool tied = config.TiedEmbeddings;
        if (!tied && !src.Contains("lm_head.weight"))
            throw new ModelFormatException(dir, $"tensor lm_head.weight is missing and {HfConfig.FileName} does not set tie_word_embeddings to true");
        var weights = new LlamaWeights
        {
            Config = config,
            TokenEmbedding = emb,
            FinalNorm = Read("model.norm.weight", d),
            Classifier = tied ? emb : Matrix("lm_head.weight", v, d),
            Layers = Enumerable.Range(0, config.Layers).Select(l =>
            {
                string p = $"model.layers.{l}.";
                return new LayerWeights
                {
                    AttnNorm = Read(p + "input_layernorm.weight", d),
                    Wq = Matrix(p + "self_attn.q_proj.weight", d, d),
                    Wk = Matrix(p + "self_attn.k_proj.weight", kv, d),
                    Wv = Matrix(p + "self_attn.v_proj.weight", kv, d),
                    Wo = Matrix(p + "self_attn.o_proj.weight", d, d),
                    FfnNorm = Read(p + "post_attention_layernorm.weight", d),
                    W1 = Matrix(p + "mlp.gate_proj.weight", h, d),
                    W2 = Matrix(p + "mlp.down_proj.weight", d, h),
                    W3 = Matrix(p + "mlp.up_proj.weight", h, d),
                };
            }).ToArray(),
        };
        weights.Validate(dir);
        return weights;
    }

    static readonly string[] LayerTensors = ["input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "post_attention_layernorm", "mlp.gate_proj", "mlp.down_proj", "mlp.up_proj"];

    /// <summary>
    /// Every tensor of the checkpoint must be one the model reads: a layer past num_hidden_layers (or any other name)
    /// means config.json and the weights disagree. Old checkpoints' rotary_emb.inv_freq buffers are recomputed, not read.
    /// </summary>
    static void RequireOnlyModelTensors(string dir, IEnumerable<string> names, int layers)
    {
        var known = new HashSet<string>(StringComparer.Ordinal) { "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight" };
        for (int l = 0; l < layers; l++)
        {
            foreach (var t in LayerTensors) known.Add($"model.layers.{l}.{t}.weight");
            known.Add($"model.layers.{l}.self_attn.rotary_emb.inv_freq");
        }
        var unused = names.Where(n => !known.Contains(n)).Order(StringComparer.Ordinal).ToList();
        if (unused.Count > 0)
            throw new ModelFormatException(dir, $"{unused.Count} tensor(s) not used by a {layers}-layer llama ({HfConfig.FileName} num_hidden_layers = {layers}): {string.Join(", ", unused.Take(5).Select(ErrorText.Name))}{(unused.Count > 5 ? ", …" : "")}");
    }

    /// <summary>Tensor name → safetensors file, opening each shard once and closing all at the end.</summary>
    sealed class TensorSource : IDisposable
    {
        readonly Dictionary<string, string> _shardOf;   // tensor → shard path (single-file: every tensor → that file)
        readonly Dictionary<string, SafetensorsFile> _open = [];
        readonly string? _indexPath;
        readonly SafetensorsFile? _single;

        TensorSource(SafetensorsFile? single, Dictionary<string, string> shardOf, string? indexPath)
        {
            _single = single; _shardOf = shardOf; _indexPath = indexPath;
        }

        public static TensorSource Open(string dir)
        {
            string single = Path.Combine(dir, SingleFileName);
            string index = Path.Combine(dir, IndexFileName);
            if (File.Exists(single))
                return new TensorSource(SafetensorsFile.Open(single), [], null);
            if (File.Exists(index))
                return new TensorSource(null, ReadIndex(dir, index), index);
            string why = Directory.EnumerateFiles(dir, "*.bin").Any(f => Path.GetFileName(f).StartsWith("pytorch_model", StringComparison.Ordinal))
                ? "; PyTorch .bin checkpoints are not supported, convert them to safetensors"
                : "";
            throw new ModelFormatException(dir, $"neither {SingleFileName} nor {IndexFileName} is present{why}");
        }

        static Dictionary<string, string> ReadIndex(string dir, string index)
        {
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(InputFiles.ReadAllBytes(index));
            }
            catch (JsonException e)
            {
                throw new ModelFormatException(index, $"not valid JSON ({e.Message.ReplaceLineEndings(" ")})");
            }
            using (doc)
            {
                JsonStrings.RequireValid(doc.RootElement, index);
                if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                    throw new ModelFormatException(index, "missing field \"weight_map\"");
                var result = new Dictionary<string, string>(StringComparer.Ordinal);
                foreach (var e in map.EnumerateObject())
                {
                    string? shard = e.Value.ValueKind == JsonValueKind.String ? e.Value.GetString() : null;
                    // Shards must sit beside the index: a path would let a downloaded index read arbitrary files.
                    if (string.IsNullOrEmpty(shard) || Path.GetFileName(shard) != shard || shard is "." or "..")
                        throw new ModelFormatException(index, $"weight_map entry for {e.Name} is {e.Value.GetRawText()}, expected a file name in the same folder");
                    result[e.Name] = Path.Combine(dir, shard);
                }
                return result;
            }
        }

        public IEnumerable<string> Names => _single is not null ? _single.Tensors.Keys : _shardOf.Keys;

        public bool Contains(string name) => _single?.Find(name) is not null || _shardOf.ContainsKey(name);

        public WeightData Read(string name, long[] shape)
        {
            SafetensorsFile file;
            if (_single is not null) file = _single;
            else
            {
                if (!_shardOf.TryGetValue(name, out var shardPath))
                    throw new ModelFormatException(_indexPath!, $"weight_map has no entry for tensor {name}");
                if (!_open.TryGetValue(shardPath, out file!))
                {
                    if (!File.Exists(shardPath))
                        throw new ModelFormatException(shardPath, $"shard not found (the index lists it for tensor {name})");
                    file = SafetensorsFile.Open(shardPath);
                    _open[shardPath] = file;
                }
            }
            var t = file.Find(name) ?? throw new ModelFormatException(file.Path, $"tensor {name} is missing");
            if (!t.Shape.SequenceEqual(shape))
                throw new ModelFormatException(file.Path, $"tensor {name} has shape {t.ShapeText}, expected [{string.Join(", ", shape)}]");
            return file.ReadWeight(t);
        }

        public void Dispose()
        {
            _single?.Dispose();
            foreach (var f in _open.Values) f.Dispose();
        }
    }
}
