using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;
using Xunit.Abstractions;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// Whole attribution passes with the streaming attention (what <see cref="Llama"/> runs) against the same passes with
/// the materialising attention kept as the reference (<see cref="IBackend.Attention"/> and its backward, the [B, H, T,
/// T] pattern held for the backward), swapped in under the model by <see cref="MaterialisingAttention"/>: RelP (frozen
/// pattern) and AtP (exact gradient) scores at every site and layer, on the CPU backend and on the CUDA backend over
/// the emulator (fp32 kernels), with prompts of 33..70 tokens (across the CPU's 64-key and the kernels' 32/64 tiles),
/// unequal lengths in one batch and GQA. Tolerance: 1e-4 of the largest |score| of each site and layer (both fp32;
/// only the softmax's summation order and exp differ — the test prints the worst ratio seen).
/// </summary>
public class StreamingWholePassTests(ITestOutputHelper output)
{
    /// <summary>An IBackend that forwards every op to <c>inner</c> except the streaming attention pair, which it runs
    /// through the materialising ops (the pattern kept per forward, looked up by its lse tensor in the backward).
    /// Members with a default body are forwarded too, so the inner backend's own versions run.</summary>
    internal sealed class MaterialisingAttention(IBackend inner) : IBackend
    {
        readonly Dictionary<Tensor, Tensor> patterns = new(ReferenceEqualityComparer.Instance);

        public void StreamingAttention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor lse)
        {
            var probs = inner.Allocate(shape.Batch, shape.Heads, shape.SeqLen, shape.SeqLen);
            inner.Attention(q, k, v, shape, z, probs);
            // The CPU attributor may run the patch forward on a second thread beside the clean one.
            lock (patterns) patterns[lse] = probs;
        }

        public void StreamingAttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape,
            AttentionRule rule, Tensor dq, Tensor dk, Tensor dv)
        {
            Tensor probs;
            lock (patterns) probs = patterns[lse];
            inner.AttentionBackward(dz, q, k, v, probs, shape, rule, dq, dk, dv);
        }

        public void Dispose()
        {
            lock (patterns)
            {
                foreach (var p in patterns.Values) p.Dispose();
                patterns.Clear();
            }
        }

        public string Name => inner.Name;
        public bool SupportsConcurrentCalls => inner.SupportsConcurrentCalls;
        public Tensor Allocate(params int[] shape) => inner.Allocate(shape);
        public Tensor AllocateUninitialized(params int[] shape) => inner.AllocateUninitialized(shape);
        public Tensor Upload(ReadOnlySpan<float> data, params int[] shape) => inner.Upload(data, shape);
        public Tensor UploadConstant(float[] data, params int[] shape) => inner.UploadConstant(data, shape);
        public Tensor UploadConstant(HalfWeights data, params int[] shape) => inner.UploadConstant(data, shape);
        public Tensor AllocateConstant(params int[] shape) => inner.AllocateConstant(shape);
        public void Download(Tensor source, Span<float> destination) => inner.Download(source, destination);
        public void Fill(Tensor tensor, float value) => inner.Fill(tensor, value);
        public void Copy(Tensor source, Tensor destination) => inner.Copy(source, destination);
        public void MatMul(Tensor x, Tensor w, Tensor y, bool accumulate) => inner.MatMul(x, w, y, accumulate);
        public void MatMulInputGrad(Tensor dy, Tensor w, Tensor dx, bool accumulate) => inner.MatMulInputGrad(dy, w, dx, accumulate);
        public void Embedding(ReadOnlySpan<int> tokens, Tensor table, Tensor output) => inner.Embedding(tokens, table, output);
        public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd) => inner.RmsNorm(x, weight, eps, y, rstd);
        public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, NormRule rule, Tensor dx) => inner.RmsNormBackward(dy, x, weight, rstd, rule, dx);
        public void Rope(Tensor x, int heads, int seqLen, Tensor cos, Tensor sin, bool interleaved, bool inverse) => inner.Rope(x, heads, seqLen, cos, sin, interleaved, inverse);
        public void Attention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor probs) => inner.Attention(q, k, v, shape, z, probs);
        public void AttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor probs, AttentionShape shape, AttentionRule rule, Tensor dq, Tensor dk, Tensor dv) =>
            inner.AttentionBackward(dz, q, k, v, probs, shape, rule, dq, dk, dv);
        public void SwiGlu(Tensor gate, Tensor up, Tensor h) => inner.SwiGlu(gate, up, h);
        public void SwiGluBackward(Tensor dh, Tensor gate, Tensor up, GateRule rule, Tensor dgate, Tensor dup) => inner.SwiGluBackward(dh, gate, up, rule, dgate, dup);
        public void Add(Tensor destination, Tensor source) => inner.Add(destination, source);
        public void Intervene(Tensor x, Tensor scale, Tensor offset) => inner.Intervene(x, scale, offset);
        public void MeanAblate(Tensor x, Tensor means, ReadOnlySpan<uint> keepBits, ReadOnlySpan<int> keepRow, ReadOnlySpan<int> meanRow) =>
            inner.MeanAblate(x, means, keepBits, keepRow, meanRow);
        public void Multiply(Tensor x, Tensor scale) => inner.Multiply(x, scale);
        public void GatherRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination) => inner.GatherRows(source, rows, destination);
        public void ScatterAddRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination) => inner.ScatterAddRows(source, rows, destination);
        public void AccumulateScores(Tensor clean, ScoreBaseline baseline, Tensor gradient, float scale, ReadOnlySpan<int> positionOf, Tensor sums,
            int firstRow, int firstColumn) => inner.AccumulateScores(clean, baseline, gradient, scale, positionOf, sums, firstRow, firstColumn);
        public void GatherScaledRows(Tensor source, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, Tensor destination) =>
            inner.GatherScaledRows(source, rows, scales, destination);
        public void SparseMatMulInputGrad(ReadOnlySpan<int> tokens, ReadOnlySpan<float> weights, int perRow, Tensor w, Tensor dx) =>
            inner.SparseMatMulInputGrad(tokens, weights, perRow, w, dx);
        public void PushRange(string name) => inner.PushRange(name);
        public void PopRange() => inner.PopRange();
    }

    public static TheoryData<string, AttributionMethod> Cases => new()
    {
        { "cpu", AttributionMethod.RelP }, { "cpu", AttributionMethod.AtP },
        { "emulator", AttributionMethod.RelP }, { "emulator", AttributionMethod.AtP },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Streaming_scores_equal_the_materialising_reference(string backend, AttributionMethod method)
    {
        var config = RandomLlama.SmallConfig() with { Dim = 32, HiddenDim = 48, Heads = 4, KvHeads = 2, MaxSeqLen = 96 };
        var weights = RandomLlama.Create(config, seed: 11);
        var rng = new Random(4);
        var pairs = new[] { 70, 33, 66 }.Select((len, i) =>
        {
            var clean = Enumerable.Range(0, len).Select(t => t == 0 ? 1 : rng.Next(3, config.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[len / 2] = (patch[len / 2] + 1) % (config.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 4, 6);
        }).ToList();
        var task = new PromptTask("long", pairs);
        var options = new AttributionOptions { Method = method, Sites = [.. NodeSites.All], BatchSize = 3 };

        IBackend Open() => backend == "cpu" ? CpuBackend.Instance : new Runtime.Cuda.CudaBackend(new HostKernelRuntime());
        using var streamingBackend = Open();
        using var referenceInner = Open();
        using var referenceBackend = new MaterialisingAttention(referenceInner);
        using var streaming = new Llama(weights, streamingBackend);
        using var reference = new Llama(weights, referenceBackend);
        var got = Attributor.Score(streaming, task, options);
        var expected = Attributor.Score(reference, task, options);
        double worst = 0;
        foreach (var s in options.Sites)
            for (int l = 0; l < config.Layers; l++)
            {
                float[] a = expected.Get(s, l), b = got.Get(s, l);
                double max = a.Max(x => Math.Abs((double)x));
                Assert.True(max > 0, $"{s} layer {l}: all zero");
                for (int i = 0; i < a.Length; i++)
                {
                    double ratio = Math.Abs((double)a[i] - b[i]) / (1e-4 * max);
                    worst = Math.Max(worst, ratio);
                    Assert.True(ratio <= 1, $"{backend} {method} {s} layer {l} [{i}]: materialising {a[i]}, streaming {b[i]}");
                }
            }
        output.WriteLine($"{backend} {method}: worst {worst:F4} of the tolerance");
    }
}
