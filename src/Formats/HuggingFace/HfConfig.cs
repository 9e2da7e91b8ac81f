using System.Globalization;
using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Formats;

/// <summary>
/// Reads and writes the <c>config.json</c> of a Hugging Face <c>LlamaForCausalLM</c> folder.
/// Fields with transformers defaults (num_key_value_heads, rope_theta, tie_word_embeddings, token ids) may be absent;
/// the shape fields may not. Anything that changes the computation and that the engine does not implement
/// (biases, other activations, other RoPE scalings, a head_dim that is not hidden/heads) is refused with a clear message.
/// </summary>
internal static class HfConfig
{
    public const string FileName = "config.json";

    /// <summary>Parses config.json into a <see cref="LlamaConfig"/> with <see cref="RopeLayout.RotateHalf"/>.</summary>
    public static LlamaConfig Load(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException(path, "file not found");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(InputFiles.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(path, $"not valid JSON ({e.Message.ReplaceLineEndings(" ")})");
        }
        using (doc)
        {
            var root = doc.RootElement;
            JsonStrings.RequireValid(root, path);
            if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "not a JSON object");
            return Parse(path, root);
        }
    }

    static LlamaConfig Parse(string path, JsonElement root)
    {
        if (Optional(root, "architectures") is { } archs)
        {
            if (archs.ValueKind != JsonValueKind.Array || !archs.EnumerateArray().Any(a => a.ValueKind == JsonValueKind.String && a.GetString() == "LlamaForCausalLM"))
                throw new ModelFormatException(path, $"architectures is {archs.GetRawText()}; only LlamaForCausalLM is supported");
        }
        if (OptionalString(path, root, "model_type") is { } modelType && modelType != "llama")
            throw new ModelFormatException(path, $"model_type is {ErrorText.Quote(modelType)}; only \"llama\" is supported");
        if (OptionalString(path, root, "hidden_act") is { } act && act != "silu")
            throw new ModelFormatException(path, $"hidden_act is {ErrorText.Quote(act)}; only \"silu\" is supported");
        foreach (string bias in new[] { "attention_bias", "mlp_bias" })
            if (Optional(root, bias) is { ValueKind: JsonValueKind.True })
                throw new ModelFormatException(path, $"{bias} is true; biases are not supported");

        int hidden = Int(path, root, "hidden_size");
        int heads = Int(path, root, "num_attention_heads");
        if (Optional(root, "head_dim") is { } hd && heads > 0 && ToInt(path, "head_dim", hd) != hidden / heads)
            throw new ModelFormatException(path, $"head_dim is {hd.GetRawText()} but hidden_size / num_attention_heads is {hidden / heads}; a separate head size is not supported");

        var config = new LlamaConfig
        {
            Dim = hidden,
            HiddenDim = Int(path, root, "intermediate_size"),
            Layers = Int(path, root, "num_hidden_layers"),
            Heads = heads,
            KvHeads = OptionalInt(path, root, "num_key_value_heads") ?? heads,
            VocabSize = Int(path, root, "vocab_size"),
            MaxSeqLen = Int(path, root, "max_position_embeddings"),
            NormEps = (float)Real(path, root, "rms_norm_eps"),
            RopeTheta = (float)(OptionalReal(path, root, "rope_theta") ?? 10000.0),
            RopeScaling = RopeScaling(path, root),
            RopeLayout = RopeLayout.RotateHalf,
            TiedEmbeddings = Optional(root, "tie_word_embeddings") is { } tie && Bool(path, "tie_word_embeddings", tie),
            BosId = TokenId(path, root, "bos_token_id") ?? 1,
            EosId = TokenId(path, root, "eos_token_id") ?? 2,
        };
        config.Validate(path);
        // GGUF's loader refuses these too: an id with no embedding row fails only when a prompt or generation uses it.
        foreach (var (name, id) in new[] { ("bos_token_id", config.BosId), ("eos_token_id", config.EosId) })
            if (id < 0 || id >= config.VocabSize)
                throw new ModelFormatException(path, $"{name} = {id} is outside the vocabulary of {config.VocabSize} tokens");
        return config;
    }

    static Llama3RopeScaling? RopeScaling(string path, JsonElement root)
    {
        if (Optional(root, "rope_scaling") is not { } rs) return null;
        if (rs.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "rope_scaling is neither null nor an object");
        // transformers renamed "type" to "rope_type"; configs in the wild have either.
        string? type = OptionalString(path, rs, "rope_type", "rope_scaling.") ?? OptionalString(path, rs, "type", "rope_scaling.");
        if (type is null or "default") return null;
        if (type != "llama3")
            throw new ModelFormatException(path, $"rope_scaling type {ErrorText.Quote(type)} is not supported (only \"llama3\")");
        return new Llama3RopeScaling(
            (float)Real(path, rs, "factor", "rope_scaling."),
            (float)Real(path, rs, "low_freq_factor", "rope_scaling."),
            (float)Real(path, rs, "high_freq_factor", "rope_scaling."),
            Int(path, rs, "original_max_position_embeddings", "rope_scaling."));
    }

    // ---- field helpers: a missing or ill-typed field names itself ----

    /// <summary>The field, or null when absent or JSON null.</summary>
    static JsonElement? Optional(JsonElement obj, string name) =>
        obj.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null ? v : null;

    static JsonElement Required(string path, JsonElement obj, string name, string prefix) =>
        Optional(obj, name) ?? throw new ModelFormatException(path, $"missing field \"{prefix}{name}\"");

    static int Int(string path, JsonElement obj, string name, string prefix = "") =>
        ToInt(path, prefix + name, Required(path, obj, name, prefix));

    static int? OptionalInt(string path, JsonElement obj, string name) =>
        Optional(obj, name) is { } v ? ToInt(path, name, v) : null;

    static int ToInt(string path, string name, JsonElement v)
    {
        if (v.ValueKind == JsonValueKind.Number)
        {
            if (v.TryGetInt32(out int i)) return i;
            // Some exporters write integral floats such as 4096.0.
            if (v.TryGetDouble(out double d) && d == Math.Floor(d) && d >= int.MinValue && d <= int.MaxValue) return (int)d;
        }
        throw new ModelFormatException(path, $"field {ErrorText.Quote(name)} is {v.GetRawText()}, expected an integer");
    }

    static double Real(string path, JsonElement obj, string name, string prefix = "") =>
        ToReal(path, prefix + name, Required(path, obj, name, prefix));

    static double? OptionalReal(string path, JsonElement obj, string name) =>
        Optional(obj, name) is { } v ? ToReal(path, name, v) : null;

    static double ToReal(string path, string name, JsonElement v) =>
        v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out double d)
            ? d
            : throw new ModelFormatException(path, $"field {ErrorText.Quote(name)} is {v.GetRawText()}, expected a number");

    static bool Bool(string path, string name, JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw new ModelFormatException(path, $"field {ErrorText.Quote(name)} is {v.GetRawText()}, expected true or false"),
    };

    static string? OptionalString(string path, JsonElement obj, string name, string prefix = "") => Optional(obj, name) is { } v
        ? v.ValueKind == JsonValueKind.String ? v.GetString() : throw new ModelFormatException(path, $"field \"{prefix}{name}\" is {v.GetRawText()}, expected a string")
        : null;

    /// <summary>A token id, or for eos_token_id possibly a list of ids (Llama 3 instruct): the first is taken.</summary>
    static int? TokenId(string path, JsonElement obj, string name)
    {
        if (Optional(obj, name) is not { } v) return null;
        if (v.ValueKind == JsonValueKind.Array)
            return v.GetArrayLength() == 0 ? null : ToInt(path, name, v[0]);
        return ToInt(path, name, v);
    }

    // ---- writing ----

    /// <summary>Writes config.json for <paramref name="c"/> with <c>torch_dtype</c> set from <paramref name="encoding"/>.</summary>
    public static void Write(LlamaConfig c, string path, FloatEncoding encoding)
    {
        OutputFiles.WriteAtomically(path, s =>
        {
            using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteStartArray("architectures");
            w.WriteStringValue("LlamaForCausalLM");
            w.WriteEndArray();
            w.WriteString("model_type", "llama");
            w.WriteNumber("hidden_size", c.Dim);
            w.WriteNumber("intermediate_size", c.HiddenDim);
            w.WriteNumber("num_hidden_layers", c.Layers);
            w.WriteNumber("num_attention_heads", c.Heads);
            w.WriteNumber("num_key_value_heads", c.KvHeads);
            w.WriteNumber("head_dim", c.HeadDim);
            w.WriteNumber("vocab_size", c.VocabSize);
            w.WriteNumber("max_position_embeddings", c.MaxSeqLen);
            w.WriteNumber("rms_norm_eps", Shortest(c.NormEps));
            w.WriteNumber("rope_theta", Shortest(c.RopeTheta));
            if (c.RopeScaling is { } rs)
            {
                w.WriteStartObject("rope_scaling");
                w.WriteString("rope_type", "llama3");
                w.WriteNumber("factor", Shortest(rs.Factor));
                w.WriteNumber("low_freq_factor", Shortest(rs.LowFreqFactor));
                w.WriteNumber("high_freq_factor", Shortest(rs.HighFreqFactor));
                w.WriteNumber("original_max_position_embeddings", rs.OriginalMaxPositionEmbeddings);
                w.WriteEndObject();
            }
            else w.WriteNull("rope_scaling");
            w.WriteBoolean("tie_word_embeddings", c.TiedEmbeddings);
            w.WriteNumber("bos_token_id", c.BosId);
            w.WriteNumber("eos_token_id", c.EosId);
            w.WriteString("hidden_act", "silu");
            w.WriteBoolean("attention_bias", false);
            w.WriteBoolean("mlp_bias", false);
            w.WriteString("torch_dtype", encoding switch { FloatEncoding.F32 => "float32", FloatEncoding.F16 => "float16", _ => "bfloat16" });
            w.WriteEndObject();
        });
    }

    // 1e-5f widened to double prints as 9.99999974737875E-06; go through the float's shortest text instead.
    static double Shortest(float f) => double.Parse(f.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
}
