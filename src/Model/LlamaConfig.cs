namespace NeuronTrace.Model;

/// <summary>How rotary position embedding pairs the dimensions of a head.</summary>
public enum RopeLayout
{
    /// <summary>Meta / llama2.c / GGUF: rotate pairs (2i, 2i+1).</summary>
    Interleaved,
    /// <summary>Hugging Face: rotate (i, i + headDim/2) ("rotate_half" on permuted Q/K weights).</summary>
    RotateHalf,
}

/// <summary>Llama 3.1 frequency scaling (<c>rope_scaling.rope_type = "llama3"</c>).</summary>
/// <param name="Factor">How much longer the extended context is than the original (<c>factor</c>).</param>
/// <param name="LowFreqFactor">Wavelengths above original context / this are scaled by <paramref name="Factor"/> (<c>low_freq_factor</c>).</param>
/// <param name="HighFreqFactor">Wavelengths below original context / this are left unscaled (<c>high_freq_factor</c>); between the two, a blend.</param>
/// <param name="OriginalMaxPositionEmbeddings">The context length the model was pre-trained with (<c>original_max_position_embeddings</c>).</param>
public sealed record Llama3RopeScaling(float Factor, float LowFreqFactor, float HighFreqFactor, int OriginalMaxPositionEmbeddings);

/// <summary>Shape and hyper-parameters of a Llama-family decoder. Every loader produces one.</summary>
public sealed record LlamaConfig
{
    /// <summary>Width of the residual stream (<c>hidden_size</c>): the width of the resid, attn, attn_z and mlp_out sites.</summary>
    public required int Dim { get; init; }
    /// <summary>Width of the MLP's hidden layer (<c>intermediate_size</c>): the number of neurons (mlp_act) per layer.</summary>
    public required int HiddenDim { get; init; }
    /// <summary>Number of decoder layers.</summary>
    public required int Layers { get; init; }
    /// <summary>Number of query heads.</summary>
    public required int Heads { get; init; }
    /// <summary>Number of key/value heads (fewer than <see cref="Heads"/> under grouped-query attention).</summary>
    public required int KvHeads { get; init; }
    /// <summary>Number of tokens in the vocabulary (rows of the embedding, columns of the logits).</summary>
    public required int VocabSize { get; init; }
    /// <summary>The longest prompt the model takes, in tokens.</summary>
    public required int MaxSeqLen { get; init; }
    /// <summary>The RMSNorm epsilon.</summary>
    public float NormEps { get; init; } = 1e-5f;
    /// <summary>The RoPE base frequency θ.</summary>
    public float RopeTheta { get; init; } = 10000f;
    /// <summary>Llama 3.1 RoPE frequency scaling; null for none.</summary>
    public Llama3RopeScaling? RopeScaling { get; init; }
    /// <summary>How RoPE pairs the dimensions of a head; follows from the file format.</summary>
    public required RopeLayout RopeLayout { get; init; }
    /// <summary>Whether the output projection reuses the token embedding.</summary>
    public bool TiedEmbeddings { get; init; }
    /// <summary>The beginning-of-sequence token id, prepended to prompts.</summary>
    public int BosId { get; init; } = 1;
    /// <summary>The end-of-sequence token id.</summary>
    public int EosId { get; init; } = 2;

    /// <summary>Width of one attention head: <see cref="Dim"/> / <see cref="Heads"/>.</summary>
    public int HeadDim => Dim / Heads;
    /// <summary>Width of the keys (and values) of all key/value heads: <see cref="KvHeads"/> · <see cref="HeadDim"/>.</summary>
    public int KvDim => KvHeads * HeadDim;

    /// <summary>Throws <see cref="ModelFormatException"/> when the shape is not a usable Llama.</summary>
    internal void Validate(string source)
    {
        if (Dim <= 0 || HiddenDim <= 0 || Layers <= 0 || Heads <= 0 || KvHeads <= 0 || VocabSize <= 0 || MaxSeqLen <= 0)
            throw new ModelFormatException(source, $"config has a non-positive size (dim {Dim}, hidden {HiddenDim}, layers {Layers}, heads {Heads}, kv heads {KvHeads}, vocab {VocabSize}, seq {MaxSeqLen})");
        if (Dim % Heads != 0)
            throw new ModelFormatException(source, $"dim {Dim} is not a multiple of heads {Heads}");
        if (Heads % KvHeads != 0)
            throw new ModelFormatException(source, $"heads {Heads} is not a multiple of kv heads {KvHeads}");
        if (HeadDim % 2 != 0)
            throw new ModelFormatException(source, $"head size {HeadDim} is odd; RoPE needs pairs");
        // Out-of-range numbers load without complaint and then turn every logit into NaN.
        if (!(float.IsFinite(NormEps) && NormEps > 0))
            throw new ModelFormatException(source, $"norm epsilon {NormEps} is not a positive number");
        if (!(float.IsFinite(RopeTheta) && RopeTheta > 0))
            throw new ModelFormatException(source, $"rope theta {RopeTheta} is not a positive number");
        if (RopeScaling is { } s && !(float.IsFinite(s.Factor) && s.Factor > 0 && float.IsFinite(s.HighFreqFactor) && s.LowFreqFactor > 0
                && s.HighFreqFactor > s.LowFreqFactor && s.OriginalMaxPositionEmbeddings > 0))
            throw new ModelFormatException(source, $"rope scaling (factor {s.Factor}, low {s.LowFreqFactor}, high {s.HighFreqFactor}, original context {s.OriginalMaxPositionEmbeddings}) needs positive numbers with high > low");
    }

    /// <summary>The number of weights: embeddings (twice unless tied), the final norm, and per layer two norms, q/k/v/o and the three MLP matrices.</summary>
    public long ParameterCount =>
        (long)VocabSize * Dim * (TiedEmbeddings ? 1 : 2) + Dim +
        (long)Layers * (2L * Dim + (long)Dim * Dim * 2 + 2L * KvDim * Dim + 3L * Dim * HiddenDim);
}
