using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;
using Xunit.Abstractions;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// The GPU script's long-prompt run (<c>bench gpu-bench --long-prompt</c>: RelP, all sites, batch 1 × 8192 tokens,
/// bf16, the batch and checkpointing <see cref="MemoryPlan.FitAttribution"/> gives for the card's free memory) on the
/// CPU at a small width:
/// 1. its allocations at T = 8192 on the recording runtime (the GPU's memory pool over address space; nothing runs):
///    the plan chooses checkpointing for a free size between batch 1's stored and checkpointed plans, the run it
///    chooses stays under that free size, and the plan's non-weight items agree with the pool's high-water mark;
/// 2. its values on the emulator (bf16 tensor-core kernels), at a length that is no multiple of the kernels' 32-key
///    tile or 64-row block, with GQA: checkpointed scores equal the stored run's bit for bit (the recomputed layer
///    runs the same kernels on the same inputs), and they rank like the fp32 CPU backend's (see the test for why a
///    correlation and not the short prompts' tolerance);
/// 3. the means read back a group of layers at a time (how an 8192-token pass of all sites stays in one 80 GB card)
///    equal the one-gather means bit for bit.
/// </summary>
public class LongPromptPathTests(ITestOutputHelper output)
{
    // Llama-3.1-8B's proportions narrowed: GQA 4 (32 heads on 8 there), hidden 3.5 × dim, RotateHalf RoPE, θ 5e5.
    internal static readonly LlamaConfig Narrow8B = new()
    {
        Dim = 256, HiddenDim = 896, Layers = 4, Heads = 4, KvHeads = 1, VocabSize = 1024, MaxSeqLen = 8192,
        RopeTheta = 500000f, RopeLayout = RopeLayout.RotateHalf, NormEps = 1e-5f,
    };

    static PromptTask OnePair(LlamaConfig c, int t) => new("long", [GpuBenchPair(c, t)]);

    /// <summary>One pair as the GPU benchmark makes it: random tokens after BOS, one token changed mid-prompt.</summary>
    internal static PromptPair GpuBenchPair(LlamaConfig c, int t)
    {
        var rng = new Random(0);
        var clean = Enumerable.Range(0, t).Select(i => i == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
        var patch = (int[])clean.Clone();
        patch[t / 2] = (patch[t / 2] + 1) % (c.VocabSize - 3) + 3;
        return new PromptPair(1, clean, patch, 5, 7);
    }

    [Fact]
    public void At_8192_tokens_the_plan_checkpoints_to_fit_and_the_run_stays_under_the_free_memory()
    {
        const int T = 8192;
        var c = Narrow8B;
        MemoryPlan Plan(bool checkpoint) =>
            MemoryPlan.ForAttribution(c, 1, T, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, weightCopies: 1, checkpoint: checkpoint,
                cudaPrecision: GemmPrecision.Bf16);
        var stored = Plan(false);
        var checkpointed = Plan(true);
        Assert.True(checkpointed.TotalBytes < stored.TotalBytes, $"checkpointed {checkpointed.TotalBytes}, stored {stored.TotalBytes}");
        long free = (stored.TotalBytes + checkpointed.TotalBytes) / 2;
        var fit = MemoryPlan.FitAttribution(c, 1, T, NodeSites.All, AttributionMethod.RelP, true, cpu: false, free, "free on cuda:0");
        Assert.Equal((1, true), (fit.Batch, fit.Checkpoint));
        Assert.Null(fit.Refusal);
        Assert.Contains("activation checkpointing", fit.Note);

        var device = new RecordingDeviceRuntime { FreeBytes = free };
        using var model = Llama.WithUninitializedWeights(c, new CudaBackend(device, ownsDevice: false, GemmPrecision.Bf16));
        long weights = device.Pool.UsedBytes;
        device.Reset();
        var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = NodeSites.All, BatchSize = fit.Batch, CheckpointLayers = fit.Checkpoint };
        var scores = Attributor.Score(model, OnePair(c, T), options);
        Assert.Equal(T, scores.Positions);
        long peak = device.Pool.PeakUsedBytes;
        Assert.True(peak <= free, $"peak {MemoryPlan.Gib(peak)} over the free {MemoryPlan.Gib(free)}");
        // The plan's weight item counts the loaded precision's bytes; the pool holds bf16 matrices: compare the rest.
        long planned = checkpointed.TotalBytes - checkpointed.Items.Single(i => i.Item == "weights").Bytes;
        double ratio = planned / (double)(peak - weights);
        output.WriteLine($"T={T} checkpointed: pool peak {MemoryPlan.Gib(peak)} (weights {MemoryPlan.Gib(weights)}), plan without weights {MemoryPlan.Gib(planned)}, ratio {ratio:F3}");
        foreach (var (item, bytes) in checkpointed.Items) output.WriteLine($"  {item}: {MemoryPlan.Gib(bytes)}");
        Assert.InRange(ratio, 1.0, 1.25);
    }

    // (config, batch, T): the narrowed 8B shape at a long prompt, and 8B's own widths (2 layers) at the GPU benchmark's batch.
    public static TheoryData<string, int, int> StoredCases => new() { { "narrow", 1, 2048 }, { "8b", 8, 64 } };

    [Theory]
    [MemberData(nameof(StoredCases))]
    public void A_stored_bf16_run_peaks_near_its_plan_which_counts_q_k_v_gate_up_in_bf16(string shape, int batch, int T)
    {
        // Stored (not checkpointed): every layer of both forwards is held at the backward's start (the clean pass's
        // until the batch ends, the patch pass's too), with q, k, v, gate and up in bf16 (IBackend.StoreForBackward).
        var c = shape == "narrow" ? Narrow8B : Narrow8B with { Dim = 4096, HiddenDim = 14336, Layers = 2, Heads = 32, KvHeads = 8, VocabSize = 128256 };
        var plan = MemoryPlan.ForAttribution(c, batch, T, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, weightCopies: 1, cudaPrecision: GemmPrecision.Bf16);
        long rows = (long)batch * T, d = c.Dim, kv = c.KvDim, h = c.HiddenDim;
        long layerState = 4 * (7 * d + h + 2 + c.Heads) + 2 * (d + 2 * kv + 2 * h);   // fp32: normed ×2, z, attn, mid, mlp_out, out, act, rstd ×2, L
        Assert.Equal(2 * (rows * layerState * c.Layers + rows * d * 4) + batch * (c.VocabSize + d + 1) * 4L,
            plan.Items.Single(i => i.Item.StartsWith("forward passes", StringComparison.Ordinal)).Bytes);
        var fp32 = MemoryPlan.ForAttribution(c, batch, T, NodeSites.All, AttributionMethod.RelP, true, weightCopies: 1, cudaPrecision: GemmPrecision.Fp32);
        Assert.Equal(2 * (rows * 4 * (8 * d + 2 * kv + 3 * h + 2 + c.Heads) * c.Layers + rows * d * 4) + batch * (c.VocabSize + d + 1) * 4L,
            fp32.Items.Single(i => i.Item.StartsWith("forward passes", StringComparison.Ordinal)).Bytes);
        var device = new RecordingDeviceRuntime();
        using var model = Llama.WithUninitializedWeights(c, new CudaBackend(device, ownsDevice: false, GemmPrecision.Bf16));
        long weights = device.Pool.UsedBytes;
        device.Reset();
        var task = new PromptTask("stored", Enumerable.Range(0, batch).Select(_ => GpuBenchPair(c, T)).ToArray());
        Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.RelP, Sites = NodeSites.All, BatchSize = batch });
        long peak = device.Pool.PeakUsedBytes;
        // The pool holds the tensors: compared without the weights (the pool rounds them to size classes) and without the
        // runtime allowance (on a GPU the CUDA context and cuBLAS workspace, outside the pool): the plan at most 10% under the peak, 20% over.
        long planned = plan.TotalBytes - plan.Items.Single(i => i.Item == "weights").Bytes - plan.Items.Single(i => i.Item == "runtime").Bytes;
        double ratio = planned / (double)(peak - weights);
        output.WriteLine($"{shape} {batch}x{T} stored: pool peak {MemoryPlan.Gib(peak)} (weights {MemoryPlan.Gib(weights)}), plan without weights and runtime {MemoryPlan.Gib(planned)}, ratio {ratio:F3}");
        foreach (var (item, bytes) in plan.Items) output.WriteLine($"  {item}: {MemoryPlan.Gib(bytes)}");
        // 0.8 before the stacked product output was counted (8b 8x64: 0.82), 0.96 with it; 1.11 narrow.
        Assert.InRange(ratio, 0.9, 1.2);
    }

    [Fact]
    public void On_the_emulator_checkpointed_bf16_scores_equal_stored_ones_at_a_length_off_the_tiles_with_gqa()
    {
        const int T = 70;   // 2 × 32 + 6 keys, 64 + 6 rows
        var c = Narrow8B with { Dim = 64, HiddenDim = 224, Layers = 2, VocabSize = 96, MaxSeqLen = 128 };   // head dim 16: the bf16 kernels' smallest
        var weights = RandomLlama.Create(c, seed: 9);
        var task = OnePair(c, T);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = NodeSites.All, BatchSize = 1 };
        using var backend = new CudaBackend(new HostKernelRuntime(), precision: GemmPrecision.Bf16);
        using var model = new Llama(weights, backend);
        var stored = Attributor.Score(model, task, options);
        var checkpointed = Attributor.Score(model, task, options with { CheckpointLayers = true });
        using var cpuModel = new Llama(weights, CpuBackend.Instance);
        var cpu = Attributor.Score(cpuModel, task, options);
        double lowest = 1;
        foreach (var s in NodeSites.All)
            for (int l = 0; l < c.Layers; l++)
            {
                float[] a = stored.Get(s, l), b = checkpointed.Get(s, l), r = cpu.Get(s, l);
                Assert.True(r.Any(x => x != 0), $"{s} layer {l}: all zero");
                for (int i = 0; i < a.Length; i++)
                    Assert.True(BitConverter.SingleToInt32Bits(a[i]) == BitConverter.SingleToInt32Bits(b[i]),
                        $"{s} layer {l} [{i}]: stored {a[i]:R}, checkpointed {b[i]:R}");
                double corr = Correlation(a, r);
                lowest = Math.Min(lowest, corr);
                output.WriteLine($"{s} layer {l}: correlation with the fp32 CPU scores {corr:F4}");
            }
        // Not the 8e-2-of-the-largest tolerance of short prompts: with the patch mid-prompt the clean-patch differences
        // are small beside the activations, and bf16 products round at 2^-9 of the activations (measured: 0.79 of the
        // largest score at worst; 0.62 with the fp32 materialising attention under the same bf16 products, 1.8e-4 in
        // fp32). The scores still rank alike: correlation 0.83 .. 0.998 per site and layer.
        Assert.True(lowest >= 0.8, $"lowest correlation {lowest:F4} with the fp32 CPU scores");
    }

    static double Correlation(float[] a, float[] b)
    {
        double ma = a.Average(x => (double)x), mb = b.Average(x => (double)x), ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++) { ab += (a[i] - ma) * (b[i] - mb); aa += (a[i] - ma) * (a[i] - ma); bb += (b[i] - mb) * (b[i] - mb); }
        return ab / Math.Sqrt(aa * bb);
    }

    [Fact]
    public void Means_read_back_in_groups_of_layers_equal_the_one_gather_means()
    {
        var c = RandomLlama.SmallConfig() with { Layers = 5 };
        const int positions = 9;
        var sites = NodeSites.All.ToArray();
        var backend = new CudaBackend(new HostKernelRuntime());
        using var _ = backend;
        using var sums = new ScoreSums(LayerPlacement.Single(backend, c.Layers), c, sites, positions);
        var rng = new Random(3);
        int[] positionOf = Enumerable.Range(0, 2 * positions).Select(r => r % positions).ToArray();
        foreach (var s in sites)
            for (int l = 0; l < c.Layers; l++)
            {
                int w = s.Width(c);
                using var clean = backend.Upload(Rand.Floats(rng.Next(), positionOf.Length * w), positionOf.Length, w);
                using var gradient = backend.Upload(Rand.Floats(rng.Next(), positionOf.Length * w), positionOf.Length, w);
                sums.Accumulate(s, l, clean, ScoreBaseline.Zero, gradient, 1f, positionOf);
            }
        int[] examples = Enumerable.Range(0, positions).Select(p => 1 + p % 3).ToArray();
        var whole = sums.MeansOver(examples);
        long perLayer = (long)positions * sites.Sum(s => s.Width(c));
        Assert.Equal(c.Layers, ScoreSums.LayersPerMeansGroup(positions, sites.Sum(s => s.Width(c)), c.Layers));
        // Groups of 2, 2 and 1 layers, and of one layer each.
        foreach (long groupFloats in new[] { 2 * perLayer + 1, perLayer - 1 })
        {
            var grouped = sums.MeansOver(examples, groupFloats);
            foreach (var s in sites)
                for (int l = 0; l < c.Layers; l++)
                {
                    float[] a = whole.Get(s, l), b = grouped.Get(s, l);
                    Assert.True(a.Any(x => x != 0), $"{s} layer {l}: all zero");
                    Assert.Equal(a.Select(BitConverter.SingleToInt32Bits), b.Select(BitConverter.SingleToInt32Bits));
                }
        }
    }
}
