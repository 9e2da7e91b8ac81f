using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// The score readout beside the backward (issue 13, item 1) and the top-k on the device (item 2), on the CUDA backend
/// over the CPU emulator, whose copy stream copies only at the host wait (so a read before the wait, or a source
/// changed before it, shows): scores equal bit for bit to the end-of-task readout of the same sums and within the CPU
/// tolerance of the CPU backend's; one host wait per task; the top-k on the device equal to NodeRanking's top-k of the
/// downloaded scores. On the recording runtime: the copies overlap the backward below their layer, only the bottom
/// layer's copy is exposed.
/// </summary>
public class ScoreReadoutTests
{
    static readonly NodeSite[] Sites = [NodeSite.Resid, NodeSite.MlpAct, NodeSite.AttnZ];

    static AttributionOptions Options(int batch) => new() { Method = AttributionMethod.RelP, Sites = Sites, BatchSize = batch };

    [Theory]
    [InlineData(false, 3)]
    [InlineData(true, 3)]
    [InlineData(false, 7)]
    public void The_readout_beside_the_backward_gives_the_scores_of_the_end_of_task_readout(bool graphs, int batch)
    {
        var weights = RandomLlama.Create(RandomLlama.SmallConfig(), seed: 5);
        var task = LastTokenPairs.Task(7, weights.Config.VocabSize, seed: 2);   // 3 batches of 3 (the last of 1), or one of 7
        var host = new HostKernelRuntime(pooled: true);
        IDeviceRuntime runtime = graphs ? new GraphReplayRuntime(host, host.Pool, ownsInner: false) : host;
        using var backend = new CudaBackend(runtime, ownsDevice: false);
        using var gpu = new Llama(weights, backend);
        var options = Options(batch);
        NodeScores atEnd;
        using (var onDevice = Attributor.ScoreOnDevice(gpu, task, options)) atEnd = onDevice.Download();
        for (int pass = 0; pass < (graphs ? 3 : 1); pass++)   // with graphs: seen, captured, replayed
        {
            int copies = host.CopyStreamDownloads, waits = host.CopyStreamWaits;
            var beside = Attributor.Score(gpu, task, options);
            Assert.Equal(weights.Config.Layers, host.CopyStreamDownloads - copies);   // one per layer, on the copy stream
            Assert.Equal(1, host.CopyStreamWaits - waits);                             // waited for once, together
            foreach (var s in Sites)
                for (int l = 0; l < weights.Config.Layers; l++)
                    Assert.Equal(atEnd.Get(s, l), beside.Get(s, l));   // bit for bit: the same gather of the same sums
        }
        if (graphs) Assert.True(((GraphReplayRuntime)runtime).GraphLaunches > 0);

        using var cpu = new Llama(weights, CpuBackend.Instance);
        var expected = Attributor.Score(cpu, task, options);
        foreach (var s in Sites)
            for (int l = 0; l < weights.Config.Layers; l++)
            {
                float[] a = expected.Get(s, l), b = atEnd.Get(s, l);
                double max = a.Max(Math.Abs);
                Assert.True(max > 0, $"{s} layer {l}: all zero");
                for (int i = 0; i < a.Length; i++)
                    Assert.True(Math.Abs(a[i] - b[i]) <= 1e-4 * max, $"{s} layer {l} [{i}]: cpu {a[i]} cuda {b[i]}");
            }
    }

    [Fact]
    public void The_top_k_on_the_device_is_node_rankings_top_k_of_the_downloaded_scores_and_downloads_only_k_nodes()
    {
        var weights = RandomLlama.Create(RandomLlama.SmallConfig(), seed: 6);
        var c = weights.Config;
        var task = LastTokenPairs.Task(5, c.VocabSize, seed: 3);
        var host = new HostKernelRuntime(pooled: true);
        using var backend = new CudaBackend(host, ownsDevice: false);
        using var gpu = new Llama(weights, backend);
        using var cpuModel = new Llama(weights, CpuBackend.Instance);
        var options = Options(2);
        using var onDevice = Attributor.ScoreOnDevice(gpu, task, options);
        using var onCpu = Attributor.ScoreOnDevice(cpuModel, task, options);
        var downloaded = onDevice.Download();
        var cpuScores = onCpu.Download();
        foreach (var s in Sites)
        {
            var ranking = new NodeRanking(downloaded, s);
            var cpuRanking = new NodeRanking(cpuScores, s);
            // Ties: patch and clean prompts differ in the last token only, so every earlier position scores exactly 0
            // at the layer-0 resid; a k past the nonzero nodes cuts into that tie.
            int nonzero = ranking.Magnitudes.Count(m => m != 0);
            foreach (int k in new[] { 1, 10, nonzero + 3, ranking.Count + 2 })
            {
                int pinned = host.PinnedDownloads;
                var top = onDevice.TopK(s, k);
                Assert.Equal(0, host.PinnedDownloads - pinned);   // no slab readout
                var want = ranking.Order.Take(k).ToArray();
                Assert.Equal(want.Length, top.Count);
                for (int i = 0; i < want.Length; i++)
                {
                    Assert.Equal(ranking.Node(want[i]), top[i].Node);
                    Assert.Equal(downloaded[top[i].Node], top[i].Score);
                }
                // On the CPU backend the same call ranks the CPU's scores as NodeRanking does, exactly.
                var cpuTop = onCpu.TopK(s, k);
                Assert.Equal(cpuRanking.Order.Take(k).Select(cpuRanking.Node), cpuTop.Select(t => t.Node));
                Assert.Equal(cpuTop.Select(t => cpuScores[t.Node]), cpuTop.Select(t => t.Score));
            }
        }
        Assert.Throws<ArgumentException>(() => onDevice.TopK(NodeSite.Attn, 3));   // not scored
    }

    [Fact]
    public void On_the_ledger_a_copy_overlaps_the_compute_after_it_and_a_host_wait_exposes_only_the_rest()
    {
        // By hand: 1 ms of compute, a copy of 25 MB (1 ms at 25 GB/s), 0.4 ms more compute, the wait: 0.6 ms exposed.
        var r = new RecordingDeviceRuntime();
        var costs = new RecordingDeviceRuntime.TimingAssumptions(0, 0, 0, 12e9, 25e9);
        r.PushRange("work");
        r.DeclareWork(new OpWork(0, 1e-3 * RecordingDeviceRuntime.H100Bytes));
        using var pinned = r.AllocatePinnedHost(25_000_000);
        r.CopyToHostOnCopyStream(pinned.DangerousGetHandle(), 1 << 20, 25_000_000);
        r.DeclareWork(new OpWork(0, 0.4e-3 * RecordingDeviceRuntime.H100Bytes));
        r.PopRange();
        r.Synchronize();
        var m = r.Model(costs);
        Assert.Equal(1e-3, m.CopyStream, 9);
        Assert.Equal(0.6e-3, m.CopyStreamExposed, 9);
        Assert.Equal(0.4e-3, m.CopyStreamHidden, 9);
        Assert.Equal(2e-3, m.Total, 9);
        Assert.Equal(1, r.HostSyncs);
        // A second copy queued right after the first waits for the copy engine, not for the compute.
        r.Reset();
        r.DeclareWork(new OpWork(0, 1e-3 * RecordingDeviceRuntime.H100Bytes));
        r.CopyToHostOnCopyStream(pinned.DangerousGetHandle(), 1 << 20, 25_000_000);
        r.CopyToHostOnCopyStream(pinned.DangerousGetHandle(), 1 << 20, 25_000_000);
        r.DeclareWork(new OpWork(0, 3e-3 * RecordingDeviceRuntime.H100Bytes));
        r.Synchronize();
        m = r.Model(costs);
        Assert.Equal(0, m.CopyStreamExposed, 9);
        Assert.Equal(4e-3, m.Total, 9);
    }

    [Fact]
    public void At_llama3_8b_width_only_the_bottom_layers_score_copy_is_left_exposed()
    {
        var c = new LlamaConfig
        {
            Dim = 4096, HiddenDim = 14336, Layers = 3, Heads = 32, KvHeads = 8, VocabSize = 128256, MaxSeqLen = 128,
            RopeTheta = 500000f, RopeLayout = RopeLayout.RotateHalf, NormEps = 1e-5f,
        };
        var device = new RecordingDeviceRuntime();
        var backend = new CudaBackend(device, ownsDevice: false, GemmPrecision.Bf16);
        var llama = Llama.WithUninitializedWeights(c, backend);
        var rng = new Random(3);
        const int seq = 64;
        var task = new PromptTask("random", Enumerable.Range(0, 8).Select(i =>
        {
            var clean = Enumerable.Range(0, seq).Select(t => t == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[seq / 2] = (patch[seq / 2] + 1) % (c.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 5, 7);
        }).ToList());
        var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = 8 };
        Attributor.Score(llama, task, options);
        device.Reset();
        Attributor.Score(llama, task, options);
        // The assumed costs of bench gpu-plan (GpuPlan): 4 us a launch, 1 us a graph node, 20 us a sync, 12 / 25 GB/s.
        var m = device.Model(new RecordingDeviceRuntime.TimingAssumptions(4e-6, 1e-6, 20e-6, 12e9, 25e9));
        double perLayer = m.CopyStream / c.Layers;
        Assert.Equal(c.Layers, device.CopyStreamDownloads);
        Assert.Equal(1, device.HostSyncs);
        Assert.Equal(c.Layers + 1, device.CopyStreamMarks.Count);   // the copies, then the one wait
        Assert.True(m.CopyStreamExposed <= perLayer, $"exposed {m.CopyStreamExposed * 1e3:F3} ms, one layer's copy {perLayer * 1e3:F3} ms");
        Assert.True(m.CopyStreamHidden >= (c.Layers - 1) * perLayer, $"hidden {m.CopyStreamHidden * 1e3:F3} ms of {m.CopyStream * 1e3:F3} ms");
        // The copies leave in order, top layer first, each after more of the backward than the one before.
        var at = device.CopyStreamMarks.Select(x => x.At.RooflineSeconds).ToArray();
        Assert.True(at.Zip(at.Skip(1), (a, b) => a < b).All(x => x));
    }
}
