using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Model;

/// <summary>The model's weights as backend tensors. On the CPU backend they wrap the host arrays without copying.</summary>
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
        Tensor Put(WeightData data, params int[] shape)
        {
            if (be is CpuBackend) return data.Half is { } half ? CpuBackend.Wrap(half, shape) : CpuBackend.Wrap(data.Fp32!, shape);
            var t = be.Upload(data.ToFloats(), shape);   // other backends get fp32 (16-bit matrices widened here)
            if (t is NeuronTrace.Runtime.Cuda.CudaTensor device) device.IsConstant = true;  // lets bf16 products cache a copy
            return t;
        }
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

    public void Dispose()
    {
        TokenEmbedding.Dispose(); FinalNorm.Dispose(); Classifier.Dispose();
        foreach (var l in Layers)
            foreach (var t in new[] { l.AttnNorm, l.Wq, l.Wk, l.Wv, l.Wo, l.FfnNorm, l.W1, l.W2, l.W3 }) t.Dispose();
    }
}
