using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;
using Xunit.Abstractions;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// The long-prompt bf16 tolerance: what a fair check of bf16 whole-pass scores on the emulator is. Comparing them with
/// fp32 scores of the fp32 weights (LongPromptPathTests) mixes two errors, the weights' rounding to bf16 and the bf16
/// arithmetic. Here every run gets the same bf16 weights, so the reference (the fp32 CPU backend, fp32 sums over the
/// widened bf16 values) differs from the GPU only in arithmetic, and the CPU's bf16 math mode (each product's
/// activation operand rounded to bf16, fp32 sums: the GPU's product arithmetic without its bf16 attention) says how
/// far bf16 products alone move these scores. The check: per site and layer, the GPU's largest error is within
/// <see cref="ErrorOverBf16Products"/> × the bf16-product error (plus 1e-2 of the largest score, so a site the products
/// barely move is not held to zero), the scores correlate (Pearson over all nodes, Spearman over the reference's top
/// 10%), and the top-10% nodes by |score| (the nodes a circuit is cut from) overlap the reference's. A bound on the
/// largest error alone is no fair check at long prompts: with the patch mid-prompt the patch-minus-clean differences are
/// small beside the activations they are computed from, and bf16 products alone move them by half the largest score. T = 70 (no multiple of the 32-key tile or 64-row block), GQA, patch token mid-prompt.
/// </summary>
public class LongPromptBf16ToleranceTests(ITestOutputHelper output)
{
    // Measured (T = 70, 2 layers × 10 site-layers): the GPU's largest error 0.075 .. 0.78 of the largest score, the bf16
    // products' 0.063 .. 0.51 (so most of the 0.79 seen against fp32 weights is bf16 arithmetic, not the weights'
    // rounding), ratio at most 4.2 (attn layer 1); Pearson 0.80 .. 0.9997 (bf16 products: 0.93 .. 0.9999); top-10%
    // overlap 0.81 .. 1 (bf16 products 0.83 .. 1); Spearman over the reference's top 10% 0.62 .. 0.99. The bounds keep
    // a margin under those; a kernel that masked, tiled or reduced wrongly moves scores by O(1) and fails all of them.
    /// <summary>The GPU's bf16 kernels round more operands than the CPU's bf16 products (attention's P, q, k, v, dz, the
    /// stored bf16 shadows): its largest error at most this many times theirs.</summary>
    const double ErrorOverBf16Products = 5;
    const double LowestPearson = 0.75, LowestSpearman = 0.5, LowestTopOverlap = 0.75;

    [Fact]
    public void Bf16_scores_on_the_emulator_match_fp32_math_on_the_same_bf16_weights_as_closely_as_bf16_products_allow()
    {
        const int T = 70;
        var c = new LlamaConfig
        {
            Dim = 64, HiddenDim = 224, Layers = 2, Heads = 4, KvHeads = 1, VocabSize = 96, MaxSeqLen = 128,
            RopeTheta = 500000f, RopeLayout = RopeLayout.RotateHalf, NormEps = 1e-5f,
        };
        var weights = Bf16Weights(RandomLlama.Create(c, seed: 9));
        var rng = new Random(0);
        var clean = Enumerable.Range(0, T).Select(i => i == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
        var patch = (int[])clean.Clone();
        patch[T / 2] = (patch[T / 2] + 1) % (c.VocabSize - 3) + 3;
        var task = new PromptTask("long", [new PromptPair(1, clean, patch, 5, 7)]);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = NodeSites.All, BatchSize = 1 };

        NodeScores Score(IBackend backend) { using var m = new Llama(weights, backend); return Attributor.Score(m, task, options); }
        var reference = Score(CpuBackend.Instance);
        var products = Score(CpuBackend.Bf16Math);
        NodeScores gpu;
        using (var backend = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16)) gpu = Score(backend);

        var failures = new List<string>();
        foreach (var s in NodeSites.All)
            for (int l = 0; l < c.Layers; l++)
            {
                float[] r = reference.Get(s, l), p = products.Get(s, l), g = gpu.Get(s, l);
                double scale = r.Max(x => Math.Abs((double)x));
                Assert.True(scale > 0, $"{s} layer {l}: all zero");
                double gpuError = MaxDiff(g, r) / scale, productError = MaxDiff(p, r) / scale;
                int k = Math.Max(2, r.Length / 10);
                // Spearman over the reference's top 10% by |score|: below them the scores are at the rounding's noise
                // level (the positions before the patch token are exactly 0 in every run), and their order means nothing.
                int[] top = Enumerable.Range(0, r.Length).OrderByDescending(i => Math.Abs(r[i])).Take(k).ToArray();
                double pearson = Pearson(g, r), spearman = Pearson(Ranks(top.Select(i => g[i]).ToArray()), Ranks(top.Select(i => r[i]).ToArray())),
                    overlap = TopOverlap(g, r, k);
                output.WriteLine($"{s} layer {l}: max |gpu - fp32| {gpuError:F3}, max |cpu bf16 products - fp32| {productError:F3} (of the largest score); " +
                    $"gpu Pearson {pearson:F4}, top-10% Spearman {spearman:F4}, top-10% overlap {overlap:F3}; cpu bf16 Pearson {Pearson(p, r):F4}, top-10% Spearman {Pearson(Ranks(top.Select(i => p[i]).ToArray()), Ranks(top.Select(i => r[i]).ToArray())):F4}, top-10% overlap {TopOverlap(p, r, k):F3}");
                if (!(gpuError <= ErrorOverBf16Products * productError + 1e-2))
                    failures.Add($"{s} layer {l}: gpu error {gpuError:F3} over {ErrorOverBf16Products} × the bf16 products' {productError:F3} + 0.01");
                if (!(pearson >= LowestPearson)) failures.Add($"{s} layer {l}: Pearson {pearson:F4} under {LowestPearson}");
                if (!(spearman >= LowestSpearman)) failures.Add($"{s} layer {l}: top-10% Spearman {spearman:F4} under {LowestSpearman}");
                if (!(overlap >= LowestTopOverlap)) failures.Add($"{s} layer {l}: top-10% overlap {overlap:F3} under {LowestTopOverlap}");
            }
        Assert.True(failures.Count == 0, string.Join("; ", failures));
    }

    /// <summary>Every matrix rounded to bf16 (to nearest even), the norm gains kept: the weights every run of the test shares.</summary>
    static LlamaWeights Bf16Weights(LlamaWeights w)
    {
        static WeightData Round(WeightData m)
        {
            var a = m.Fp32!;
            var bits = new ushort[a.Length];
            for (int i = 0; i < a.Length; i++)
            {
                uint u = BitConverter.SingleToUInt32Bits(a[i]);
                bits[i] = (ushort)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
            }
            return new WeightData(new HalfWeights(bits, HalfFormat.BFloat16));
        }
        return new LlamaWeights
        {
            Config = w.Config, TokenEmbedding = Round(w.TokenEmbedding), FinalNorm = w.FinalNorm, Classifier = Round(w.Classifier),
            Layers = w.Layers.Select(l => new LayerWeights
            {
                AttnNorm = l.AttnNorm, Wq = Round(l.Wq), Wk = Round(l.Wk), Wv = Round(l.Wv), Wo = Round(l.Wo),
                FfnNorm = l.FfnNorm, W1 = Round(l.W1), W2 = Round(l.W2), W3 = Round(l.W3),
            }).ToArray(),
        };
    }

    static double MaxDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();

    static double Pearson(IReadOnlyList<double> a, IReadOnlyList<double> b)
    {
        double ma = a.Average(), mb = b.Average(), ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Count; i++) { ab += (a[i] - ma) * (b[i] - mb); aa += (a[i] - ma) * (a[i] - ma); bb += (b[i] - mb) * (b[i] - mb); }
        return ab / Math.Sqrt(aa * bb);
    }

    static double Pearson(float[] a, float[] b) => Pearson(a.Select(x => (double)x).ToArray(), b.Select(x => (double)x).ToArray());

    /// <summary>Each value's rank (ties averaged), for Spearman's correlation.</summary>
    static double[] Ranks(float[] a)
    {
        var order = Enumerable.Range(0, a.Length).OrderBy(i => a[i]).ToArray();
        var ranks = new double[a.Length];
        for (int i = 0; i < order.Length;)
        {
            int j = i;
            while (j + 1 < order.Length && a[order[j + 1]] == a[order[i]]) j++;
            for (int k = i; k <= j; k++) ranks[order[k]] = (i + j) / 2.0;
            i = j + 1;
        }
        return ranks;
    }

    /// <summary>The share of <paramref name="reference"/>'s top <paramref name="k"/> nodes by |score| that are in <paramref name="got"/>'s top k.</summary>
    static double TopOverlap(float[] got, float[] reference, int k)
    {
        static HashSet<int> Top(float[] a, int k) => Enumerable.Range(0, a.Length).OrderByDescending(i => Math.Abs(a[i])).Take(k).ToHashSet();
        var top = Top(got, k);
        return Top(reference, k).Count(top.Contains) / (double)k;
    }
}
