using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Bench;

/// <summary>
/// Random bf16 weights of any shape, made in this process on every core: the GPU benchmark's Llama-3.1-8B-shaped model
/// (16 GB) without writing or reading a file. Matrices uniform in ±√(3/fan-in)·0.5 (so activations neither vanish nor
/// blow up over 32 layers), norms 1. Values do not matter to the timings; they only must be finite.
/// </summary>
static class RandomWeights
{
    public static LlamaWeights Bf16(LlamaConfig c, int seed)
    {
        int n = 0;
        WeightData M(long rows, int cols) => new(Matrix(rows * cols, 0.5f * MathF.Sqrt(3f / cols), seed * 1000 + n++));
        float[] Ones(int d) => Enumerable.Repeat(1f, d).ToArray();
        return new LlamaWeights
        {
            Config = c,
            TokenEmbedding = M(c.VocabSize, c.Dim),
            FinalNorm = Ones(c.Dim),
            Classifier = M(c.VocabSize, c.Dim),
            Layers = Enumerable.Range(0, c.Layers).Select(_ => new LayerWeights
            {
                AttnNorm = Ones(c.Dim), FfnNorm = Ones(c.Dim),
                Wq = M(c.Dim, c.Dim), Wk = M(c.KvDim, c.Dim), Wv = M(c.KvDim, c.Dim), Wo = M(c.Dim, c.Dim),
                W1 = M(c.HiddenDim, c.Dim), W2 = M(c.Dim, c.HiddenDim), W3 = M(c.HiddenDim, c.Dim),
            }).ToArray(),
        };
    }

    /// <summary><paramref name="count"/> bf16 values uniform in ±<paramref name="scale"/>, filled in parallel chunks (each chunk its own stream, so the result does not depend on the thread count).</summary>
    static unsafe HalfWeights Matrix(long count, float scale, int seed)
    {
        var values = GC.AllocateUninitializedArray<ushort>(checked((int)count), pinned: true);
        const int Chunk = 1 << 20;
        Parallel.For(0, (int)((count + Chunk - 1) / Chunk), chunk =>
        {
            ulong state = (ulong)(uint)seed * 0x9E3779B97F4A7C15UL ^ (ulong)chunk * 0xBF58476D1CE4E5B9UL | 1;
            long start = (long)chunk * Chunk, end = Math.Min(count, start + Chunk);
            for (long i = start; i < end; i++)
            {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;   // xorshift64
                float u = (state >> 40) * (1f / (1 << 24)) * 2f - 1f;            // [-1, 1)
                values[i] = (ushort)(BitConverter.SingleToUInt32Bits(u * scale) >> 16);
            }
        });
        ushort* p = (ushort*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(values));
        return new HalfWeights(p, count, HalfFormat.BFloat16, owner: values);
    }
}
