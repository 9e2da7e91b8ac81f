using NeuronTrace.Model;
using NeuronTrace.Runtime;
namespace NeuronTrace.Formats;

/// <summary>
/// Llama models in GGUF (llama.cpp's naming, architecture "llama"). llama.cpp's converter undoes Hugging Face's Q/K
/// permutation, so GGUF weights use interleaved RoPE like llama2.c. Only float tensors (F32/F16/BF16) load.
/// </summary>
internal static class GgufFormat
{
    /// <summary>Loads the weights (and the tokenizer, when the file has one).</summary>
    public static (LlamaWeights Weights, GgufVocabulary? Vocabulary) Load(string path)
    {
        using var g = GgufFile.Open(path);
        var (config, vocabulary) = ReadConfig(g);
        ulong d = (ulong)config.Dim, h = (ulong)config.HiddenDim, kv = (ulong)config.KvDim;
        int layers = config.Layers;

        var emb = Matrix(g, "token_embd.weight", d, (ulong)config.VocabSize);
        var weights = new LlamaWeights
        {
            Config = config,
            TokenEmbedding = emb,
            FinalNorm = Read(g, "output_norm.weight", d),
            Classifier = config.TiedEmbeddings ? emb : Matrix(g, "output.weight", d, (ulong)config.VocabSize),
            Layers = Enumerable.Range(0, layers).Select(l => new LayerWeights
            {
                AttnNorm = Read(g, $"blk.{l}.attn_norm.weight", d),
                Wq = Matrix(g, $"blk.{l}.attn_q.weight", d, d),
                Wk = Matrix(g, $"blk.{l}.attn_k.weight", d, kv),
                Wv = Matrix(g, $"blk.{l}.attn_v.weight", d, kv),
                Wo = Matrix(g, $"blk.{l}.attn_output.weight", d, d),
                FfnNorm = Read(g, $"blk.{l}.ffn_norm.weight", d),
                W1 = Matrix(g, $"blk.{l}.ffn_gate.weight", d, h),
                W2 = Matrix(g, $"blk.{l}.ffn_down.weight", h, d),
                W3 = Matrix(g, $"blk.{l}.ffn_up.weight", d, h),
            }).ToArray(),
        };
        weights.Validate(path);
        return (weights, vocabulary);
    }

    /// <summary>
    /// The configuration and tokenizer vocabulary from the metadata and the tensor table alone, for <c>info</c> and
    /// <c>plan</c>: no weight is read (the one tensor read is rope_freqs.weight, headDim/2 floats, when the file has
    /// it: Llama 3 RoPE scaling is stored there rather than in the metadata).
    /// </summary>
    public static (LlamaConfig Config, GgufVocabulary? Vocabulary) Describe(string path)
    {
        using var g = GgufFile.Open(path);
        return ReadConfig(g);
    }

    static (LlamaConfig Config, GgufVocabulary? Vocabulary) ReadConfig(GgufFile g)
    {
        string path = g.Path;
        string arch = g.GetStringOrNull("general.architecture") ?? throw new ModelFormatException(path, "missing metadata key general.architecture");
        if (arch != "llama")
            throw new ModelFormatException(path, $"general.architecture is {ErrorText.Quote(arch)}; only \"llama\" is supported");
        if (g.GetIntegerOrNull("llama.expert_count") is > 0 and var experts)
            throw new ModelFormatException(path, $"mixture-of-experts models (llama.expert_count = {experts}) are not supported");

        int dim = g.GetInt32("llama.embedding_length");
        int hidden = g.GetInt32("llama.feed_forward_length");
        int layers = g.GetInt32("llama.block_count");
        int heads = g.GetInt32("llama.attention.head_count");
        int kvHeads = g.GetInt32OrNull("llama.attention.head_count_kv") ?? heads;
        int contextLength = g.GetInt32("llama.context_length");
        double eps = g.GetRealOrNull("llama.attention.layer_norm_rms_epsilon") ?? 1e-5;
        double theta = g.GetRealOrNull("llama.rope.freq_base") ?? 10000.0;
        if (heads > 0 && g.GetInt32OrNull("llama.rope.dimension_count") is { } ropeDim && ropeDim != dim / heads)
            throw new ModelFormatException(path, $"llama.rope.dimension_count is {ropeDim} but the head size is {dim / heads}; partial rotary embeddings are not supported");
        if (g.GetStringOrNull("llama.rope.scaling.type") is { } scalingType && scalingType != "none"
            && g.GetRealOrNull("llama.rope.scaling.factor") is not (null or 1.0))
            throw new ModelFormatException(path, $"RoPE scaling type {ErrorText.Quote(scalingType)} is not supported");

        var embInfo = g.FindTensor("token_embd.weight") ?? throw new ModelFormatException(path, "tensor token_embd.weight is missing");
        if (embInfo.Dims.Length != 2 || embInfo.Dims[0] != (ulong)dim || embInfo.Dims[1] > int.MaxValue)
            throw new ModelFormatException(path, $"tensor token_embd.weight has dims {embInfo.ShapeText}, expected [{dim}, vocab]");
        int vocab = (int)embInfo.Dims[1];
        if (g.GetInt32OrNull("llama.vocab_size") is { } declared && declared != vocab)
            throw new ModelFormatException(path, $"llama.vocab_size is {declared} but token_embd.weight has {vocab} rows");

        var vocabulary = ReadVocabulary(g);
        if (vocabulary is not null && vocabulary.Pieces.Length != vocab)
            throw new ModelFormatException(path, $"the tokenizer has {vocabulary.Pieces.Length} tokens but token_embd.weight has {vocab} rows");

        var config = new LlamaConfig
        {
            Dim = dim, HiddenDim = hidden, Layers = layers, Heads = heads, KvHeads = kvHeads, VocabSize = vocab,
            MaxSeqLen = contextLength, NormEps = (float)eps, RopeTheta = (float)theta,
            RopeLayout = RopeLayout.Interleaved,
            TiedEmbeddings = g.FindTensor("output.weight") is null,
            BosId = vocabulary?.BosId is >= 0 and var bos ? bos : g.GetInt32OrNull("tokenizer.ggml.bos_token_id") ?? 1,
            EosId = vocabulary?.EosId is >= 0 and var eos ? eos : g.GetInt32OrNull("tokenizer.ggml.eos_token_id") ?? 2,
        };
        config.Validate(path);
        RequireOnlyModelTensors(g, layers);
        // Every matrix's dims, from the table: a file whose tensors do not fit its metadata fails here, not mid-load.
        ulong d = (ulong)dim, h = (ulong)hidden, kv = (ulong)config.KvDim, v = (ulong)vocab;
        Find(g, "output_norm.weight", [d]);
        if (!config.TiedEmbeddings) Find(g, "output.weight", [d, v]);
        for (int l = 0; l < layers; l++)
        {
            Find(g, $"blk.{l}.attn_norm.weight", [d]); Find(g, $"blk.{l}.attn_q.weight", [d, d]);
            Find(g, $"blk.{l}.attn_k.weight", [d, kv]); Find(g, $"blk.{l}.attn_v.weight", [d, kv]);
            Find(g, $"blk.{l}.attn_output.weight", [d, d]); Find(g, $"blk.{l}.ffn_norm.weight", [d]);
            Find(g, $"blk.{l}.ffn_gate.weight", [d, h]); Find(g, $"blk.{l}.ffn_down.weight", [h, d]); Find(g, $"blk.{l}.ffn_up.weight", [d, h]);
        }

        if (g.FindTensor("rope_freqs.weight") is not null)
        {
            var factors = Read(g, "rope_freqs.weight", (ulong)config.HeadDim / 2);
            config = config with { RopeScaling = InferLlama3Scaling(factors, config.HeadDim, theta, path) };
        }
        return (config, vocabulary);
    }

    static readonly string[] BlockTensors = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_down", "ffn_up"];

    /// <summary>
    /// Every tensor in the file must be one the model reads: a tensor of a layer past llama.block_count (or any other
    /// name) means the header and the tensors disagree, and loading the first layers only would be a different model.
    /// </summary>
    static void RequireOnlyModelTensors(GgufFile g, int layers)
    {
        var known = new HashSet<string>(StringComparer.Ordinal) { "token_embd.weight", "output_norm.weight", "output.weight", "rope_freqs.weight" };
        for (int l = 0; l < layers; l++)
            foreach (var t in BlockTensors) known.Add($"blk.{l}.{t}.weight");
        var unused = g.Tensors.Select(t => t.Name).Where(n => !known.Contains(n)).ToList();
        if (unused.Count > 0)
            throw new ModelFormatException(g.Path, $"{unused.Count} tensor(s) not used by a {layers}-layer llama (llama.block_count = {layers}): {string.Join(", ", unused.Take(5).Select(ErrorText.Name))}{(unused.Count > 5 ? ", …" : "")}");
    }

    /// <summary>Reads a tensor after checking its ggml dims (innermost first: {in, out} for a [out, in] matrix).</summary>
    static float[] Read(GgufFile g, string name, params ulong[] dims) => g.ReadTensor(Find(g, name, dims));

    /// <summary>A weight matrix in the file's precision (16-bit ones mapped, not copied); dims checked as by <see cref="Read"/>.</summary>
    static WeightData Matrix(GgufFile g, string name, params ulong[] dims) => g.ReadWeight(Find(g, name, dims));

    static GgufTensorInfo Find(GgufFile g, string name, ulong[] dims)
    {
        var t = g.FindTensor(name) ?? throw new ModelFormatException(g.Path, $"tensor {name} is missing");
        if (!t.Dims.SequenceEqual(dims))
            throw new ModelFormatException(g.Path, $"tensor {name} has dims {t.ShapeText}, expected [{string.Join(", ", dims)}]");
        return t;
    }

    static GgufVocabulary? ReadVocabulary(GgufFile g)
    {
        var pieces = g.GetArrayOrNull<string>("tokenizer.ggml.tokens");
        if (pieces is null) return null;
        var scores = g.GetArrayOrNull<float>("tokenizer.ggml.scores") ?? new float[pieces.Length];
        var types = g.GetInt32ArrayOrNull("tokenizer.ggml.token_type") ?? Enumerable.Repeat(1, pieces.Length).ToArray();
        if (scores.Length != pieces.Length)
            throw new ModelFormatException(g.Path, $"tokenizer.ggml.scores has {scores.Length} entries for {pieces.Length} tokens");
        if (types.Length != pieces.Length)
            throw new ModelFormatException(g.Path, $"tokenizer.ggml.token_type has {types.Length} entries for {pieces.Length} tokens");
        int Id(string key)
        {
            int? id = g.GetInt32OrNull(key);
            if (id is { } i && (i < 0 || i >= pieces.Length))
                throw new ModelFormatException(g.Path, $"{key} = {i} is outside the vocabulary of {pieces.Length} tokens");
            return id ?? -1;
        }
        return new GgufVocabulary(pieces, scores, types,
            Id("tokenizer.ggml.bos_token_id"), Id("tokenizer.ggml.eos_token_id"), Id("tokenizer.ggml.unknown_token_id"),
            g.GetStringOrNull("tokenizer.ggml.model") ?? "",
            g.GetArrayOrNull<string>("tokenizer.ggml.merges"));
    }

    // Llama 3.1-style GGUFs carry their RoPE scaling as a table of per-frequency divisors (rope_freqs.weight) rather than
    // parameters. Every released Llama 3.x uses low_freq_factor 1, high_freq_factor 4 and an original context of 8192;
    // the factor is recovered from the lowest frequency's divisor, and the table is accepted only when it is exactly
    // that curve (anything else would be silently mis-scaled).
    const float LowFreqFactor = 1f, HighFreqFactor = 4f;
    const int OriginalContext = 8192;

    static Llama3RopeScaling? InferLlama3Scaling(float[] factors, int headDim, double theta, string path)
    {
        int last = factors.Length - 1;
        double wavelen = 2 * Math.PI * Math.Pow(theta, 2.0 * last / headDim);
        double factor;
        if (wavelen > OriginalContext / LowFreqFactor) factor = factors[last];
        else if (wavelen >= OriginalContext / HighFreqFactor)
        {
            // Inside the blend: divisor = 1 / ((1 - s) / factor + s), solved for factor.
            double smooth = (OriginalContext / wavelen - LowFreqFactor) / (HighFreqFactor - LowFreqFactor);
            factor = (1 - smooth) / (1.0 / factors[last] - smooth);
        }
        else factor = 1; // every wavelength is short: the scaling changes nothing whatever its factor

        var guess = new Llama3RopeScaling((float)factor, LowFreqFactor, HighFreqFactor, OriginalContext);
        var expected = Llama3FrequencyFactors(guess, headDim, theta);
        for (int i = 0; i < factors.Length; i++)
            if (!(Math.Abs(factors[i] - expected[i]) <= 1e-4f * Math.Abs(expected[i])))
                throw new ModelFormatException(path, $"tensor rope_freqs.weight is not Llama 3 RoPE scaling (low_freq_factor 1, high_freq_factor 4, original context 8192): entry {i} is {factors[i]}, expected {expected[i]}; load the Hugging Face checkpoint instead");
        return expected.All(f => f == 1f) ? null : guess;
    }

    /// <summary>
    /// The divisor of each RoPE frequency under Llama 3 scaling (what llama.cpp stores in rope_freqs.weight):
    /// 1 for short wavelengths, the factor for long ones, and a smooth blend in between. Taken from
    /// <see cref="RopeTables.Llama3Rescale"/> so the HF and GGUF paths share one formula.
    /// </summary>
    public static float[] Llama3FrequencyFactors(Llama3RopeScaling s, int headDim, double theta)
    {
        var f = new float[headDim / 2];
        for (int i = 0; i < f.Length; i++)
        {
            double inv = RopeTables.UnscaledInverseFrequency(theta, i, headDim);
            f[i] = (float)(inv / RopeTables.Llama3Rescale(inv, s));
        }
        return f;
    }

    /// <summary>
    /// Writes the weights as a llama.cpp-compatible GGUF: matrices in <paramref name="type"/> (F32, F16 or BF16),
    /// norms in F32, Q/K in interleaved layout, Llama 3 scaling as rope_freqs.weight, and the tokenizer if given.
    /// </summary>
    public static void Write(LlamaWeights w, string path, GgufTensorType type = GgufTensorType.F32, GgufVocabulary? vocabulary = null)
    {
        w.Validate(path);
        w = QkPermutation.ToLayout(w, RopeLayout.Interleaved);
        var c = w.Config;
        var g = new GgufWriter()
            .Set("general.architecture", GgufValue.From("llama"))
            .Set("general.file_type", GgufValue.From(type switch { GgufTensorType.F32 => 0u, GgufTensorType.F16 => 1u, _ => 32u }))
            .Set("llama.context_length", GgufValue.From((uint)c.MaxSeqLen))
            .Set("llama.embedding_length", GgufValue.From((uint)c.Dim))
            .Set("llama.block_count", GgufValue.From((uint)c.Layers))
            .Set("llama.feed_forward_length", GgufValue.From((uint)c.HiddenDim))
            .Set("llama.rope.dimension_count", GgufValue.From((uint)c.HeadDim))
            .Set("llama.attention.head_count", GgufValue.From((uint)c.Heads))
            .Set("llama.attention.head_count_kv", GgufValue.From((uint)c.KvHeads))
            .Set("llama.attention.layer_norm_rms_epsilon", GgufValue.From(c.NormEps))
            .Set("llama.rope.freq_base", GgufValue.From(c.RopeTheta))
            .Set("llama.vocab_size", GgufValue.From((uint)c.VocabSize));
        if (vocabulary is not null)
        {
            g.Set("tokenizer.ggml.model", GgufValue.From(vocabulary.Model))
             .Set("tokenizer.ggml.tokens", GgufValue.From(vocabulary.Pieces))
             .Set("tokenizer.ggml.scores", GgufValue.From(vocabulary.Scores))
             .Set("tokenizer.ggml.token_type", GgufValue.From(vocabulary.TokenTypes));
            if (vocabulary.Merges is not null) g.Set("tokenizer.ggml.merges", GgufValue.From(vocabulary.Merges));
            if (vocabulary.UnkId >= 0) g.Set("tokenizer.ggml.unknown_token_id", GgufValue.From((uint)vocabulary.UnkId));
        }
        g.Set("tokenizer.ggml.bos_token_id", GgufValue.From((uint)c.BosId))
         .Set("tokenizer.ggml.eos_token_id", GgufValue.From((uint)c.EosId));

        ulong d = (ulong)c.Dim, h = (ulong)c.HiddenDim, kv = (ulong)c.KvDim, v = (ulong)c.VocabSize;
        g.AddTensor("token_embd.weight", w.TokenEmbedding, [d, v], type);
        // llama.cpp keeps 1-D tensors in F32 whatever the file type; so do we.
        g.AddTensor("output_norm.weight", w.FinalNorm, [d]);
        if (!c.TiedEmbeddings) g.AddTensor("output.weight", w.Classifier, [d, v], type);
        if (c.RopeScaling is { } s)
            g.AddTensor("rope_freqs.weight", Llama3FrequencyFactors(s, c.HeadDim, c.RopeTheta), [(ulong)c.HeadDim / 2]);
        for (int l = 0; l < c.Layers; l++)
        {
            var L = w.Layers[l];
            g.AddTensor($"blk.{l}.attn_norm.weight", L.AttnNorm, [d]);
            g.AddTensor($"blk.{l}.attn_q.weight", L.Wq, [d, d], type);
            g.AddTensor($"blk.{l}.attn_k.weight", L.Wk, [d, kv], type);
            g.AddTensor($"blk.{l}.attn_v.weight", L.Wv, [d, kv], type);
            g.AddTensor($"blk.{l}.attn_output.weight", L.Wo, [d, d], type);
            g.AddTensor($"blk.{l}.ffn_norm.weight", L.FfnNorm, [d]);
            g.AddTensor($"blk.{l}.ffn_gate.weight", L.W1, [d, h], type);
            g.AddTensor($"blk.{l}.ffn_down.weight", L.W2, [h, d], type);
            g.AddTensor($"blk.{l}.ffn_up.weight", L.W3, [d, h], type);
        }
        g.Write(path);
    }
}
