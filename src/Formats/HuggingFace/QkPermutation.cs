using NeuronTrace.Model;
namespace NeuronTrace.Formats;

/// <summary>
/// Reorders the rows of a Q or K projection between the two RoPE conventions.
/// Interleaved RoPE (Meta, llama2.c, GGUF) rotates row pairs (2i, 2i+1) of each head; Hugging Face's rotate_half
/// rotates (i, i + headDim/2). Moving each head's even rows to its first half and its odd rows to its second half
/// (<c>w.view(h, r/h/2, 2, c).transpose(1, 2).reshape(r, c)</c>, the permutation of HF's conversion script)
/// makes rotate_half on the new weights compute exactly what interleaved RoPE computed on the old ones.
/// </summary>
internal static class QkPermutation
{
    /// <summary>Interleaved-layout rows → rotate_half-layout rows. Returns a new array.</summary>
    public static float[] ToRotateHalf(ReadOnlySpan<float> w, int heads, int rows, int cols)
    {
        Check(w, heads, rows, cols);
        var dst = new float[w.Length];
        int headDim = rows / heads, half = headDim / 2;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                {
                    int from = h * headDim + 2 * i + j;   // pair i, member j
                    int to = h * headDim + j * half + i;  // member j's half, position i
                    w.Slice(from * cols, cols).CopyTo(dst.AsSpan(to * cols, cols));
                }
        return dst;
    }

    /// <summary>rotate_half-layout rows → interleaved-layout rows (the inverse of <see cref="ToRotateHalf"/>).</summary>
    public static float[] ToInterleaved(ReadOnlySpan<float> w, int heads, int rows, int cols)
    {
        Check(w, heads, rows, cols);
        var dst = new float[w.Length];
        int headDim = rows / heads, half = headDim / 2;
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++)
                for (int j = 0; j < 2; j++)
                {
                    int from = h * headDim + j * half + i;
                    int to = h * headDim + 2 * i + j;
                    w.Slice(from * cols, cols).CopyTo(dst.AsSpan(to * cols, cols));
                }
        return dst;
    }

    /// <summary>Returns the weights converted so that their Q/K rows are in <paramref name="target"/> layout (the same object when already so).</summary>
    public static LlamaWeights ToLayout(LlamaWeights w, RopeLayout target)
    {
        var c = w.Config;
        if (c.RopeLayout == target) return w;
        Func<float[], int, int, float[]> f = target == RopeLayout.RotateHalf
            ? (a, h, r) => ToRotateHalf(a, h, r, c.Dim)
            : (a, h, r) => ToInterleaved(a, h, r, c.Dim);
        return new LlamaWeights
        {
            Config = c with { RopeLayout = target },
            TokenEmbedding = w.TokenEmbedding,
            FinalNorm = w.FinalNorm,
            Classifier = w.Classifier,
            Layers = w.Layers.Select(l => new LayerWeights
            {
                AttnNorm = l.AttnNorm,
                Wq = f(l.Wq, c.Heads, c.Dim),
                Wk = f(l.Wk, c.KvHeads, c.KvDim),
                Wv = l.Wv, Wo = l.Wo, FfnNorm = l.FfnNorm, W1 = l.W1, W2 = l.W2, W3 = l.W3,
            }).ToArray(),
        };
    }

    static void Check(ReadOnlySpan<float> w, int heads, int rows, int cols)
    {
        if (heads <= 0 || rows % heads != 0 || (rows / heads) % 2 != 0)
            throw new ArgumentException($"{rows} rows do not split into {heads} heads of even size");
        if (w.Length != (long)rows * cols)
            throw new ArgumentException($"{w.Length} values, expected {rows}x{cols}");
    }
}
