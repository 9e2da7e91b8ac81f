using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// The model's weights as backend tensors (<see cref="IBackend.UploadConstant(float[], int[])"/>: on the CPU backend
/// they wrap the host arrays without copying), each on the device its <see cref="LayerPlacement"/> names.
/// </summary>
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

    public static DeviceWeights Upload(LlamaWeights w, LayerPlacement placement)
    {
        var c = w.Config;
        var be = placement.First;
        // 16-bit matrices go to the backend as they are: the CPU keeps them 16-bit, others widen them on upload.
        Tensor Put(WeightData data, params int[] shape) => data.Half is { } half ? be.UploadConstant(half, shape) : be.UploadConstant(data.Fp32!, shape);
        var embedding = Put(w.TokenEmbedding, c.VocabSize, c.Dim);
        var layers = w.Layers.Select((l, i) =>
        {
            be = placement.Of(i);
            return new DeviceLayer
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
            };
        }).ToArray();
        be = placement.Last;   // the head; a tied classifier is a copy of the embedding when the last device is not the first
        return new DeviceWeights
        {
            TokenEmbedding = embedding,
            FinalNorm = Put(w.FinalNorm, c.Dim),
            Classifier = ReferenceEquals(w.Classifier, w.TokenEmbedding) && !placement.IsSplit ? embedding : Put(w.Classifier, c.VocabSize, c.Dim),
            Layers = layers,
        };
    }

    /// <summary>
    /// Weight tensors of <paramref name="c"/>'s shapes with undefined contents, uploading nothing: for a run whose values
    /// do not matter (the launch ledger of a recording device, <c>bench gpu-plan</c>), at shapes whose host arrays would
    /// not fit in memory.
    /// </summary>
    public static DeviceWeights AllocateUninitialized(LlamaConfig c, LayerPlacement placement)
    {
        static Tensor Put(IBackend be, params int[] shape) => be.AllocateConstant(shape);
        var embedding = Put(placement.First, c.VocabSize, c.Dim);
        var layers = new DeviceLayer[c.Layers];
        for (int l = 0; l < c.Layers; l++)
        {
            var be = placement.Of(l);
            layers[l] = new DeviceLayer
            {
                AttnNorm = Put(be, c.Dim), Wq = Put(be, c.Dim, c.Dim), Wk = Put(be, c.KvDim, c.Dim), Wv = Put(be, c.KvDim, c.Dim), Wo = Put(be, c.Dim, c.Dim),
                FfnNorm = Put(be, c.Dim), W1 = Put(be, c.HiddenDim, c.Dim), W2 = Put(be, c.Dim, c.HiddenDim), W3 = Put(be, c.HiddenDim, c.Dim),
            };
        }
        return new DeviceWeights
        {
            TokenEmbedding = embedding,
            FinalNorm = Put(placement.Last, c.Dim),
            Classifier = c.TiedEmbeddings && !placement.IsSplit ? embedding : Put(placement.Last, c.VocabSize, c.Dim),
            Layers = layers,
        };
    }

    public void Dispose()
    {
        TokenEmbedding.Dispose(); FinalNorm.Dispose(); Classifier.Dispose();
        foreach (var l in Layers)
            foreach (var t in new[] { l.AttnNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.FfnNorm, l.W1, l.W2, l.W3 }) t.Dispose();
    }
}
