using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using Xunit;
using Xunit.Abstractions;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// The long-prompt bf16 tolerance: what a bf16 whole pass (the CUDA backend's bf16 mode on the emulator: bf16 products
/// and the bf16 streaming attention) must keep of the fp32 scores at T = 70 (off the kernels' 32-key and 64-row
/// tiles, GQA; the run of <see cref="LongPromptPathTests"/>). With the patch token mid-prompt a score is an activation
/// difference that nearly cancels times a gradient, and every bf16 product rounds its operands at 2⁻⁹ relative, so
/// the largest score difference is a large part of the largest score (measured here per site: 0.04 .. 0.36; per site
/// and layer up to 0.79): the short prompts' "8e-2 of the largest" bound cannot hold. Nor is a rank correlation over
/// all nodes fair: the many near-zero scores are ordered by noise, so even the CPU's own bf16 arithmetic against its
/// fp32 arithmetic ranks |score| at Spearman 0.90 .. 0.99 (printed). Tracing uses the top of the order (a circuit
/// is the top-k nodes of a site by |score|), so the check is on that, per site over all layers, against three
/// references: the fp32 CPU on the same bf16 weights, the CPU's bf16 math on them (<see cref="CpuBackend.Bf16Math"/>:
/// every product's activation operand rounded to bf16, fp32 attention), and the fp32 CPU on the unrounded fp32
/// weights (what a user compares with). Stated tolerance, against each: the top 1% by |score| shares at least
/// <see cref="MinTop1Overlap"/> of its nodes with the reference's top 1%, the top 5% at least
/// <see cref="MinTop5Overlap"/>, and the scores correlate at least <see cref="MinCorrelation"/>. The CPU's bf16
/// against its fp32 arithmetic (the noise floor of bf16 products alone) is printed beside them.
/// </summary>
public class LongPromptBf16ToleranceTests(ITestOutputHelper output)
{
    /// <summary>Least share of the reference's top 1% of a site's nodes (by |score|) that the bf16 run's top 1% holds
    /// (measured, seeds 9 and 3: 0.84 .. 0.99; the floor of the CPU's bf16 against its fp32 arithmetic: 0.91 .. 1).</summary>
    public const double MinTop1Overlap = 0.75;
    /// <summary>As <see cref="MinTop1Overlap"/> for the top 5% (measured 0.80 .. 0.99; floor 0.82 .. 0.99).</summary>
    public const double MinTop5Overlap = 0.7;
    /// <summary>Least Pearson correlation of a site's scores (all layers) with the reference (measured 0.964 .. 0.999).</summary>
    public const double MinCorrelation = 0.93;

    [Theory]
    [InlineData(9)]
    [InlineData(3)]
    public void Bf16_scores_at_70_tokens_rank_the_nodes_as_fp32_does(int seed)
    {
        const int T = 70;
        var c = LongPromptPathTests.Narrow8B with { Dim = 64, HiddenDim = 224, Layers = 2, VocabSize = 96, MaxSeqLen = 128 };   // head dim 16
        // The weights in bf16, so every backend multiplies the same values (the GPU's bf16 mode stores them unrounded).
        var original = RandomLlama.Create(c, seed);
        var weights = Bf16Weights(original);
        var task = new Tracing.Tasks.PromptTask("long", [LongPromptPathTests.GpuBenchPair(c, T)]);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = NodeSites.All, BatchSize = 1 };
        NodeScores gpu, fp32, bf16Math, fp32Original;
        using (var backend = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16))
        using (var model = new Llama(weights, backend)) gpu = Attributor.Score(model, task, options);
        using (var model = new Llama(weights, CpuBackend.Instance)) fp32 = Attributor.Score(model, task, options);
        using (var model = new Llama(weights, CpuBackend.Bf16Math)) bf16Math = Attributor.Score(model, task, options);
        using (var model = new Llama(original, CpuBackend.Instance)) fp32Original = Attributor.Score(model, task, options);

        var failures = new List<string>();
        foreach (var s in NodeSites.All)
        {
            float[] Site(NodeScores n) => Enumerable.Range(0, c.Layers).SelectMany(l => n.Get(s, l)).ToArray();
            float[] g = Site(gpu), r32 = Site(fp32), r16 = Site(bf16Math), rOriginal = Site(fp32Original);
            Assert.True(r32.Any(x => x != 0), $"{s}: all zero");
            foreach (var (name, a, r, asserted) in new[]
                     {
                         ("bf16 gpu vs fp32 cpu", g, r32, true), ("bf16 gpu vs bf16-math cpu", g, r16, true),
                         ("bf16 gpu vs fp32 cpu on the unrounded weights", g, rOriginal, true), ("bf16-math cpu vs fp32 cpu (floor)", r16, r32, false),
                     })
            {
                double correlation = Pearson(a, r), maxDiff = a.Zip(r).Max(p => Math.Abs(p.First - p.Second)) / r.Max(Math.Abs);
                double rank = Spearman(a.Select(Math.Abs).ToArray(), r.Select(Math.Abs).ToArray());
                double top1 = TopOverlap(a, r, Math.Max(1, a.Length / 100)), top5 = TopOverlap(a, r, Math.Max(1, a.Length / 20));
                output.WriteLine($"seed {seed} {s,-7} {name}: largest difference {maxDiff:F3} of the largest score, Pearson {correlation:F4}, " +
                    $"Spearman |score| {rank:F4}, top-1% overlap {top1:F3}, top-5% {top5:F3} ({a.Length} nodes)");
                if (!asserted) continue;
                if (top1 < MinTop1Overlap) failures.Add($"{s} {name}: top-1% overlap {top1:F3} < {MinTop1Overlap}");
                if (correlation < MinCorrelation) failures.Add($"{s} {name}: correlation {correlation:F4} < {MinCorrelation}");
                if (top5 < MinTop5Overlap) failures.Add($"{s} {name}: top-5% overlap {top5:F3} < {MinTop5Overlap}");
            }
            // The check can fail: bf16 rounding did change the scores (else the GPU run was not in bf16).
            Assert.True(g.Zip(r32).Any(p => p.First != p.Second), $"{s}: bf16 scores equal the fp32 ones");
        }
        Assert.True(failures.Count == 0, string.Join("; ", failures));
    }

    static LlamaWeights Bf16Weights(LlamaWeights w) => RandomLlama.MapMatrices(w, m =>
        new WeightData(new HalfWeights(m.Fp32!.Select(MmaSelfTests.Bf16).ToArray(), HalfFormat.BFloat16)));

    /// <summary>The share of <paramref name="reference"/>'s top <paramref name="k"/> by |value| in <paramref name="a"/>'s top k.</summary>
    static double TopOverlap(float[] a, float[] reference, int k)
    {
        static HashSet<int> Top(float[] x, int k) => Enumerable.Range(0, x.Length).OrderByDescending(i => Math.Abs(x[i])).Take(k).ToHashSet();
        var want = Top(reference, k);
        return Top(a, k).Count(want.Contains) / (double)k;
    }

    static double Pearson(float[] a, float[] b) => Pearson(a.Select(x => (double)x).ToArray(), b.Select(x => (double)x).ToArray());

    static double Pearson(double[] a, double[] b)
    {
        double ma = a.Average(), mb = b.Average(), ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++) { ab += (a[i] - ma) * (b[i] - mb); aa += (a[i] - ma) * (a[i] - ma); bb += (b[i] - mb) * (b[i] - mb); }
        return ab / Math.Sqrt(aa * bb);
    }

    /// <summary>Pearson correlation of the ranks (ties take their mean rank).</summary>
    static double Spearman(float[] a, float[] b) => Pearson(Ranks(a), Ranks(b));

    static double[] Ranks(float[] x)
    {
        int[] order = Enumerable.Range(0, x.Length).OrderBy(i => x[i]).ToArray();
        var ranks = new double[x.Length];
        for (int i = 0; i < order.Length;)
        {
            int j = i;
            while (j + 1 < order.Length && x[order[j + 1]] == x[order[i]]) j++;
            for (int q = i; q <= j; q++) ranks[order[q]] = (i + j) / 2.0;
            i = j + 1;
        }
        return ranks;
    }
}
