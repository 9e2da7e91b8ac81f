using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// Scores with 16-bit-resident weights (bf16/f16 kept as stored, widened inside the products) against the same model
/// with every matrix widened to fp32 up front. Widening is exact and the products run the same fp32 kernels on the
/// same values in the same order, so the stated tolerance is zero: the scores must be bit-identical.
/// </summary>
public class HalfWeightScoresTests
{
    static readonly NodeSite[] Sites = [NodeSite.Resid, NodeSite.Attn, NodeSite.MlpOut, NodeSite.MlpAct];

    [Fact]
    public void BundledModelConvertedToBf16ScoresAsItsWidenedCopy()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"nt-bf16-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            var fp32 = ModelLoader.Load(RepoPaths.Stories260KBin).Weights;
            HfFolderWriter.Write(fp32, dir, null, FloatEncoding.BF16);
            var resident = HfFolderFormat.Load(dir);
            Assert.NotNull(resident.Layers[0].W2.Half);   // mapped 16-bit, not widened at load
            Assert.NotNull(resident.TokenEmbedding.Half);
            AssertSameScores(resident, RandomTasks.Pairs(6, resident.Config.VocabSize, seed: 3));
        }
        finally
        {
            GC.Collect(); GC.WaitForPendingFinalizers();   // the mapped weights hold the file open until finalized
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    [Theory]
    [InlineData(nameof(HalfFormat.BFloat16))]
    [InlineData(nameof(HalfFormat.Float16))]
    public void AwkwardRandomModelScoresAsItsWidenedCopy(string formatName) // by name: HalfFormat is internal
    {
        var format = Enum.Parse<HalfFormat>(formatName);
        // Widths off every vector and tile multiple; head size 6, three query heads per KV head.
        var config = RandomLlama.SmallConfig() with { Dim = 18, HiddenDim = 41, Heads = 3, KvHeads = 1, VocabSize = 37, Layers = 3 };
        var w = RandomLlama.Create(config, seed: 5);
        WeightData H(WeightData m)
        {
            var a = m.Fp32!;
            var bits = new ushort[a.Length];
            for (int i = 0; i < a.Length; i++)
                bits[i] = format == HalfFormat.BFloat16 ? (ushort)(BitConverter.SingleToUInt32Bits(a[i]) >> 16) : BitConverter.HalfToUInt16Bits((Half)a[i]);
            return new WeightData(new HalfWeights(bits, format));
        }
        var half = new LlamaWeights
        {
            Config = config, TokenEmbedding = H(w.TokenEmbedding), FinalNorm = w.FinalNorm, Classifier = H(w.Classifier),
            Layers = w.Layers.Select(l => new LayerWeights
            {
                AttnNorm = l.AttnNorm, Wq = H(l.Wq), Wk = H(l.Wk), Wv = H(l.Wv), Wo = H(l.Wo),
                FfnNorm = l.FfnNorm, W1 = H(l.W1), W2 = H(l.W2), W3 = H(l.W3),
            }).ToArray(),
        };
        half.Validate("random");
        AssertSameScores(half, RandomTasks.Pairs(20, config.VocabSize, seed: 9, minLen: 3, maxLen: 11));
    }

    static void AssertSameScores(LlamaWeights resident, PromptTask task)
    {
        foreach (var method in new[] { AttributionMethod.RelP, AttributionMethod.AtP })
        {
            var options = new AttributionOptions { Method = method, BatchSize = 4, Sites = Sites };
            NodeScores got, want;
            using (var model = new Llama(resident, CpuBackend.Instance)) got = Attributor.Score(model, task, options);
            using (var model = new Llama(resident.WidenedToFp32(), CpuBackend.Instance)) want = Attributor.Score(model, task, options);
            foreach (var site in Sites)
                for (int l = 0; l < resident.Config.Layers; l++)
                {
                    float[] g = got.Get(site, l), e = want.Get(site, l);
                    Assert.Equal(e.Length, g.Length);
                    Assert.Contains(e, x => x != 0f);   // a comparison of all-zero scores would prove nothing
                    for (int i = 0; i < e.Length; i++)
                        if (BitConverter.SingleToInt32Bits(g[i]) != BitConverter.SingleToInt32Bits(e[i]))
                            Assert.Fail($"{method} {site.Name()} layer {l} [{i}]: {g[i]} with 16-bit weights, {e[i]} widened");
                }
        }
    }
}
