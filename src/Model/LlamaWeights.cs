using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace NeuronTrace.Model;

/// <summary>
/// One decoder block's weights, fp32, row-major <c>[out, in]</c> (the nn.Linear layout).
/// Q and K rows are in the layout the file had; <see cref="LlamaConfig.RopeLayout"/> says how RoPE pairs them.
/// </summary>
public sealed class LayerWeights
{
    public required float[] AttnNorm { get; init; }  // [dim]
    public required float[] Wq { get; init; }        // [dim, dim]
    public required float[] Wk { get; init; }        // [kvDim, dim]
    public required float[] Wv { get; init; }        // [kvDim, dim]
    public required float[] Wo { get; init; }        // [dim, dim]
    public required float[] FfnNorm { get; init; }   // [dim]
    public required float[] W1 { get; init; }        // gate_proj [hidden, dim]
    public required float[] W2 { get; init; }        // down_proj [dim, hidden]
    public required float[] W3 { get; init; }        // up_proj [hidden, dim]
}

/// <summary>All weights of a Llama in fp32 on the host. Loaders fill it; backends upload it.</summary>
public sealed class LlamaWeights
{
    public required LlamaConfig Config { get; init; }
    public required float[] TokenEmbedding { get; init; } // [vocab, dim]
    public required LayerWeights[] Layers { get; init; }
    public required float[] FinalNorm { get; init; }      // [dim]
    /// <summary>[vocab, dim]; the same array as <see cref="TokenEmbedding"/> when tied.</summary>
    public required float[] Classifier { get; init; }

    /// <summary>Checks every array has the size the config implies.</summary>
    public void Validate(string source)
    {
        var c = Config;
        c.Validate(source);
        Check(TokenEmbedding, (long)c.VocabSize * c.Dim, "token embedding");
        Check(FinalNorm, c.Dim, "final norm");
        Check(Classifier, (long)c.VocabSize * c.Dim, "classifier");
        if (Layers.Length != c.Layers) throw new ModelFormatException(source, $"{Layers.Length} layers, config says {c.Layers}");
        for (int l = 0; l < Layers.Length; l++)
        {
            var w = Layers[l];
            Check(w.AttnNorm, c.Dim, $"layer {l} attention norm");
            Check(w.Wq, (long)c.Dim * c.Dim, $"layer {l} wq");
            Check(w.Wk, (long)c.KvDim * c.Dim, $"layer {l} wk");
            Check(w.Wv, (long)c.KvDim * c.Dim, $"layer {l} wv");
            Check(w.Wo, (long)c.Dim * c.Dim, $"layer {l} wo");
            Check(w.FfnNorm, c.Dim, $"layer {l} ffn norm");
            Check(w.W1, (long)c.HiddenDim * c.Dim, $"layer {l} w1");
            Check(w.W2, (long)c.HiddenDim * c.Dim, $"layer {l} w2");
            Check(w.W3, (long)c.HiddenDim * c.Dim, $"layer {l} w3");
        }
        void Check(float[] a, long n, string what)
        {
            if (a.LongLength != n) throw new ModelFormatException(source, $"{what} has {a.LongLength} values, expected {n}");
            // A NaN or infinite weight (a corrupt file) would otherwise surface only as NaN scores with exit code 0.
            int bad = FirstNonFinite(a);
            if (bad >= 0) throw new ModelFormatException(source, $"{what} holds a non-finite value ({a[bad]}) at index {bad}");
        }
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
