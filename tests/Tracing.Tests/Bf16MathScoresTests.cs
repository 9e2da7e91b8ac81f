using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using Xunit;
using Xunit.Abstractions;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// Whole attribution passes in the bf16 CPU math mode (<see cref="CpuBackend.Bf16Math"/>: each product's activation
/// operand rounded to bf16, fp32 sums) against the default fp32 mode on the same bf16 weights: the bundled model
/// converted to bf16, and one layer at the Llama-3.2-1B widths. Stated tolerance, per site and layer: the largest
/// score difference at most <see cref="Tolerance"/> of that site-layer's largest score, the CUDA bf16 mode's bound
/// (measured here: up to about 5e-2, the test output lists each; an operand rounded to bf16 is 2⁻⁹ relative, but a
/// score multiplies a patch-minus-clean difference, which cancels), and the two modes must differ somewhere (else the
/// bf16 mode did not round). The products take the AVX-512 BF16 micro-kernel where the CPU has it (the output says
/// which), the portable path elsewhere.
/// </summary>
public class Bf16MathScoresTests(ITestOutputHelper output)
{
    /// <summary>The project's bf16 tolerance, as for the CUDA bf16 mode (ReducedPrecisionTests, bench GpuCheck): the same arithmetic.</summary>
    const double Tolerance = 8e-2;
    static readonly NodeSite[] Sites = [NodeSite.Resid, NodeSite.Attn, NodeSite.MlpOut, NodeSite.MlpAct];

    [Fact]
    public void BundledModelInBf16MathScoresNearFp32Math()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"nt-bf16math-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            HfFolderWriter.Write(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, dir, null, FloatEncoding.BF16);
            var weights = HfFolderFormat.Load(dir);
            // Prompts of 10-16 tokens in batches of 4: 40-64 rows, so the products take the packed (instruction) path.
            var task = RandomTasks.Pairs(8, weights.Config.VocabSize, seed: 5, minLen: 10, maxLen: 16);
            foreach (var method in new[] { AttributionMethod.RelP, AttributionMethod.AtP })
                AssertNear(weights, task, new AttributionOptions { Method = method, BatchSize = 4, Sites = Sites });
        }
        finally
        {
            GC.Collect(); GC.WaitForPendingFinalizers();   // the mapped weights hold the file open until finalized
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>One layer at the 1B widths and the benchmark's batch (8 pairs of 16 tokens: 128 rows), 4096-token vocabulary.</summary>
    [Fact]
    public void OneBShapeLayerInBf16MathScoresNearFp32Math()
    {
        var config = RandomLlama.SmallConfig() with { Dim = 2048, HiddenDim = 8192, Heads = 32, KvHeads = 8, VocabSize = 4096, Layers = 1, MaxSeqLen = 64 };
        var fp32 = RandomLlama.Create(config, seed: 7, scale: 0.02f);
        var weights = RandomLlama.MapMatrices(fp32, Bf16);
        var task = RandomTasks.Pairs(8, config.VocabSize, seed: 2, minLen: 16, maxLen: 16);
        AssertNear(weights, task, new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = 8, Sites = Sites });
    }

    static WeightData Bf16(WeightData m)
    {
        var a = m.Fp32!;
        var bits = new ushort[a.Length];
        for (int i = 0; i < a.Length; i++) bits[i] = (ushort)(BitConverter.SingleToUInt32Bits(a[i]) >> 16);
        return new WeightData(new HalfWeights(bits, HalfFormat.BFloat16));
    }

    void AssertNear(LlamaWeights weights, Tasks.PromptTask task, AttributionOptions options)
    {
        output.WriteLine($"bf16 math products: {(CpuBf16Library.Available ? "AVX-512 BF16 micro-kernel" : "portable path (" + CpuBf16Library.WhyNot + ")")}");
        NodeScores got, want;
        using (var model = new Llama(weights, CpuBackend.Bf16Math)) got = Attributor.Score(model, task, options);
        using (var model = new Llama(weights, CpuBackend.Instance)) want = Attributor.Score(model, task, options);
        bool anyDifferent = false;
        double worst = 0;
        foreach (var site in Sites)
            for (int l = 0; l < weights.Config.Layers; l++)
            {
                float[] g = got.Get(site, l), e = want.Get(site, l);
                Assert.Equal(e.Length, g.Length);
                double scale = e.Max(x => Math.Abs((double)x)), diff = 0;
                Assert.True(scale > 0, $"{site.Name()} layer {l}: all-zero scores prove nothing");
                for (int i = 0; i < e.Length; i++)
                {
                    Assert.True(float.IsFinite(g[i]), $"{options.Method} {site.Name()} layer {l} [{i}]: {g[i]} in bf16 math");
                    diff = Math.Max(diff, Math.Abs((double)g[i] - e[i]));
                    anyDifferent |= g[i] != e[i];
                }
                worst = Math.Max(worst, diff / scale);
                output.WriteLine($"{options.Method} {site.Name()} layer {l}: max |bf16 - fp32| = {diff / scale:E2} of the largest score");
                Assert.True(diff <= Tolerance * scale, $"{options.Method} {site.Name()} layer {l}: scores differ by {diff:G3}, more than {Tolerance} of the largest ({scale:G3})");
            }
        output.WriteLine($"{options.Method}: worst {worst:E2} (tolerance {Tolerance})");
        Assert.True(anyDifferent, "bf16 math gave the fp32 scores bit for bit: its products did not round");
    }
}
