using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// The model's weights as backend tensors (<see cref="IBackend.UploadConstant(float[], int[])"/>: on the CPU backend
/// they wrap the host arrays without copying), each on the device its <see cref="LayerPlacement"/> names. Wq, Wk, Wv
/// and W1, W3 go through <see cref="IBackend.StackConstants"/>: a CUDA backend in bf16 stores each group as one
/// matrix, so the products sharing an input run as one (the CPU keeps them separate).
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
            var qkv = be.StackConstants([Put(l.Wq, c.Dim, c.Dim), Put(l.Wk, c.KvDim, c.Dim), Put(l.Wv, c.KvDim, c.Dim)]);
            var gateUp = be.StackConstants([Put(l.W1, c.HiddenDim, c.Dim), Put(l.W3, c.HiddenDim, c.Dim)]);
            return new DeviceLayer
            {
                AttnNorm = Put(l.AttnNorm, c.Dim),
                Wq = qkv[0], Wk = qkv[1], Wv = qkv[2],
                Wo = Put(l.Wo, c.Dim, c.Dim),
                FfnNorm = Put(l.FfnNorm, c.Dim),
                W1 = gateUp[0],
                W2 = Put(l.W2, c.Dim, c.HiddenDim),
                W3 = gateUp[1],
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
            var qkv = be.StackConstants([Put(be, c.Dim, c.Dim), Put(be, c.KvDim, c.Dim), Put(be, c.KvDim, c.Dim)]);
            var gateUp = be.StackConstants([Put(be, c.HiddenDim, c.Dim), Put(be, c.HiddenDim, c.Dim)]);
            layers[l] = new DeviceLayer
            {
                AttnNorm = Put(be, c.Dim), Wq = qkv[0], Wk = qkv[1], Wv = qkv[2], Wo = Put(be, c.Dim, c.Dim),
                FfnNorm = Put(be, c.Dim), W1 = gateUp[0], W2 = Put(be, c.Dim, c.HiddenDim), W3 = gateUp[1],
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
