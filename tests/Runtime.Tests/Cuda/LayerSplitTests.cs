using NeuronTrace.Model;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// A model split by layers over two emulated devices (two <see cref="HostKernelRuntime"/>s, each with its own memory
/// pool, under a <see cref="CudaBackend"/> each) against the same model on one emulated device: the same kernels run in
/// the same order, and the boundary copies are exact, so logits, every site and the scores must be equal bit for bit.
/// Each device's pool must hold only its layers' weights.
/// </summary>
public class LayerSplitTests
{
    static LlamaConfig Config(bool tied) => RandomLlama.SmallConfig() with { Layers = 4, TiedEmbeddings = tied };

    static LlamaWeights Weights(bool tied) => RandomLlama.Create(Config(tied), seed: 11);

    static PromptTask Task(LlamaConfig c, int count = 5)
    {
        var rng = new Random(4);
        var pairs = Enumerable.Range(0, count).Select(i =>
        {
            int len = 3 + i % 3;
            var clean = Enumerable.Range(0, len).Select(t => t == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[len - 1] = (patch[len - 1] + 1) % (c.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 4, 6);
        }).ToList();
        return new PromptTask("random", pairs);
    }

    sealed class Devices : IDisposable
    {
        public readonly HostKernelRuntime[] Runtimes;
        public readonly CudaBackend[] Backends;
        public Devices(int n)
        {
            Runtimes = Enumerable.Range(0, n).Select(_ => new HostKernelRuntime(pooled: true)).ToArray();
            Backends = Runtimes.Select(r => new CudaBackend(r)).ToArray();
        }
        public void Dispose() { foreach (var b in Backends) b.Dispose(); }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheSplitForwardEqualsOneDeviceExactlyAtEverySite(bool tied)
    {
        var weights = Weights(tied);
        var c = weights.Config;
        using var one = new Devices(1);
        using var two = new Devices(2);
        using var whole = new Llama(weights, one.Backends[0]);
        using var split = new Llama(weights, LayerPlacement.Balanced(c, two.Backends));
        Assert.Equal([0, 0, 1, 1], Enumerable.Range(0, c.Layers).Select(split.Placement.DeviceOf));
        var batch = new TokenBatch([[1, 5, 9, 3], [1, 7, 2], [1, 30, 4, 4, 8]]);
        using var a = whole.Forward(batch, LogitRows.All);
        using var b = split.Forward(batch, LogitRows.All);
        Assert.Equal(a.HostLogits(), b.HostLogits());
        Assert.Contains(a.HostLogits(), v => v != 0f);
        foreach (var site in new[] { NodeSite.Resid, NodeSite.Attn, NodeSite.AttnZ, NodeSite.MlpOut, NodeSite.MlpAct })
            for (int l = 0; l < c.Layers; l++)
                Assert.Equal(a.HostSite(site, l), b.HostSite(site, l));
    }

    // IG runs a forward and backward per site and layer on the emulator (slow), so it scores one site of fewer prompts.
    [Theory]
    [InlineData(AttributionMethod.RelP, 5, "resid,mlp_act,attn_z")]
    [InlineData(AttributionMethod.IG, 3, "mlp_act")]
    [InlineData(AttributionMethod.IGInputs, 3, "resid,mlp_act")]
    public void SplitScoresEqualOneDeviceExactly(AttributionMethod method, int prompts, string sites)
    {
        var weights = Weights(tied: false);
        var task = Task(weights.Config, prompts);
        var options = new AttributionOptions { Method = method, Sites = NodeSites.ParseList(sites), IgSteps = 2, BatchSize = 3 };
        using var one = new Devices(1);
        using var two = new Devices(2);
        using var whole = new Llama(weights, one.Backends[0]);
        using var split = new Llama(weights, LayerPlacement.Balanced(weights.Config, two.Backends));
        var expected = Attributor.Score(whole, task, options);
        var got = Attributor.Score(split, task, options);
        foreach (var s in options.Sites)
            for (int l = 0; l < weights.Config.Layers; l++)
            {
                Assert.Contains(expected.Get(s, l), v => v != 0f);
                Assert.Equal(expected.Get(s, l), got.Get(s, l));
            }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void EachDeviceHoldsOnlyItsLayersWeightsAndGetsItsMemoryBack(bool tied)
    {
        var weights = Weights(tied);
        var c = weights.Config;
        using var two = new Devices(2);
        using var split = new Llama(weights, LayerPlacement.Balanced(c, two.Backends));
        // Expected from the shapes: the embedding and layers 0..1 on device 0; layers 2..3, the final norm and the
        // classifier (a second copy of a tied embedding) on device 1. Each tensor is one pooled block of its size class.
        static long Block(params int[] shape) => DeviceMemoryPool.SizeClass(shape.Aggregate(4L, (n, d) => n * d));
        long layer = Block(c.Dim) * 2 + Block(c.Dim, c.Dim) * 2 + Block(c.KvDim, c.Dim) * 2 + Block(c.HiddenDim, c.Dim) * 2 + Block(c.Dim, c.HiddenDim);
        long embedding = Block(c.VocabSize, c.Dim);
        long[] weightBytes = [embedding + 2 * layer, 2 * layer + Block(c.Dim) + embedding];
        for (int d = 0; d < 2; d++) Assert.Equal(weightBytes[d], two.Runtimes[d].Pool!.UsedBytes);

        // The same run on one device: what its pool keeps afterwards beyond the weights and RoPE tables is the backend's
        // reusable staging (index and mask buffers); each split device must keep exactly that much too, and no activation.
        var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = [NodeSite.MlpAct], BatchSize = 3 };
        long rope = 2 * Block(Math.Min(c.MaxSeqLen, 256), c.HeadDim / 2);
        long staging;
        using (var one = new Devices(1))
        using (var whole = new Llama(weights, one.Backends[0]))
        {
            Attributor.Score(whole, Task(c, 3), options);
            staging = one.Runtimes[0].Pool!.UsedBytes - weightBytes.Sum() - rope + (tied ? embedding : 0);
        }
        foreach (var r in two.Runtimes) r.Pool!.ResetPeak();
        Attributor.Score(split, Task(c, 3), options);
        for (int d = 0; d < 2; d++)
        {
            var pool = two.Runtimes[d].Pool!;
            Assert.True(pool.PeakUsedBytes > weightBytes[d] + rope, $"device {d} ran nothing");
            Assert.Equal(weightBytes[d] + rope + staging, pool.UsedBytes);
        }
    }

    // The evaluation side: mean-ablated forwards that start above a shared clean prefix (at layers on either device).
    [Fact]
    public void SplitSweepEqualsOneDeviceExactly()
    {
        var weights = Weights(tied: false);
        var task = Task(weights.Config, 4);
        using var one = new Devices(1);
        using var two = new Devices(2);
        using var whole = new Llama(weights, one.Backends[0]);
        using var split = new Llama(weights, LayerPlacement.Balanced(weights.Config, two.Backends));
        var scores = Attributor.Score(whole, task, new AttributionOptions { Method = AttributionMethod.RelP, Sites = [NodeSite.MlpAct] });
        int[] ks = [1, 5, 40, 96];
        var prompts = task.Pairs.Select(p => p.PatchIds!).ToList();
        var expected = CircuitSweep.Run(whole, scores, NodeSite.MlpAct, "relp", task, SiteMeans.Compute(whole, prompts, [NodeSite.MlpAct]), ks, masksPerForward: 3);
        var got = CircuitSweep.Run(split, scores, NodeSite.MlpAct, "relp", task, SiteMeans.Compute(split, prompts, [NodeSite.MlpAct]), ks, masksPerForward: 3);
        Assert.Equal(expected, got);
        Assert.Contains(expected, p => p.Faithfulness != 0 && double.IsFinite(p.Faithfulness));
    }

    [Fact]
    public void APlacementNeedsALayerPerDeviceAndDistinctDevices()
    {
        var c = Config(tied: false);
        using var five = new Devices(5);
        Assert.Contains("at least one layer", Assert.Throws<ArgumentException>(() => LayerPlacement.Balanced(c, five.Backends)).Message);
        Assert.Contains("twice", Assert.Throws<ArgumentException>(() => LayerPlacement.Balanced(c, [five.Backends[0], five.Backends[0]])).Message);
    }
}
