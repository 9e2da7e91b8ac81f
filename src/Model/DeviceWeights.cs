using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>The model's weights as backend tensors (<see cref="IBackend.UploadConstant(float[], int[])"/>: on the CPU backend they wrap the host arrays without copying).</summary>
internal sealed class DeviceWeights : IDisposable
{
    public required Tensor TokenEmbedding { get; init; }
    public required Tensor FinalNorm { get; init; }
    public required Tensor Classifier { get; init; }
    public required DeviceLayer[] Layers { get; init; }

    internal sealed class DeviceLayer
    {
        public required Tensor AttnNorm, Wq, Wk, Wv, Wo, FfnNorm, W1, W2, W3;
    }

    public static DeviceWeights Upload(LlamaWeights w, IBackend be)
    {
        var c = w.Config;
        // 16-bit matrices go to the backend as they are: the CPU keeps them 16-bit, others widen them on upload.
        Tensor Put(WeightData data, params int[] shape) => data.Half is { } half ? be.UploadConstant(half, shape) : be.UploadConstant(data.Fp32!, shape);
        var embedding = Put(w.TokenEmbedding, c.VocabSize, c.Dim);
        return new DeviceWeights
        {
            TokenEmbedding = embedding,
            FinalNorm = Put(w.FinalNorm, c.Dim),
            Classifier = ReferenceEquals(w.Classifier, w.TokenEmbedding) ? embedding : Put(w.Classifier, c.VocabSize, c.Dim),
            Layers = w.Layers.Select(l => new DeviceLayer
            {
                AttnNorm = Put(l.AttnNorm, c.Dim),
                Wq = Put(l.Wq, c.Dim, c.Dim),
                Wk = Put(l.Wk, c.KvDim, c.Dim),
                Wv = Put(l.Wv, c.KvDim, c.Dim),
                Wo = Put(l.Wo, c.Dim, c.Dim),
                FfnNorm = Put(l.FfnNorm, c.Dim),
                W1 = Put(l.W1, c.HiddenDim, c.Dim),
                W2 = Put(l.W2, c.Dim, c.HiddenDim),
                W3 = Put(l.W3, c.HiddenDim, c.Dim),
            }).ToArray(),
        };
    }

    /// <summary>
    /// Weight tensors of <paramref name="c"/>'s shapes with undefined contents, uploading nothing: for a run whose values
    /// do not matter (the launch ledger of a recording device, <c>bench gpu-plan</c>), at shapes whose host arrays would
    /// not fit in memory.
    /// </summary>
    public static DeviceWeights AllocateUninitialized(LlamaConfig c, IBackend be)
    {
        Tensor Put(params int[] shape) => be.AllocateConstant(shape);
        var embedding = Put(c.VocabSize, c.Dim);
        return new DeviceWeights
        {
            TokenEmbedding = embedding,
            FinalNorm = Put(c.Dim),
            Classifier = c.TiedEmbeddings ? embedding : Put(c.VocabSize, c.Dim),
            Layers = Enumerable.Range(0, c.Layers).Select(_ => new DeviceLayer
            {
                AttnNorm = Put(c.Dim), Wq = Put(c.Dim, c.Dim), Wk = Put(c.KvDim, c.Dim), Wv = Put(c.KvDim, c.Dim), Wo = Put(c.Dim, c.Dim),
                FfnNorm = Put(c.Dim), W1 = Put(c.HiddenDim, c.Dim), W2 = Put(c.Dim, c.HiddenDim), W3 = Put(c.HiddenDim, c.Dim),
            }).ToArray(),
        };
    }

    public void Dispose()
    {
        TokenEmbedding.Dispose(); FinalNorm.Dispose(); Classifier.Dispose();
        foreach (var l in Layers)
            foreach (var t in new[] { l.AttnNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.FfnNorm, l.W1, l.W2, l.W3 }) t.Dispose();
    }
}
