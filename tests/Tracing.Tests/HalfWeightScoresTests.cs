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

    /// <summary>
    /// Load validation scans every weight, which makes the whole mapped file resident; the token embedding (a table a
    /// run reads a few rows of) is handed back afterwards. Reading all of it again then brings its pages back into this
    /// process (file-resident memory grows by about its size), where without the release it would already be resident.
    /// </summary>
    [Fact]
    public void ValidatedEmbeddingLeavesTheResidentSet()
    {
        if (!OperatingSystem.IsLinux()) { Assert.Fail("needs /proc/self/status (Linux): not run here"); return; }
        string dir = Path.Combine(Path.GetTempPath(), $"nt-bf16-rss-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            var config = RandomLlama.SmallConfig() with { Dim = 256, HiddenDim = 64, Heads = 4, KvHeads = 2, VocabSize = 65536, Layers = 1 };
            HfFolderWriter.Write(RandomLlama.Create(config, seed: 3), dir, null, FloatEncoding.BF16);
            var loaded = HfFolderFormat.Load(dir);
            var embedding = loaded.TokenEmbedding.Half!;
            long bytes = 2 * embedding.Length;
            double before = RssFileBytes();
            long nonzero = 0;
            for (long i = 0; i < embedding.Length; i += 2048) if (embedding[i] != 0f) nonzero++;   // one value per 4 KiB page
            double grown = RssFileBytes() - before;
            Assert.True(nonzero > 0);
            Assert.True(grown > 0.5 * bytes, $"reading the {bytes >> 20} MiB embedding after load grew file-resident memory by {grown / (1 << 20):F1} MiB: it stayed resident after validation");
            GC.KeepAlive(loaded);
        }
        finally
        {
            GC.Collect(); GC.WaitForPendingFinalizers();
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    static double RssFileBytes()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("RssFile:")) return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        throw new InvalidOperationException("no RssFile line in /proc/self/status");
    }

    [Theory]
    [InlineData(nameof(HalfFormat.BFloat16))]
    [InlineData(nameof(HalfFormat.Float16))]
    public void AwkwardRandomModelScoresAsItsWidenedCopy(string formatName) // by name: HalfFormat is internal
    {
        var format = Enum.Parse<HalfFormat>(formatName);
        // Widths off every vector and tile multiple; head size 6, three query heads per KV head.
        var config = RandomLlama.SmallConfig() with { Dim = 18, HiddenDim = 41, Heads = 3, KvHeads = 1, VocabSize = 37, Layers = 3 };
        var half = ToHalf(RandomLlama.Create(config, seed: 5), format);
        half.Validate("random");
        AssertSameScores(half, RandomTasks.Pairs(20, config.VocabSize, seed: 9, minLen: 3, maxLen: 11));
    }

    /// <summary>
    /// The Llama-3.2-1B widths (dim 2048, hidden 8192, 32 heads over 8 KV heads) at the benchmark's batch (8 pairs of
    /// 16 tokens: 128 rows, 256 in the paired forward), so the products take the multi-core packed path over bf16 panels
    /// as at full size; one layer and a 4096-token vocabulary keep it to seconds and under 1 GB here.
    /// </summary>
    [Fact]
    public void OneBShapeLayerInBf16ScoresAsItsWidenedCopy()
    {
        var config = RandomLlama.SmallConfig() with { Dim = 2048, HiddenDim = 8192, Heads = 32, KvHeads = 8, VocabSize = 4096, Layers = 1, MaxSeqLen = 64 };
        var half = ToHalf(RandomLlama.Create(config, seed: 7, scale: 0.02f), HalfFormat.BFloat16);
        half.Validate("1B-shape layer");
        AssertSameScores(half, RandomTasks.Pairs(8, config.VocabSize, seed: 2, minLen: 16, maxLen: 16), batch: 8, methods: [AttributionMethod.RelP]);
    }

    /// <summary>Every matrix of <paramref name="w"/> (fp32) rounded to 16 bits (bf16 by truncation, f16 to nearest).</summary>
    static LlamaWeights ToHalf(LlamaWeights w, HalfFormat format)
    {
        WeightData H(WeightData m)
        {
            var a = m.Fp32!;
            var bits = new ushort[a.Length];
            for (int i = 0; i < a.Length; i++)
                bits[i] = format == HalfFormat.BFloat16 ? (ushort)(BitConverter.SingleToUInt32Bits(a[i]) >> 16) : BitConverter.HalfToUInt16Bits((Half)a[i]);
            return new WeightData(new HalfWeights(bits, format));
        }
        return RandomLlama.MapMatrices(w, H);
    }

    static void AssertSameScores(LlamaWeights resident, PromptTask task, int batch = 4, AttributionMethod[]? methods = null)
    {
        foreach (var method in methods ?? [AttributionMethod.RelP, AttributionMethod.AtP])
        {
            var options = new AttributionOptions { Method = method, BatchSize = batch, Sites = Sites };
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
