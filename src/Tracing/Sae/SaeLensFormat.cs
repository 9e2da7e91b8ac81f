using System.Text.Json;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Sae;

/// <summary>
/// The SAELens folder layout (what <c>SAE.save_model</c> writes and its Hugging Face releases hold):
/// <c>cfg.json</c> and <c>sae_weights.safetensors</c> with W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
/// b_dec [d_in] and, for JumpReLU, threshold [d_sae]. SAELens inference semantics:
/// <code>
///   sae_in = x − (b_dec if apply_b_dec_to_input)
///   pre    = sae_in W_enc + b_enc
///   f      = standard: relu(pre);   jumprelu: relu(pre)·(pre > threshold);   topk: relu of the k largest pre, 0 elsewhere
///   x̂      = f W_dec + b_dec
/// </code>
/// <c>normalize_activations</c> "none" and "expected_average_only_in" leave x as it is at run time (SAELens folds the
/// dataset scale into the weights when it saves); "constant_norm_rescale" and "layer_norm" scale each input by its own
/// norm, which the affine-decoder attribution (<see cref="SaeAttributor"/>) does not model, and are refused.
/// The hook point is cfg.json's <c>hook_name</c> (top level, as SAELens up to v5 writes it, or under <c>metadata</c>/<c>meta</c>).
/// </summary>
internal static class SaeLensFormat
{
    public const string ConfigFileName = "cfg.json";
    public const string WeightsFileName = "sae_weights.safetensors";

    /// <summary>Loads a SAELens folder whose <paramref name="config"/> (<see cref="SaeConfig"/>) has been read.</summary>
    public static SparseAutoencoder Load(string dir, SaeConfig config)
    {
        string cfgPath = config.Path, st = Path.Combine(dir, WeightsFileName);
        if (!File.Exists(st)) throw new ModelFormatException(st, "SAE weights not found (SAELens layout: cfg.json beside sae_weights.safetensors)");
        JsonElement c = config.Root;
        int d = config.DModel, f = config.Features;

        // SAELens ≥ 4 names the architecture; older configs give activation_fn_str ("relu"/"topk") instead.
        string arch = SparseAutoencoder.Str(c, "architecture", null!) ?? SparseAutoencoder.Str(c, "activation_fn_str", "relu") switch
        {
            "relu" => "standard",
            var other => other,
        };
        int k = 0;
        var activation = arch switch
        {
            "standard" => SaeActivation.ReLU,
            "jumprelu" => SaeActivation.JumpReLU,
            "topk" => SaeActivation.TopK,
            _ => throw new ModelFormatException(cfgPath, $"architecture {ErrorText.Quote(arch)} is not supported (standard, jumprelu or topk)"),
        };
        if (activation == SaeActivation.TopK)
        {
            k = c.TryGetProperty("k", out _) ? SparseAutoencoder.Int(c, "k", cfgPath)
                : c.TryGetProperty("activation_fn_kwargs", out var kw) && kw.ValueKind == JsonValueKind.Object ? SparseAutoencoder.Int(kw, "k", cfgPath)
                : throw new ModelFormatException(cfgPath, "architecture topk but no k (top level or activation_fn_kwargs.k)");
            if (k < 1 || k > f) throw new ModelFormatException(cfgPath, $"topk k {k} must be in [1, d_sae {f}]");
        }
        string norm = SparseAutoencoder.Str(c, "normalize_activations", "none");
        if (norm is not ("none" or "expected_average_only_in"))
            throw new ModelFormatException(cfgPath, $"normalize_activations {ErrorText.Quote(norm)} is not supported (none or expected_average_only_in; per-input rescaling is not an affine decoder)");
        if (SparseAutoencoder.Bool(c, "finetuning_scaling_factor", false))
            throw new ModelFormatException(cfgPath, "finetuning_scaling_factor is not supported");
        if (SparseAutoencoder.Str(c, "reshape_activations", "none") is not ("none" or "hook_z"))
            throw new ModelFormatException(cfgPath, "reshape_activations must be none or hook_z");

        using var file = SafetensorsFile.Open(st);
        float[] Read(string name, params long[] shape) => SparseAutoencoder.ReadTensor(file, st, name, shape, $"cfg.json (d_in {d}, d_sae {f})");
        var wEnc = Read("W_enc", d, f);
        var bEnc = Read("b_enc", f);
        var wDec = Read("W_dec", f, d); // rows are the decoder directions already
        var bDec = Read("b_dec", d);
        var thresholds = activation == SaeActivation.JumpReLU ? Read("threshold", f) : new float[f];
        var encoder = new float[(long)f * d];
        for (int j = 0; j < d; j++)
            for (int i = 0; i < f; i++) encoder[(long)i * d + j] = wEnc[(long)j * f + i];
        return new SparseAutoencoder(d, f)
        {
            Path = dir, Layout = "saelens", Activation = activation, TopK = k, Thresholds = thresholds,
            DecoderBiasBeforeEncoder = SparseAutoencoder.Bool(c, "apply_b_dec_to_input", true),
            HookName = HookName(c),
            EncoderWeight = encoder, EncoderBias = bEnc, DecoderRows = wDec, DecoderBias = bDec,
            DecoderNorms = SparseAutoencoder.RowNorms(wDec, f, d),
        };
    }

    static string? HookName(JsonElement c)
    {
        foreach (var holder in new[] { "", "metadata", "meta" })
        {
            var o = c;
            if (holder.Length > 0 && !(c.TryGetProperty(holder, out o) && o.ValueKind == JsonValueKind.Object)) continue;
            if (o.TryGetProperty("hook_name", out var h) && h.ValueKind == JsonValueKind.String) return h.GetString();
        }
        return null;
    }

}
