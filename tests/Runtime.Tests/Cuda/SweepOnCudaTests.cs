using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;
using Xunit.Abstractions;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// A whole k-sweep on the CUDA backend (over the emulator) with the shortcuts, masks built on the device from the
/// ranking and k, the means and random controls sent once, the metric reduced on the device: faithfulness and
/// completeness of the top-k and the random control at every k point (0 and all included) equal the plain
/// mean-ablated sweep on the CPU (the reference) within 1e-5 of the metric's range, for every site; prompts of unequal
/// length (padding rows) in two example batches.
/// </summary>
public class SweepOnCudaTests(ITestOutputHelper output)
{
    public static TheoryData<NodeSite, double> Cases()
    {
        var d = new TheoryData<NodeSite, double>();
        foreach (var site in new[] { NodeSite.MlpAct, NodeSite.MlpOut, NodeSite.Attn, NodeSite.AttnZ, NodeSite.Resid })
            foreach (double sparse in new[] { 0.125, 1.0 })
                d.Add(site, sparse);
        return d;
    }

    /// <param name="sparseFraction">The planner's keep-k threshold: 1 puts every layer that keeps a unit on the site's
    /// keep-k kernels (native/kernels/sparse_mlp.cu), so they carry the whole sweep but for the constant layers.</param>
    [Theory]
    [MemberData(nameof(Cases))]
    public void Shortcut_sweep_on_the_cuda_backend_equals_the_plain_cpu_sweep(NodeSite site, double sparseFraction)
    {
        var weights = RandomLlama.Create(RandomLlama.SmallConfig(), seed: 9);
        var task = LastTokenPairs.Task(5, weights.Config.VocabSize, seed: 6);
        using var cpu = new Llama(weights, CpuBackend.Instance);
        using var backend = new CudaBackend(new HostKernelRuntime());
        using var gpu = new Llama(weights, backend);
        var scores = Attributor.Score(cpu, task, new AttributionOptions { Method = AttributionMethod.AtP, Sites = [site] });
        var means = SiteMeans.Compute(cpu, task.Pairs.Select(p => p.PatchIds!).ToList(), [site]);
        var ranking = new NodeRanking(scores, site);
        var ks = CircuitSweep.LogSpacedK(ranking.Count, 6);
        var circuits = ks.SelectMany(k => new[] { ranking.TopK(k), ranking.Random(k, CircuitSweep.RandomControlSeed(2, k)) }).ToList();
        var metric = Metric.EvaluationDefault(task);
        CircuitScore[] Score(Llama model, SweepPath path, List<string>? plans = null) =>
            new Faithfulness(new SiteMeanAblation(model, task, site, means, metric, ranking.Positions)
                { MasksPerForward = 3, ExamplesPerForward = 3, Path = path, RankingOrder = ranking.Order, PlanLog = plans is null ? null : plans.Add,
                  SparseFraction = sparseFraction }).Score(circuits);
        var plain = Score(cpu, SweepPath.Plain);
        var plans = new List<string>();
        var fast = Score(gpu, SweepPath.Shortcuts, plans);
        output.WriteLine(plans[0]);
        Assert.Equal(2, plans.Count);   // one shortcut sweep per example batch
        Assert.Contains("metric reduced on the backend", plans[0]);
        // The keep-k kernels run on the CUDA backend (attn_z has no keep-k product); at threshold 1 no layer that keeps a
        // unit is dense.
        foreach (var plan in plans)
            if (site == NodeSite.AttnZ) Assert.Contains(" 0 with the keep-k", plan);
            else
            {
                Assert.DoesNotContain(" 0 with the keep-k", plan);
                if (sparseFraction >= 1) Assert.Contains(" 0 dense;", plan);
            }
        // all, ∅, the top-k and their complements from the ranks, so too the random controls of k = 0 and all (empty, full);
        // the other random controls sent as bits, their complements those bits inverted.
        Assert.Contains($"{2 + 2 * ks.Length + 4} from the ranks and k, {ks.Length - 2} sent once as bits, {ks.Length - 2} those bits inverted", plans[0]);
        double worst = 0;
        for (int i = 0; i < circuits.Count; i++)
            foreach (var (a, b) in new[] { (plain[i].Faithfulness, fast[i].Faithfulness), (plain[i].Completeness, fast[i].Completeness) })
            {
                worst = Math.Max(worst, Math.Abs(a - b));
                Assert.True(Math.Abs(a - b) <= 1e-5, $"{site} circuit {i} (k {ks[i / 2]}, {(i % 2 == 0 ? "top" : "random")}): cpu plain {a:R}, cuda shortcuts {b:R}");
            }
        output.WriteLine($"max |cpu plain − cuda shortcuts| over {circuits.Count} circuits × 2 scores: {worst:E2}");
    }

    /// <summary>
    /// attn on the CUDA backend (over the emulator), 3 layers so a layer between the first and the top has rows on the
    /// all-means path: rows that keep no attn unit in the lower layers take their Q/K/V and (keeping none in the layer
    /// either) their MLP output from the path; against the plain CPU path.
    /// </summary>
    [Fact]
    public void Attn_all_means_path_on_the_cuda_backend_equals_the_plain_cpu_path()
    {
        var config = RandomLlama.SmallConfig() with { Layers = 3 };
        var weights = RandomLlama.Create(config, seed: 13);
        var task = LastTokenPairs.Task(5, config.VocabSize, seed: 3);
        using var cpu = new Llama(weights, CpuBackend.Instance);
        using var backend = new CudaBackend(new HostKernelRuntime());
        using var gpu = new Llama(weights, backend);
        var means = SiteMeans.Compute(cpu, task.Pairs.Select(p => p.PatchIds!).ToList(), [NodeSite.Attn]);
        const int positions = 5;
        var plain = new SiteMeanAblation(cpu, task, NodeSite.Attn, means, Metric.CleanMinusPatch, positions) { MasksPerForward = 2 };
        var plans = new List<string>();
        var fast = new SiteMeanAblation(gpu, task, NodeSite.Attn, means, Metric.CleanMinusPatch, positions)
            { MasksPerForward = 2, Path = SweepPath.Shortcuts, SparseFraction = 0, PlanLog = plans.Add };
        int W = plain.Grid.Width;
        var rng = new Random(7);
        var masks = new List<bool[]>();
        foreach (var (from, share, density) in new[] { (1, 1.0, 0.3), (2, 0.6, 0.2), (1, 0.5, 1.0), (2, 1.0, 0.05) })
        {
            var m = new bool[plain.NodeCount];
            var late = Enumerable.Range(0, positions).Select(_ => rng.NextDouble() < share).ToArray();
            for (int l = 0; l < config.Layers; l++)
                for (int p = 0; p < positions; p++)
                    for (int i = 0; i < W; i++)
                        m[(l * positions + p) * W + i] = (!late[p] || l >= from) && rng.NextDouble() < density;
            masks.Add(m);
        }
        masks.Add(new bool[plain.NodeCount]);
        var a = plain.Evaluate(masks);
        var b = fast.Evaluate(masks);
        output.WriteLine(plans.Single());
        Assert.DoesNotContain(": 0 with its Q/K/V", plans[0]);
        Assert.DoesNotContain(", 0 keeping none in the layer either", plans[0]);
        double range = a.Max() - a.Min();
        Assert.True(range > 1e-4, "the masks should move the metric");
        for (int i = 0; i < a.Length; i++)
            Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5 * range, $"mask {i}: cpu plain {a[i]:R}, cuda shortcuts {b[i]:R}, range {range:G4}");
    }
}
