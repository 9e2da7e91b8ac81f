using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Formats;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Sae;

/// <summary>How an SAE turns pre-activations into features.</summary>
public enum SaeActivation
{
    /// <summary>f_i = pre_i where gate_i &gt; θ_i and pre_i &gt; 0, else 0 (Llama Scope: one θ; SAELens: θ per feature).</summary>
    JumpReLU,
    /// <summary>f_i = max(pre_i, 0): JumpReLU with every θ_i = 0.</summary>
    ReLU,
    /// <summary>The K largest pre_i (lower index first on ties) pass through a ReLU; the rest are 0.</summary>
    TopK,
}

/// <summary>
/// A sparse autoencoder, held in float32 on the host, loaded from the Llama Scope layout (<c>hyperparams.json</c>,
/// docs/sae-format.md) or the SAELens layout (<c>cfg.json</c> + <c>sae_weights.safetensors</c>, <see cref="SaeLensFormat"/>).
/// With d = <see cref="DModel"/>, F = <see cref="Features"/>, W_E [F, d], b_E [F], decoder directions d_i (rows of
/// <see cref="DecoderRows"/>), b_D [d], thresholds θ_i:
/// <code>
///   s_in, s_out                                      (Llama Scope dataset-wise: sqrt(d)/norm_in, norm_out/sqrt(d); else 1)
///   pre   = W_E (s_in·x − [b_D if the decoder bias is applied to the input]) + b_E
///   gate  = pre_i·‖d_i‖ (Llama Scope sparsity_include_decoder_norm) or pre_i
///   f_i   = pre_i if gate_i > θ_i and pre_i > 0 else 0     (ReLU: θ = 0; TopK: the K largest pre_i, ReLU'd)
///   x̂     = s_out · (W_D f + b_D)
///   e     = x − x̂                                    (the SAE error node's vector)
/// </code>
/// The decoder is stored as rows d_i [F, d], so decoding sums only the active features and the chain rule
/// for feature gradients is ∂m/∂f_i = s_out · d_i · ∂m/∂x (<see cref="FeatureGradient"/>). Arithmetic is in double.
/// </summary>
public sealed class SparseAutoencoder
{
    internal SparseAutoencoder(int dModel, int features) { DModel = dModel; Features = features; }

    /// <summary>The width d of the activations it encodes.</summary>
    public int DModel { get; }
    /// <summary>The feature count F.</summary>
    public int Features { get; }
    /// <summary>The encoder's activation function.</summary>
    public SaeActivation Activation { get; internal init; } = SaeActivation.JumpReLU;
    /// <summary>θ_i per feature (Llama Scope's one scalar repeated; 0 for ReLU and TopK).</summary>
    public required float[] Thresholds { get; init; }
    /// <summary>K of <see cref="SaeActivation.TopK"/>; 0 otherwise.</summary>
    public int TopK { get; internal init; }
    /// <summary>s_in: the input is multiplied by it before encoding (1 unless the SAE was trained on rescaled activations).</summary>
    public double InputScale { get; internal init; } = 1;
    /// <summary>s_out: the decoded output is multiplied by it.</summary>
    public double OutputScale { get; internal init; } = 1;
    /// <summary>Whether the activation gate compares the pre-activation times ‖d_i‖ with the threshold (Llama Scope's convention).</summary>
    public bool GateIncludesDecoderNorm { get; internal init; }
    /// <summary>Whether b_D is subtracted from the input before encoding (Llama Scope <c>apply_decoder_bias_to_pre_encoder</c>, SAELens <c>apply_b_dec_to_input</c>).</summary>
    public bool DecoderBiasBeforeEncoder { get; internal init; }
    /// <summary>The hook point the SAE was trained on, in its own spelling (TransformerLens, e.g. blocks.2.hook_resid_post); null when its config names none.</summary>
    public string? HookName { get; internal init; }
    /// <summary>"llama-scope" or "saelens".</summary>
    public string Layout { get; internal init; } = "llama-scope";
    /// <summary>encoder.weight, [F, d] row-major.</summary>
    public required float[] EncoderWeight { get; init; }
    /// <summary>encoder.bias, [F].</summary>
    public required float[] EncoderBias { get; init; }
    /// <summary>decoder.weight transposed: row i is feature i's decoder direction d_i, [F, d].</summary>
    public required float[] DecoderRows { get; init; }
    /// <summary>decoder.bias b_D, [d].</summary>
    public required float[] DecoderBias { get; init; }
    /// <summary>‖d_i‖ per feature.</summary>
    public required float[] DecoderNorms { get; init; }
    /// <summary>The file or folder the SAE was read from.</summary>
    public string Path { get; internal init; } = "";

    /// <summary>The (site, layer) of <see cref="HookName"/> (<see cref="SaeHookPoint"/>); a one-line error when it names none or one NeuronTrace has no site for.</summary>
    public (NodeSite Site, int Layer) HookSite =>
        HookName is null ? throw new ModelFormatException(Path, "the SAE's config names no hook point (hook_point_in / hook_name)")
            : SaeHookPoint.Parse(HookName, Path);

    /// <summary>
    /// Loads an SAE folder: SAELens (<c>cfg.json</c> + <c>sae_weights.safetensors</c>) or Llama Scope
    /// (<c>hyperparams.json</c> + <c>checkpoints/final.safetensors</c>), told apart by the config file present.
    /// </summary>
    public static SparseAutoencoder Load(string dir)
    {
        var config = SaeConfig.Read(dir);
        return config.SaeLens ? SaeLensFormat.Load(dir, config) : LoadLlamaScope(dir, config);
    }

    /// <summary>
    /// The bytes <see cref="Load"/> of <paramref name="dir"/> holds (fp32 encoder and decoder rows, biases, decoder norms and
    /// thresholds: (2·F·d + 3·F + d)·4) from its config alone (<see cref="SaeConfig"/>; no weight is read), so the memory
    /// plan counts an SAE before it is read. Errors as <see cref="Load"/>'s.
    /// </summary>
    internal static long PlannedBytes(string dir)
    {
        var config = SaeConfig.Read(dir);
        long d = config.DModel, f = config.Features;
        // Two ints multiplied can pass long (2 · (2³¹)² = 2⁶³): a hostile config must not plan as a few bytes.
        try { return checked((2 * f * d + 3 * f + d) * sizeof(float)); }
        catch (OverflowException) { throw new ModelFormatException(config.Path, $"{config.WidthKey} {d} × d_sae {f} is more memory than any machine has"); }
    }

    /// <summary>
    /// Loads a Llama Scope SAE folder: <c>hyperparams.json</c> plus <c>checkpoints/final.safetensors</c> (or
    /// <c>final.safetensors</c> beside it). F32, F16 and BF16 tensors are read (converted to float32).
    /// </summary>
    static SparseAutoencoder LoadLlamaScope(string dir, SaeConfig config)
    {
        string hp = config.Path;
        string st = System.IO.Path.Combine(dir, "checkpoints", "final.safetensors");
        if (!File.Exists(st)) st = System.IO.Path.Combine(dir, "final.safetensors");
        if (!File.Exists(st)) throw new ModelFormatException(System.IO.Path.Combine(dir, "checkpoints", "final.safetensors"), "SAE weights not found");

        JsonElement h = config.Root;
        int d = config.DModel, f = config.Features;
        string act = Str(h, "act_fn", "jumprelu");
        float theta = act switch
        {
            "jumprelu" => (float)Num(h, "jump_relu_threshold", hp),
            "relu" => 0f,
            _ => throw new ModelFormatException(hp, $"act_fn {ErrorText.Quote(act)} is not supported (jumprelu or relu)"),
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
            throw new ModelFormatException(hp, $"norm_activation {ErrorText.Quote(norm)} is not supported (dataset-wise or none)");

        using var file = SafetensorsFile.Open(st);
        float[] Read(string name, params long[] shape) => ReadTensor(file, st, name, shape, $"hyperparams.json (d_model {d}, d_sae {f})");
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
            Path = dir, Activation = act == "relu" ? SaeActivation.ReLU : SaeActivation.JumpReLU,
            Thresholds = Enumerable.Repeat(theta, f).ToArray(), InputScale = sIn, OutputScale = sOut,
            HookName = Str(h, "hook_point_in", null!),
            GateIncludesDecoderNorm = Bool(h, "sparsity_include_decoder_norm", false),
            DecoderBiasBeforeEncoder = Bool(h, "apply_decoder_bias_to_pre_encoder", false),
            EncoderWeight = wE, EncoderBias = bE, DecoderRows = rows, DecoderBias = bD, DecoderNorms = norms,
        };
    }

    /// <summary>Reads one tensor of the expected shape as float32; a one-line error naming the tensor otherwise.</summary>
    internal static float[] ReadTensor(SafetensorsFile file, string path, string name, long[] shape, string shapeSource)
    {
        var info = file.Find(name) ?? throw new ModelFormatException(path, $"tensor {name} is missing");
        if (!info.Shape.SequenceEqual(shape))
            throw new ModelFormatException(path, $"tensor {name} has shape {info.ShapeText} but {shapeSource} needs [{string.Join(", ", shape)}]");
        var a = file.ReadTensor(info);
        foreach (var v in a)
            if (!float.IsFinite(v)) throw new ModelFormatException(path, $"tensor {name} holds a non-finite value");
        return a;
    }

    /// <summary>‖row i‖ of a [rows, width] matrix, in double, rounded once.</summary>
    internal static float[] RowNorms(float[] m, int rows, int width)
    {
        var norms = new float[rows];
        for (int i = 0; i < rows; i++)
        {
            double s = 0;
            for (int j = 0; j < width; j++) { double v = m[(long)i * width + j]; s += v * v; }
            norms[i] = (float)Math.Sqrt(s);
        }
        return norms;
    }

    /// <summary>Features of one input vector x [d] into <paramref name="features"/> [F].</summary>
    public void Encode(ReadOnlySpan<float> x, Span<float> features)
    {
        Check(x.Length, DModel, "input"); Check(features.Length, Features, "feature");
        int d = DModel;
        var xs = new double[d];
        for (int j = 0; j < d; j++) xs[j] = InputScale * x[j] - (DecoderBiasBeforeEncoder ? DecoderBias[j] : 0.0);
        if (!IsLarge) EncodeRange(xs, 0, Features, features);
        else
        {
            var result = new float[Features];
            Parallel.For(0, (Features + Chunk - 1) / Chunk, c => EncodeRange(xs, c * Chunk, Math.Min(Features, (c + 1) * Chunk), result));
            result.CopyTo(features);
        }
        if (Activation == SaeActivation.TopK) KeepTopK(features);
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
            if (Activation == SaeActivation.TopK) { features[i] = (float)pre; continue; } // selected in KeepTopK
            double gate = GateIncludesDecoderNorm ? pre * DecoderNorms[i] : pre;
            features[i] = gate > Thresholds[i] && pre > 0 ? (float)pre : 0f;
        }
    }

    /// <summary>Keeps the K largest pre-activations (lower index first on ties), ReLU'd; zeroes the rest.</summary>
    void KeepTopK(Span<float> pre)
    {
        var heap = new PriorityQueue<int, (float Value, int NegIndex)>(TopK + 1);
        for (int i = 0; i < pre.Length; i++)
        {
            heap.Enqueue(i, (pre[i], -i));
            if (heap.Count > TopK) heap.Dequeue(); // drops the smallest (the higher index among equals)
        }
        var kept = new float[pre.Length];
        while (heap.TryDequeue(out int i, out _)) kept[i] = Math.Max(pre[i], 0f);
        kept.CopyTo(pre);
    }

    // Real Llama Scope SAEs (32768 × 4096 and up) split the feature loop over threads; the tiny test SAE does not.
    const int Chunk = 1024;
    bool IsLarge => (long)Features * DModel >= 1 << 22;

    /// <summary>The feature activations f of one activation vector <paramref name="x"/> ([d]), as a new [F] array.</summary>
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

    /// <summary>x̂ of <paramref name="features"/> ([F]) as a new [d] array, rounded to float.</summary>
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

    internal static int Int(JsonElement h, string key, string file) =>
        h.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int i)
            ? i : throw new ModelFormatException(file, $"missing integer {ErrorText.Quote(key)}");

    internal static double Num(JsonElement h, string key, string file) =>
        h.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : throw new ModelFormatException(file, $"missing number {ErrorText.Quote(key)}");

    internal static string Str(JsonElement h, string key, string fallback) =>
        h.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : fallback;

    internal static bool Bool(JsonElement h, string key, bool fallback) =>
        h.TryGetProperty(key, out var v) && (v.ValueKind == JsonValueKind.True || v.ValueKind == JsonValueKind.False) ? v.GetBoolean() : fallback;
}

/// <summary>
/// The header of an SAE folder, read once for <see cref="SparseAutoencoder.Load"/> and the memory plan
/// (<see cref="SparseAutoencoder.PlannedBytes"/>): which layout (SAELens <c>cfg.json</c> or Llama Scope
/// <c>hyperparams.json</c>), the parsed config, and its width d (SAELens <c>d_in</c>, Llama Scope <c>d_model</c>) and
/// feature count F (<c>d_sae</c>), both checked positive.
/// </summary>
internal readonly record struct SaeConfig(string Path, JsonElement Root, bool SaeLens, int DModel, int Features)
{
    /// <summary>The config's name for the width: <c>d_in</c> (SAELens) or <c>d_model</c> (Llama Scope).</summary>
    public string WidthKey => SaeLens ? "d_in" : "d_model";

    /// <summary>Reads <paramref name="dir"/>'s config; a one-line <see cref="ModelFormatException"/> for a missing folder or config, invalid JSON, or bad sizes.</summary>
    public static SaeConfig Read(string dir)
    {
        if (!Directory.Exists(dir)) throw new ModelFormatException(dir, "SAE folder not found");
        bool saeLens = File.Exists(System.IO.Path.Combine(dir, SaeLensFormat.ConfigFileName));
        string path = System.IO.Path.Combine(dir, saeLens ? SaeLensFormat.ConfigFileName : "hyperparams.json");
        if (!saeLens && !File.Exists(path))
            throw new ModelFormatException(dir, "SAE folder holds neither cfg.json (SAELens) nor hyperparams.json (Llama Scope)");
        JsonElement root;
        try { root = JsonDocument.Parse(File.ReadAllText(path)).RootElement; }
        catch (JsonException e) { throw new ModelFormatException(path, $"not valid JSON ({e.Message.Split('\n')[0].Trim()})"); }
        if (root.ValueKind != JsonValueKind.Object) throw new ModelFormatException(path, "not a JSON object");
        string width = saeLens ? "d_in" : "d_model";
        int d = SparseAutoencoder.Int(root, width, path), f = SparseAutoencoder.Int(root, "d_sae", path);
        if (d <= 0 || f <= 0) throw new ModelFormatException(path, $"{width} {d} and d_sae {f} must be positive");
        return new SaeConfig(path, root, saeLens, d, f);
    }
}
