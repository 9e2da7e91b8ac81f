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
public sealed record Llama3RopeScaling(float Factor, float LowFreqFactor, float HighFreqFactor, int OriginalMaxPositionEmbeddings);

/// <summary>Shape and hyper-parameters of a Llama-family decoder. Every loader produces one.</summary>
public sealed record LlamaConfig
{
    public required int Dim { get; init; }
    public required int HiddenDim { get; init; }
    public required int Layers { get; init; }
    public required int Heads { get; init; }
    public required int KvHeads { get; init; }
    public required int VocabSize { get; init; }
    public required int MaxSeqLen { get; init; }
    public float NormEps { get; init; } = 1e-5f;
    public float RopeTheta { get; init; } = 10000f;
    public Llama3RopeScaling? RopeScaling { get; init; }
    public required RopeLayout RopeLayout { get; init; }
    public bool TiedEmbeddings { get; init; }
    public int BosId { get; init; } = 1;
    public int EosId { get; init; } = 2;

    public int HeadDim => Dim / Heads;
    public int KvDim => KvHeads * HeadDim;

    /// <summary>Throws <see cref="ModelFormatException"/> when the shape is not a usable Llama.</summary>
    public void Validate(string source)
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

    public long ParameterCount =>
        (long)VocabSize * Dim * (TiedEmbeddings ? 1 : 2) + Dim +
        (long)Layers * (2L * Dim + (long)Dim * Dim * 2 + 2L * KvDim * Dim + 3L * Dim * HiddenDim);
}
