using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Formats;

namespace NeuronTrace.Tracing.Sae;

/// <summary>
/// A JumpReLU sparse autoencoder in the Llama Scope layout (docs/sae-format.md), held in float32 on
/// the host. With d = <see cref="DModel"/>, F = <see cref="Features"/>, W_E = encoder.weight [F, d], b_E = encoder.bias [F],
/// W_D = decoder.weight [d, F] (nn.Linear convention: column i of W_D is feature i's decoder direction d_i),
/// b_D = decoder.bias [d], θ = jump_relu_threshold (one scalar), norm_in/norm_out = dataset_average_activation_norm:
/// <code>
///   s_in  = sqrt(d) / norm_in          s_out = norm_out / sqrt(d)      (both 1 when norm_activation is "none")
///   pre   = W_E (s_in·x − [b_D if apply_decoder_bias_to_pre_encoder]) + b_E
///   f_i   = pre_i  if pre_i·‖d_i‖ > θ  else 0      (‖d_i‖ factor only with sparsity_include_decoder_norm; else pre_i > θ)
///   x̂     = s_out · (W_D f + b_D)                   (b_D only with use_decoder_bias)
///   e     = x − x̂                                    (the SAE error node's vector)
/// </code>
/// The decoder is stored transposed, as rows d_i [F, d], so decoding sums only the active features and the chain rule
/// for feature gradients is ∂m/∂f_i = s_out · d_i · ∂m/∂x (<see cref="FeatureGradient"/>). Arithmetic is in double.
/// </summary>
public sealed class SparseAutoencoder
{
    SparseAutoencoder(int dModel, int features) { DModel = dModel; Features = features; }

    public int DModel { get; }
    public int Features { get; }
    public float Threshold { get; private init; }
    public double InputScale { get; private init; } = 1;
    public double OutputScale { get; private init; } = 1;
    public bool GateIncludesDecoderNorm { get; private init; }
    public bool DecoderBiasBeforeEncoder { get; private init; }
    /// <summary>encoder.weight, [F, d] row-major.</summary>
    public required float[] EncoderWeight { get; init; }
    public required float[] EncoderBias { get; init; }
    /// <summary>decoder.weight transposed: row i is feature i's decoder direction d_i, [F, d].</summary>
    public required float[] DecoderRows { get; init; }
    public required float[] DecoderBias { get; init; }
    /// <summary>‖d_i‖ per feature.</summary>
    public required float[] DecoderNorms { get; init; }
    public string Path { get; private init; } = "";

    /// <summary>
    /// Loads a Llama Scope SAE folder: <c>hyperparams.json</c> plus <c>checkpoints/final.safetensors</c> (or
    /// <c>final.safetensors</c> beside it). F32, F16 and BF16 tensors are read (converted to float32).
    /// </summary>
    public static SparseAutoencoder Load(string dir)
    {
        if (!Directory.Exists(dir)) throw new ModelFormatException(dir, "SAE folder not found");
        string hp = System.IO.Path.Combine(dir, "hyperparams.json");
        if (!File.Exists(hp)) throw new ModelFormatException(hp, "SAE hyperparams.json not found");
        string st = System.IO.Path.Combine(dir, "checkpoints", "final.safetensors");
        if (!File.Exists(st)) st = System.IO.Path.Combine(dir, "final.safetensors");
        if (!File.Exists(st)) throw new ModelFormatException(System.IO.Path.Combine(dir, "checkpoints", "final.safetensors"), "SAE weights not found");

        JsonElement h;
        try { h = JsonDocument.Parse(File.ReadAllText(hp)).RootElement; }
        catch (JsonException e) { throw new ModelFormatException(hp, $"not valid JSON ({e.Message.Split('\n')[0].Trim()})"); }
        if (h.ValueKind != JsonValueKind.Object) throw new ModelFormatException(hp, "not a JSON object");
        int d = Int(h, "d_model", hp), f = Int(h, "d_sae", hp);
        if (d <= 0 || f <= 0) throw new ModelFormatException(hp, $"d_model {d} and d_sae {f} must be positive");
        string act = Str(h, "act_fn", "jumprelu");
        float theta = act switch
        {
            "jumprelu" => (float)Num(h, "jump_relu_threshold", hp),
            "relu" => 0f,
            _ => throw new ModelFormatException(hp, $"act_fn \"{act}\" is not supported (jumprelu or relu)"),
        };
        if (Bool(h, "use_glu_encoder", false)) throw new ModelFormatException(hp, "use_glu_encoder is not supported");
        string norm = Str(h, "norm_activation", "none");
        double sIn = 1, sOut = 1;
        if (norm == "dataset-wise")
        {
            if (!h.TryGetProperty("dataset_average_activation_norm", out var n) || n.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(hp, "norm_activation is dataset-wise but dataset_average_activation_norm {in, out} is missing");
            double nIn = Num(n, "in", hp), nOut = Num(n, "out", hp);
            if (!(nIn > 0) || !(nOut > 0)) throw new ModelFormatException(hp, $"dataset_average_activation_norm in {nIn} / out {nOut} must be positive");
            sIn = Math.Sqrt(d) / nIn;
            sOut = nOut / Math.Sqrt(d);
        }
        else if (norm != "none")
            throw new ModelFormatException(hp, $"norm_activation \"{norm}\" is not supported (dataset-wise or none)");

        using var file = SafetensorsFile.Open(st);
        float[] Read(string name, params long[] shape)
        {
            var info = file.Find(name) ?? throw new ModelFormatException(st, $"tensor {name} is missing");
            if (!info.Shape.SequenceEqual(shape))
                throw new ModelFormatException(st, $"tensor {name} has shape {info.ShapeText} but hyperparams.json (d_model {d}, d_sae {f}) needs [{string.Join(", ", shape)}]");
            var a = file.ReadTensor(info);
            foreach (var v in a)
                if (!float.IsFinite(v)) throw new ModelFormatException(st, $"tensor {name} holds a non-finite value");
            return a;
        }
        var wE = Read("encoder.weight", f, d);
        var bE = Read("encoder.bias", f);
        var wD = Read("decoder.weight", d, f);
        var bD = Bool(h, "use_decoder_bias", true) ? Read("decoder.bias", d) : new float[d];
        var rows = new float[(long)f * d];
        var norms = new float[f];
        for (int i = 0; i < f; i++)
        {
            double s = 0;
            for (int j = 0; j < d; j++)
            {
                float v = wD[(long)j * f + i];
                rows[(long)i * d + j] = v;
                s += (double)v * v;
            }
            norms[i] = (float)Math.Sqrt(s);
        }
        return new SparseAutoencoder(d, f)
        {
            Path = dir, Threshold = theta, InputScale = sIn, OutputScale = sOut,
            GateIncludesDecoderNorm = Bool(h, "sparsity_include_decoder_norm", false),
            DecoderBiasBeforeEncoder = Bool(h, "apply_decoder_bias_to_pre_encoder", false),
            EncoderWeight = wE, EncoderBias = bE, DecoderRows = rows, DecoderBias = bD, DecoderNorms = norms,
        };
    }

    /// <summary>Features of one input vector x [d] into <paramref name="features"/> [F].</summary>
    public void Encode(ReadOnlySpan<float> x, Span<float> features)
    {
        Check(x.Length, DModel, "input"); Check(features.Length, Features, "feature");
        int d = DModel;
        var xs = new double[d];
        for (int j = 0; j < d; j++) xs[j] = InputScale * x[j] - (DecoderBiasBeforeEncoder ? DecoderBias[j] : 0.0);
        if (!IsLarge) { EncodeRange(xs, 0, Features, features); return; }
        var result = new float[Features];
        Parallel.For(0, (Features + Chunk - 1) / Chunk, c => EncodeRange(xs, c * Chunk, Math.Min(Features, (c + 1) * Chunk), result));
        result.CopyTo(features);
    }

    void EncodeRange(double[] xs, int from, int to, Span<float> features)
    {
        int d = DModel;
        var wE = EncoderWeight.AsSpan();
        for (int i = from; i < to; i++)
        {
            var row = wE.Slice(i * d, d);
            double pre = EncoderBias[i];
            for (int j = 0; j < d; j++) pre += row[j] * xs[j];
            double gate = GateIncludesDecoderNorm ? pre * DecoderNorms[i] : pre;
            features[i] = gate > Threshold ? (float)pre : 0f;
        }
    }

    // Real Llama Scope SAEs (32768 × 4096 and up) split the feature loop over threads; the tiny test SAE does not.
    const int Chunk = 1024;
    bool IsLarge => (long)Features * DModel >= 1 << 22;

    public float[] Encode(ReadOnlySpan<float> x) { var f = new float[Features]; Encode(x, f); return f; }

    /// <summary>x̂ = s_out·(W_D f + b_D) in double (the error e = x − x̂ is taken against this before rounding).</summary>
    public void Decode(ReadOnlySpan<float> features, Span<double> xHat)
    {
        Check(features.Length, Features, "feature"); Check(xHat.Length, DModel, "output");
        int d = DModel;
        for (int j = 0; j < d; j++) xHat[j] = DecoderBias[j];
        var rows = DecoderRows.AsSpan();
        for (int i = 0; i < Features; i++)
        {
            float fi = features[i];
            if (fi == 0f) continue;
            var row = rows.Slice(i * d, d);
            for (int j = 0; j < d; j++) xHat[j] += (double)fi * row[j];
        }
        for (int j = 0; j < d; j++) xHat[j] *= OutputScale;
    }

    public float[] Decode(ReadOnlySpan<float> features)
    {
        var x = new double[DModel];
        Decode(features, x);
        return x.Select(v => (float)v).ToArray();
    }

    /// <summary>The error vector e = x − dec(enc(x)) of one input.</summary>
    public float[] Error(ReadOnlySpan<float> x)
    {
        var xh = new double[DModel];
        Decode(Encode(x), xh);
        var e = new float[DModel];
        for (int j = 0; j < DModel; j++) e[j] = (float)(x[j] - xh[j]);
        return e;
    }

    /// <summary>
    /// Chain rule through the decoder: with x = x̂(f) + e, ∂m/∂f_i = Σ_j (∂x̂_j/∂f_i) ∂m/∂x_j = s_out · d_i · g_x, i.e. W_Dᵀ g_x
    /// scaled by s_out (W_D = decoder.weight [d, F]).
    /// </summary>
    public void FeatureGradient(ReadOnlySpan<float> gx, Span<double> gf)
    {
        Check(gx.Length, DModel, "gradient"); Check(gf.Length, Features, "feature gradient");
        if (!IsLarge) { FeatureGradientRange(gx.ToArray(), 0, Features, gf); return; }
        var g = gx.ToArray();
        var result = new double[Features];
        Parallel.For(0, (Features + Chunk - 1) / Chunk, c => FeatureGradientRange(g, c * Chunk, Math.Min(Features, (c + 1) * Chunk), result));
        result.CopyTo(gf);
    }

    void FeatureGradientRange(float[] gx, int from, int to, Span<double> gf)
    {
        int d = DModel;
        var rows = DecoderRows.AsSpan();
        for (int i = from; i < to; i++)
        {
            var row = rows.Slice(i * d, d);
            double s = 0;
            for (int j = 0; j < d; j++) s += (double)row[j] * gx[j];
            gf[i] = OutputScale * s;
        }
    }

    static void Check(int got, int want, string what)
    {
        if (got != want) throw new ArgumentException($"SAE {what} vector has {got} values, expected {want}");
    }

    static int Int(JsonElement h, string key, string file) =>
        h.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)
            ? i : throw new ModelFormatException(file, $"missing integer \"{key}\"");

    static double Num(JsonElement h, string key, string file) =>
        h.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new ModelFormatException(file, $"missing number \"{key}\"");

    static string Str(JsonElement h, string key, string fallback) =>
        h.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : fallback;

    static bool Bool(JsonElement h, string key, bool fallback) =>
        h.TryGetProperty(key, out var v) && (v.ValueKind == JsonValueKind.True || v.ValueKind == JsonValueKind.False) ? v.GetBoolean() : fallback;
}
