using NeuronTrace.Model;

namespace NeuronTrace.TestSupport;

/// <summary>Small Llamas with seeded random weights, for finite-difference and kernel tests.</summary>
internal static class RandomLlama
{
    public static LlamaConfig SmallConfig(RopeLayout layout = RopeLayout.Interleaved) => new()
    {
        Dim = 16, HiddenDim = 24, Layers = 2, Heads = 4, KvHeads = 2, VocabSize = 32, MaxSeqLen = 64, RopeLayout = layout, TiedEmbeddings = false,
    };

    /// <summary><paramref name="w"/> with every matrix (embedding, classifier, each layer's seven) mapped through
    /// <paramref name="matrix"/>; the norms are kept. The tests' one way to re-store a model's weights (e.g. in 16 bits); a tied classifier is mapped as its own matrix.</summary>
    public static LlamaWeights MapMatrices(LlamaWeights w, Func<WeightData, WeightData> matrix) => new()
    {
        Config = w.Config, TokenEmbedding = matrix(w.TokenEmbedding), FinalNorm = w.FinalNorm, Classifier = matrix(w.Classifier),
        Layers = w.Layers.Select(l => new LayerWeights
        {
            AttnNorm = l.AttnNorm, Wq = matrix(l.Wq), Wk = matrix(l.Wk), Wv = matrix(l.Wv), Wo = matrix(l.Wo),
            FfnNorm = l.FfnNorm, W1 = matrix(l.W1), W2 = matrix(l.W2), W3 = matrix(l.W3),
        }).ToArray(),
    };

    public static LlamaWeights Create(LlamaConfig c, int seed, float scale = 0.3f)
    {
        var rng = new Random(seed);
        float[] R(long n, float s) { var a = new float[n]; for (long i = 0; i < n; i++) a[i] = (float)(rng.NextDouble() * 2 - 1) * s; return a; }
        float[] Norm(int n) { var a = new float[n]; for (int i = 0; i < n; i++) a[i] = 1f + (float)(rng.NextDouble() - 0.5) * 0.4f; return a; }
        var emb = R((long)c.VocabSize * c.Dim, 1f);
        return new LlamaWeights
        {
            Config = c,
            TokenEmbedding = emb,
            FinalNorm = Norm(c.Dim),
            Classifier = c.TiedEmbeddings ? emb : R((long)c.VocabSize * c.Dim, scale),
            Layers = Enumerable.Range(0, c.Layers).Select(_ => new LayerWeights
            {
                AttnNorm = Norm(c.Dim),
                Wq = R((long)c.Dim * c.Dim, scale * 2), Wk = R((long)c.KvDim * c.Dim, scale * 2), Wv = R((long)c.KvDim * c.Dim, scale),
                Wo = R((long)c.Dim * c.Dim, scale), FfnNorm = Norm(c.Dim),
                W1 = R((long)c.HiddenDim * c.Dim, scale * 2), W2 = R((long)c.Dim * c.HiddenDim, scale), W3 = R((long)c.HiddenDim * c.Dim, scale),
            }).ToArray(),
        };
    }
}
