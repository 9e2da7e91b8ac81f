using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// One decoder block's weights, row-major <c>[out, in]</c> (the nn.Linear layout): norms in fp32, matrices in fp32 or
/// in the 16-bit precision of the file (<see cref="WeightData"/>).
/// Q and K rows are in the layout the file had; <see cref="LlamaConfig.RopeLayout"/> says how RoPE pairs them.
/// </summary>
internal sealed class LayerWeights
{
    public required float[] AttnNorm { get; init; }  // [dim]
    public required WeightData Wq { get; init; }        // [dim, dim]
    public required WeightData Wk { get; init; }        // [kvDim, dim]
    public required WeightData Wv { get; init; }        // [kvDim, dim]
    public required WeightData Wo { get; init; }        // [dim, dim]
    public required float[] FfnNorm { get; init; }   // [dim]
    public required WeightData W1 { get; init; }        // gate_proj [hidden, dim]
    public required WeightData W2 { get; init; }        // down_proj [dim, hidden]
    public required WeightData W3 { get; init; }        // up_proj [hidden, dim]
}

/// <summary>All weights of a Llama on the host. Loaders fill it; backends upload it.</summary>
internal sealed class LlamaWeights
{
    WeightData _classifier = null!;

    public required LlamaConfig Config { get; init; }
    public required WeightData TokenEmbedding { get; init; } // [vocab, dim]
    public required LayerWeights[] Layers { get; init; }
    public required float[] FinalNorm { get; init; }      // [dim]
    /// <summary>
    /// [vocab, dim]; the same object as <see cref="TokenEmbedding"/> when tied (also when both were given as the same
    /// fp32 array, each wrapped on its own by the implicit conversion).
    /// </summary>
    public required WeightData Classifier
    {
        get => _classifier.Fp32 is { } a && ReferenceEquals(a, TokenEmbedding.Fp32) ? TokenEmbedding : _classifier;
        init => _classifier = value;
    }

    /// <summary>
    /// The same model with every 16-bit matrix widened to fp32 (exactly): the reference the 16-bit-resident products
    /// are tested against. fp32 matrices are shared, not copied.
    /// </summary>
    public LlamaWeights WidenedToFp32()
    {
        WeightData W(WeightData w) => w.Half is null ? w : new WeightData(w.ToFloats());
        var embedding = W(TokenEmbedding);
        return new LlamaWeights
        {
            Config = Config,
            TokenEmbedding = embedding,
            FinalNorm = FinalNorm,
            Classifier = ReferenceEquals(Classifier, TokenEmbedding) ? embedding : W(Classifier),
            Layers = Layers.Select(l => new LayerWeights
            {
                AttnNorm = l.AttnNorm, Wq = W(l.Wq), Wk = W(l.Wk), Wv = W(l.Wv), Wo = W(l.Wo),
                FfnNorm = l.FfnNorm, W1 = W(l.W1), W2 = W(l.W2), W3 = W(l.W3),
            }).ToArray(),
        };
    }

    /// <summary>Checks every array has the size the config implies.</summary>
    public void Validate(string source)
    {
        var c = Config;
        c.Validate(source);
        Check(TokenEmbedding, (long)c.VocabSize * c.Dim, "token embedding");
        CheckFp32(FinalNorm, c.Dim, "final norm");
        Check(Classifier, (long)c.VocabSize * c.Dim, "classifier");
        // The scan just made the whole mapped embedding resident; a run reads only its prompts' rows of it.
        if (TokenEmbedding.Half is { } embedding && !ReferenceEquals(embedding, Classifier.Half)) embedding.ReleaseResidentPages();
        if (Layers.Length != c.Layers) throw new ModelFormatException(source, $"{Layers.Length} layers, config says {c.Layers}");
        for (int l = 0; l < Layers.Length; l++)
        {
            var w = Layers[l];
            CheckFp32(w.AttnNorm, c.Dim, $"layer {l} attention norm");
            Check(w.Wq, (long)c.Dim * c.Dim, $"layer {l} wq");
            Check(w.Wk, (long)c.KvDim * c.Dim, $"layer {l} wk");
            Check(w.Wv, (long)c.KvDim * c.Dim, $"layer {l} wv");
            Check(w.Wo, (long)c.Dim * c.Dim, $"layer {l} wo");
            CheckFp32(w.FfnNorm, c.Dim, $"layer {l} ffn norm");
            Check(w.W1, (long)c.HiddenDim * c.Dim, $"layer {l} w1");
            Check(w.W2, (long)c.HiddenDim * c.Dim, $"layer {l} w2");
            Check(w.W3, (long)c.HiddenDim * c.Dim, $"layer {l} w3");
        }
        void Check(WeightData a, long n, string what)
        {
            if (a.Half is { } h)
            {
                if (h.Length != n) throw new ModelFormatException(source, $"{what} has {h.Length} values, expected {n}");
                long badHalf = FirstNonFinite(h);
                if (badHalf >= 0) throw new ModelFormatException(source, $"{what} holds a non-finite value ({h[badHalf]}) at index {badHalf}");
                return;
            }
            CheckFp32(a.Fp32!, n, what);
        }
        void CheckFp32(float[] a, long n, string what)
        {
            if (a.LongLength != n) throw new ModelFormatException(source, $"{what} has {a.LongLength} values, expected {n}");
            // A NaN or infinite weight (a corrupt file) would otherwise surface only as NaN scores with exit code 0.
            int bad = FirstNonFinite(a);
            if (bad >= 0) throw new ModelFormatException(source, $"{what} holds a non-finite value ({a[bad]}) at index {bad}");
        }
    }

    /// <summary>Index of the first NaN or infinity among 16-bit values (all exponent bits set), or −1.</summary>
    static long FirstNonFinite(HalfWeights h)
    {
        ushort exponent = h.Format == HalfFormat.BFloat16 ? (ushort)0x7F80 : (ushort)0x7C00;
        const int Chunk = 1 << 20;
        for (long start = 0; start < h.Length; start += Chunk)
        {
            var raw = h.Raw(start, (int)Math.Min(Chunk, h.Length - start));
            int i = 0;
            if (Vector256.IsHardwareAccelerated)
            {
                var e = Vector256.Create(exponent);
                for (; i + 16 <= raw.Length; i += 16)
                    if (Vector256.EqualsAny(Vector256.Create(raw.Slice(i, 16)) & e, e)) break;   // the scalar loop finds which
            }
            for (; i < raw.Length; i++)
                if ((raw[i] & exponent) == exponent) return start + i;
        }
        return -1;
    }

    /// <summary>Index of the first NaN or infinity, or −1. x·0 is 0 for every finite x and NaN otherwise.</summary>
    static int FirstNonFinite(float[] a)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated)
        {
            ref float start = ref MemoryMarshal.GetArrayDataReference(a);
            for (; i + 64 <= a.Length; i += 64)
            {
                var acc = Vector256<float>.Zero;
                for (int j = 0; j < 64; j += 8) acc += Vector256.LoadUnsafe(ref start, (nuint)(i + j)) * Vector256<float>.Zero;
                if (!Vector256.EqualsAll(acc, Vector256<float>.Zero)) break;   // the scalar loop below finds which
            }
        }
        for (; i < a.Length; i++)
            if (!float.IsFinite(a[i])) return i;
        return -1;
    }
}

/// <summary>
/// A weight matrix on the host: fp32 (<see cref="Fp32"/>), or 16-bit values as the file stores them (<see cref="Half"/>),
/// which the CPU products widen to fp32 as they read. Converts implicitly from a float array, and to one (a 16-bit matrix
/// is then widened into a new array: writers and device uploads use this; the CPU backend never does).
/// </summary>
internal sealed class WeightData
{
    public WeightData(float[] values) => Fp32 = values ?? throw new ArgumentNullException(nameof(values));
    public WeightData(HalfWeights values) => Half = values ?? throw new ArgumentNullException(nameof(values));

    public float[]? Fp32 { get; }
    public HalfWeights? Half { get; }
    public long LongLength => Fp32?.LongLength ?? Half!.Length;
    public float this[long index] => Fp32 is { } a ? a[index] : Half![index];

    /// <summary>The fp32 array itself, or the 16-bit values widened into a new array.</summary>
    public float[] ToFloats() => Fp32 ?? Half!.ToFloats();

    public static implicit operator WeightData(float[] values) => values is null ? null! : new(values);
    public static implicit operator float[](WeightData weights) => weights?.ToFloats()!;
}
