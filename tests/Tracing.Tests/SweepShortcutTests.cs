using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using Xunit.Abstractions;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// The sweep shortcuts (<see cref="MeanAblationSweep"/>: shared prefix, keep-k MLP) against the plain mean-ablated
/// forward, the reference: every k point (0 and all included), the random control, every site, AtP and RelP, on the
/// bundled model and a wide random one, prompts of different lengths (padding rows). Scores are fractions of the
/// metric's range, so an absolute 1e-5 on them is 1e-5 relative to the range.
/// </summary>
public class SweepShortcutTests(ITestOutputHelper output)
{
    static readonly Lazy<Llama> Bundled = new(() => new Llama(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, CpuBackend.Instance));
    static readonly Lazy<Llama> Wide = new(() => new Llama(RandomLlama.Create(new LlamaConfig
    {
        Dim = 48, HiddenDim = 384, Layers = 3, Heads = 4, KvHeads = 2, VocabSize = 40, MaxSeqLen = 64, RopeLayout = RopeLayout.Interleaved,
    }, seed: 31), CpuBackend.Instance));

    public static TheoryData<bool, NodeSite, AttributionMethod> Cases()
    {
        var d = new TheoryData<bool, NodeSite, AttributionMethod>();
        foreach (bool bundled in new[] { true, false })
            foreach (var site in new[] { NodeSite.MlpAct, NodeSite.MlpOut, NodeSite.Attn, NodeSite.AttnZ, NodeSite.Resid })
                foreach (var method in new[] { AttributionMethod.AtP, AttributionMethod.RelP })
                    d.Add(bundled, site, method);
        return d;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Shortcut_sweep_equals_the_plain_sweep(bool bundled, NodeSite site, AttributionMethod method)
    {
        var model = bundled ? Bundled.Value : Wide.Value;
        var task = RandomTasks.Pairs(5, model.Config.VocabSize, seed: 12, minLen: 4, maxLen: 9);
        var scores = Attributor.Score(model, task, new AttributionOptions { Method = method, Sites = [site] });
        var means = SiteMeans.Compute(model, task.Pairs.Select(p => p.PatchIds!).ToList(), [site]);
        int total = new NodeRanking(scores, site).Count;
        var ks = CircuitSweep.LogSpacedK(total, 10);
        Assert.Contains(0, ks);
        Assert.Contains(total, ks);
        var plans = new List<string>();
        var plain = CircuitSweep.Run(model, scores, site, method.Name(), task, means, ks, masksPerForward: 4, seed: 3);
        var fast = CircuitSweep.Run(model, scores, site, method.Name(), task, means, ks, masksPerForward: 4, seed: 3,
            path: SweepPath.Shortcuts, planLog: plans.Add);
        output.WriteLine(plans.Single());
        double worst = 0;
        for (int i = 0; i < plain.Count; i++)
        {
            var (a, b) = (plain[i], fast[i]);
            Assert.Equal(a.K, b.K);
            foreach (var (x, y) in new[] { (a.Faithfulness, b.Faithfulness), (a.Completeness, b.Completeness),
                         (a.RandomFaithfulness, b.RandomFaithfulness), (a.RandomCompleteness, b.RandomCompleteness) })
            {
                worst = Math.Max(worst, Math.Abs(x - y));
                Assert.True(Math.Abs(x - y) <= 1e-5, $"k {a.K}: plain {x:R}, shortcuts {y:R}");
            }
        }
        output.WriteLine($"max |plain − shortcuts| over {plain.Count} k points × 4 scores: {worst:E2}");
        // The shortcuts must actually have been taken: some forward starts above layer 0 (the complement of a small
        // circuit leaves the lower layers clean), and on mlp_act some layer ran the keep-k MLP.
        Assert.DoesNotContain("start layer (forwards) L0×" + (2 + 4 * ks.Length + 3) / 4 + ";", plans[0]);
        if (site != NodeSite.AttnZ) Assert.DoesNotContain(" 0 with the keep-k", plans[0]);
    }

    public static TheoryData<bool, NodeSite> SiteCases()
    {
        var d = new TheoryData<bool, NodeSite>();
        foreach (bool bundled in new[] { true, false })
            foreach (var site in new[] { NodeSite.MlpAct, NodeSite.MlpOut, NodeSite.Attn, NodeSite.AttnZ, NodeSite.Resid })
                d.Add(bundled, site);
        return d;
    }

    /// <summary>
    /// Every layer forced onto the site's shortcut (threshold 1: the keep-k product where a unit is kept, the constant
    /// layer where none is), random masks of every density (the first keeps nothing), against the plain path.
    /// </summary>
    [Theory]
    [MemberData(nameof(SiteCases))]
    public void Keep_k_everywhere_equals_the_plain_forward(bool bundled, NodeSite site)
    {
        var model = bundled ? Bundled.Value : Wide.Value;
        var task = RandomTasks.Pairs(4, model.Config.VocabSize, seed: 8, minLen: 3, maxLen: 8);
        var means = SiteMeans.Compute(model, task.Pairs.Select(p => p.PatchIds!).ToList(), [site]);
        const int positions = 6;   // fewer than the longest prompt: positions 6.. are ablated in every mask
        var plain = new SiteMeanAblation(model, task, site, means, Metric.CleanMinusPatch, positions) { MasksPerForward = 3 };
        var plans = new List<string>();
        var fast = new SiteMeanAblation(model, task, site, means, Metric.CleanMinusPatch, positions)
            { MasksPerForward = 1, Path = SweepPath.Shortcuts, SparseFraction = 1, PlanLog = plans.Add };   // one mask per forward: its own constant layers
        var rng = new Random(5);
        var masks = Enumerable.Range(0, 8).Select(m => Enumerable.Range(0, plain.NodeCount).Select(_ => rng.NextDouble() < m / 7.0 * 0.3).ToArray()).ToList();
        // Two masks that keep units in the top layer only: a constant lower layer (resid: the forward starts from its means).
        int perLayer = plain.NodeCount / model.Config.Layers;
        masks.Add(Enumerable.Range(0, plain.NodeCount).Select(i => i >= (model.Config.Layers - 1) * perLayer && i % 3 == 0).ToArray());
        masks.Add(Enumerable.Range(0, plain.NodeCount).Select(i => i >= (model.Config.Layers - 1) * perLayer && i % 5 == 1).ToArray());
        var a = plain.Evaluate(masks);
        var b = fast.Evaluate(masks);
        output.WriteLine(plans.Single());
        if (site == NodeSite.AttnZ) Assert.Contains(" 0 with the keep-k", plans[0]);   // attn_z has no keep-k product
        else Assert.DoesNotContain(" 0 with the keep-k", plans[0]);
        if (site is not (NodeSite.MlpAct or NodeSite.Resid)) Assert.DoesNotContain(" 0 constant", plans[0]);   // resid: below the start
        if (site == NodeSite.Resid) Assert.Contains("from the means of a constant resid layer", plans[0]);
        if (site != NodeSite.AttnZ) Assert.Contains(" 0 dense;", plans[0]);
        double range = a.Max() - a.Min();
        Assert.True(range > 1e-3, "the masks should move the metric");
        for (int i = 0; i < a.Length; i++)
            Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5 * range, $"mask {i}: plain {a[i]:R}, shortcuts {b[i]:R}, range {range:G4}");
    }

    /// <summary>
    /// Masks that ablate some units at the last few positions only, from some layer up: the rows before stay clean, so
    /// the dense layers (keep-k off) run their MLP on the changed rows alone and take the clean MLP output for the rest;
    /// against the plain path, every site.
    /// </summary>
    [Theory]
    [MemberData(nameof(SiteCases))]
    public void Dense_layers_recompute_only_the_rows_a_mask_changes(bool bundled, NodeSite site)
    {
        var model = bundled ? Bundled.Value : Wide.Value;
        int L = model.Config.Layers;
        var task = RandomTasks.Pairs(4, model.Config.VocabSize, seed: 8, minLen: 5, maxLen: 9);
        var means = SiteMeans.Compute(model, task.Pairs.Select(p => p.PatchIds!).ToList(), [site]);
        const int positions = 9;   // every position covered: a mask changes only what it ablates
        var plain = new SiteMeanAblation(model, task, site, means, Metric.CleanMinusPatch, positions) { MasksPerForward = 3 };
        var plans = new List<string>();
        var fast = new SiteMeanAblation(model, task, site, means, Metric.CleanMinusPatch, positions)
            { MasksPerForward = 3, Path = SweepPath.Shortcuts, SparseFraction = 0, PlanLog = plans.Add };
        int W = plain.Grid.Width;
        var rng = new Random(4);
        var masks = new List<bool[]>();
        foreach (var (last, from, density) in new[] { (1, 0, 0.05), (2, 0, 0.3), (3, 1, 0.5), (4, 0, 0.01), (1, L - 1, 0.2), (2, 1, 1.0), (5, 0, 0.1) })
        {
            var m = new bool[plain.NodeCount];
            for (int l = 0; l < L; l++)
                for (int p = 0; p < positions; p++)
                    for (int i = 0; i < W; i++)
                        m[(l * positions + p) * W + i] = !(l >= from && p < last && rng.NextDouble() < density);
            masks.Add(m);
        }
        masks.Add(Enumerable.Repeat(true, plain.NodeCount).ToArray());
        var a = plain.Evaluate(masks);
        var b = fast.Evaluate(masks);
        output.WriteLine(plans.Single());
        Assert.Contains("with the MLP on the changed rows alone", plans[0]);
        Assert.Contains("with Q/K/V on the changed rows alone", plans[0]);
        if (site == NodeSite.MlpAct) Assert.Contains("changed rows with the clean activations", plans[0]);
        double range = a.Max() - a.Min();
        Assert.True(range > 1e-4, "the masks should move the metric");
        for (int i = 0; i < a.Length; i++)
            Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5 * range, $"mask {i}: plain {a[i]:R}, shortcuts {b[i]:R}, range {range:G4}");
    }

    /// <summary>
    /// attn masks under which rows keep no attn unit in the lower layers (so they are on the all-means path: their
    /// input, Q/K/V and, where they keep none in the layer either, MLP output come from it) and keep units higher up,
    /// beside rows that keep some everywhere; keep-k off and on; against the plain path.
    /// </summary>
    [Theory]
    [InlineData(true, 0.0)]
    [InlineData(false, 0.0)]
    [InlineData(true, 1.0)]
    [InlineData(false, 1.0)]
    public void Attn_rows_that_kept_no_unit_below_take_the_all_means_path(bool bundled, double sparseFraction)
    {
        var model = bundled ? Bundled.Value : Wide.Value;
        int L = model.Config.Layers;
        var task = RandomTasks.Pairs(4, model.Config.VocabSize, seed: 21, minLen: 4, maxLen: 9);
        var means = SiteMeans.Compute(model, task.Pairs.Select(p => p.PatchIds!).ToList(), [NodeSite.Attn]);
        const int positions = 9;
        var plain = new SiteMeanAblation(model, task, NodeSite.Attn, means, Metric.CleanMinusPatch, positions) { MasksPerForward = 3 };
        var plans = new List<string>();
        var fast = new SiteMeanAblation(model, task, NodeSite.Attn, means, Metric.CleanMinusPatch, positions)
            { MasksPerForward = 3, Path = SweepPath.Shortcuts, SparseFraction = sparseFraction, PlanLog = plans.Add };
        int W = plain.Grid.Width;
        var rng = new Random(11);
        var masks = new List<bool[]>();
        // (the first layer a row may keep a unit in, the share of positions whose rows keep nothing below it, density above)
        foreach (var (from, share, density) in new[] { (1, 1.0, 0.2), (2, 0.5, 0.05), (L - 1, 1.0, 0.5), (1, 0.3, 1.0), (2, 1.0, 0.01), (L - 1, 0.7, 0.1) })
        {
            var m = new bool[plain.NodeCount];
            var late = Enumerable.Range(0, positions).Select(_ => rng.NextDouble() < share).ToArray();
            for (int l = 0; l < L; l++)
                for (int p = 0; p < positions; p++)
                    for (int i = 0; i < W; i++)
                        m[(l * positions + p) * W + i] = (!late[p] || l >= from) && rng.NextDouble() < density;
            masks.Add(m);
        }
        masks.Add(new bool[plain.NodeCount]);
        masks.Add(Enumerable.Repeat(true, plain.NodeCount).ToArray());
        var a = plain.Evaluate(masks);
        var b = fast.Evaluate(masks);
        output.WriteLine(plans.Single());
        Assert.Contains("on the all-means path", plans[0]);
        Assert.DoesNotContain(": 0 with its Q/K/V", plans[0]);
        Assert.DoesNotContain(", 0 keeping none in the layer either", plans[0]);
        double range = a.Max() - a.Min();
        Assert.True(range > 1e-4, "the masks should move the metric");
        for (int i = 0; i < a.Length; i++)
            Assert.True(Math.Abs(a[i] - b[i]) <= 1e-5 * range, $"mask {i}: plain {a[i]:R}, shortcuts {b[i]:R}, range {range:G4}");
    }

    [Fact]
    public void First_changed_layer_is_the_lowest_layer_with_an_ablated_unit()
    {
        var model = Wide.Value;
        var c = model.Config;
        var prompts = new List<int[]> { new[] { 1, 2, 3 }, new[] { 4, 5 } };
        var means = Enumerable.Range(0, c.Layers).Select(_ => new float[3 * c.HiddenDim]).ToList();
        using var masks = new MeanAblationMasks(model, NodeSite.MlpAct, means, meanPositions: 3, maskPositions: 4, masks: []);
        using var sweep = new MeanAblationSweep(masks, prompts);
        int perLayer = 4 * c.HiddenDim;
        var all = Enumerable.Repeat(true, c.Layers * perLayer).ToArray();
        Assert.Equal(c.Layers, sweep.FirstChangedLayer(all));
        var m = (bool[])all.Clone();
        m[perLayer + 2 * c.HiddenDim + 7] = false;   // layer 1, position 2 (the 3-token prompt has it)
        Assert.Equal(1, sweep.FirstChangedLayer(m));
        m = (bool[])all.Clone();
        m[3 * c.HiddenDim] = false;   // layer 0, position 3: no prompt is that long, so nothing changes
        Assert.Equal(c.Layers, sweep.FirstChangedLayer(m));
        using var twoPositions = new MeanAblationMasks(model, NodeSite.MlpAct, means, meanPositions: 3, maskPositions: 2, masks: []);
        using var shortMasks = new MeanAblationSweep(twoPositions, prompts);
        Assert.Equal(0, shortMasks.FirstChangedLayer(new bool[c.Layers * 2 * c.HiddenDim].Select(_ => true).ToArray()));  // position 2 is uncovered
    }
}
