using NeuronTrace.Model;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Runtime.Tests.Kernels;
using NeuronTrace.TestSupport;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// <see cref="GraphReplayRuntime"/>: repeated segments (the work between two host waits) run as one graph launch, on
/// the emulator (the graph is the list of its ops, run in order) and on the launch ledger. A replay must give exactly
/// what op-by-op issue gives — the same kernels on the same buffers in the same order — so the checks are bitwise.
/// </summary>
public class GraphReplayTests
{
    [Fact]
    public void A_repeated_segment_is_captured_once_then_replayed_and_new_upload_bytes_reach_it()
    {
        var host = new HostKernelRuntime(pooled: true);
        using var backend = new CudaBackend(new GraphReplayRuntime(host, host.Pool));
        var graphs = (GraphReplayRuntime)backend.Device;
        var got = new float[4];
        for (int pass = 0; pass < 4; pass++)
        {
            float[] data = [pass, pass + 1, pass + 2, pass + 3];
            using var x = backend.Upload(data, 4);   // small: held as a staged upload inside the segment
            using var y = backend.AllocateUninitialized(4);
            backend.Fill(y, 10f);
            backend.Add(y, x);
            backend.Download(y, got);                // the host wait that ends the segment
            Assert.Equal(data.Select(v => v + 10f), got);
        }
        // The download's range closes after the wait, so pass 0's segment is the only one without that leading pop:
        // passes 0 and 1 ran op by op (each remembered), pass 2 repeated pass 1 (captured, launched), pass 3 replayed.
        Assert.Equal(1, graphs.Captures);
        Assert.Equal(2, graphs.GraphLaunches);
        Assert.Equal(2, host.GraphLaunches);
        Assert.Equal(2 * 3, graphs.OpsIssuedOneByOne);   // upload, fill, add
        Assert.Equal(2 * 3, graphs.OpsInGraphs);

        // A different scalar (the fill value) is a different segment: issued op by op, never the old graph.
        using (var x = backend.Upload([1f, 2f, 3f, 4f], 4))
        using (var y = backend.AllocateUninitialized(4))
        {
            backend.Fill(y, -1f);
            backend.Add(y, x);
            backend.Download(y, got);
        }
        Assert.Equal([0f, 1f, 2f, 3f], got);
        Assert.Equal(2, graphs.GraphLaunches);
        Assert.Equal(3 * 3, graphs.OpsIssuedOneByOne);
    }

    /// <summary>
    /// The fixed-shape pass: a forward, the logits read (host wait 1), a RelP backward from a logit difference, and the
    /// gradient at every site and layer read back (the first read is host wait 2; the rest have no device work between
    /// them). So the device work of a pass is exactly two segments: the forward, and upload + backward.
    /// </summary>
    static float[][] Pass(Llama m, TokenBatch batch)
    {
        using var pass = m.Forward(batch, LogitRows.Last);
        var logits = pass.HostLogits();
        int v = m.Config.VocabSize;
        var g = new float[logits.Length];
        for (int b = 0; b < batch.Size; b++) { g[b * v + 4] = 1; g[b * v + 6] = -1; }
        using var dl = m.Backend.Upload(g, batch.Size, v);
        using var grads = m.Backward(pass, dl, BackwardRules.RelP, NodeSites.All);
        var result = new List<float[]> { logits };
        foreach (var s in NodeSites.All)
            for (int l = 0; l < m.Config.Layers; l++) result.Add(grads.Host(s, l));
        return result.ToArray();
    }

    static TokenBatch Batch(LlamaConfig c)
    {
        var rng = new Random(3);
        return new TokenBatch(Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, 5).Select(t => t == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray()).ToList());
    }

    [Fact]
    public void A_replayed_forward_and_relp_backward_equal_op_by_op_results_bitwise()
    {
        var weights = RandomLlama.Create(RandomLlama.SmallConfig(), seed: 5);
        var batch = Batch(weights.Config);
        using var eagerBackend = new CudaBackend(new HostKernelRuntime(pooled: true));
        using var eager = new Llama(weights, eagerBackend);
        var expected = Pass(eager, batch);

        var host = new HostKernelRuntime(pooled: true);
        using var backend = new CudaBackend(new GraphReplayRuntime(host, host.Pool));
        var graphs = (GraphReplayRuntime)backend.Device;
        using var llama = new Llama(weights, backend);
        for (int pass = 0; pass < 4; pass++)
        {
            long oneByOne = graphs.OpsIssuedOneByOne, launches = graphs.GraphLaunches;
            var got = Pass(llama, batch);
            for (int i = 0; i < expected.Length; i++) Assert.Equal(expected[i], got[i]);
            if (pass == 3)
            {
                // Steady: both segments replayed, nothing issued op by op.
                Assert.Equal(oneByOne, graphs.OpsIssuedOneByOne);
                Assert.Equal(launches + 2, graphs.GraphLaunches);
            }
        }
        Assert.True(graphs.Enabled);
    }

    [Fact]
    public void On_the_ledger_a_steady_pass_is_two_graph_launches()
    {
        var c = RandomLlama.SmallConfig();
        var batch = Batch(c);
        RecordingDeviceRuntime Ledger(bool graphs)
        {
            var device = new RecordingDeviceRuntime();
            IDeviceRuntime runtime = graphs ? new GraphReplayRuntime(device, device.Pool, ownsInner: false) : device;
            var backend = new CudaBackend(runtime, ownsDevice: false, GemmPrecision.Bf16);
            var llama = Llama.WithUninitializedWeights(c, backend);
            for (int pass = 0; pass < 3; pass++) Pass(llama, batch);
            device.Reset();
            Pass(llama, batch);
            return device;
        }
        var eager = Ledger(graphs: false);
        var replayed = Ledger(graphs: true);
        // Host waits: the logits, then one per site and layer.
        Assert.Equal(1 + NodeSites.All.Count * c.Layers, replayed.Downloads);
        // Device work sits between the first two waits only: two segments, two graph launches, nothing else launched.
        Assert.Equal(2, replayed.GraphLaunches);
        Assert.Equal(2, replayed.Launches);
        // Inside them, every op of the op-by-op pass plus one staging copy per upload: the token ids and the last-row list
        // in the forward, the logit gradient and the scatter's row list in the backward.
        Assert.Equal(eager.Launches + 4, replayed.OpsInGraphs);
        foreach (var op in new[] { "matmul", "matmul_input_grad", "rmsnorm_forward", "attention_flash_forward", "attention_flash_backward", "f32_to_bf16" })
        {
            Assert.Equal(eager.Ops[op].Calls, replayed.Ops[op].Calls);
            Assert.Equal(eager.Ops[op].Flops, replayed.Ops[op].Flops);
        }
        Assert.Equal(eager.Downloads, replayed.Downloads);
        Assert.Equal(eager.BytesToDevice, replayed.BytesToDevice);
    }

    /// <summary>
    /// The ledger of the fourth RelP attribution task run on <paramref name="c"/> (the first three: seen, captured,
    /// replayed), <paramref name="batches"/> batches of <paramref name="batch"/> pairs of <paramref name="seq"/> tokens.
    /// </summary>
    static RecordingDeviceRuntime SteadyRelPLedger(LlamaConfig c, int batch, int seq, int batches, bool graphs)
    {
        var rng = new Random(3);
        var pairs = Enumerable.Range(0, batch * batches).Select(i =>
        {
            var clean = Enumerable.Range(0, seq).Select(t => t == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[seq - 1] = (patch[seq - 1] + 1) % (c.VocabSize - 3) + 3;
            return new NeuronTrace.Tracing.Tasks.PromptPair(i + 1, clean, patch, 4, 6);
        }).ToList();
        var task = new NeuronTrace.Tracing.Tasks.PromptTask("random", pairs);
        var options = new NeuronTrace.Tracing.Scoring.AttributionOptions { Method = NeuronTrace.Tracing.Scoring.AttributionMethod.RelP, BatchSize = batch };
        var device = new RecordingDeviceRuntime();
        IDeviceRuntime runtime = graphs ? new GraphReplayRuntime(device, device.Pool, ownsInner: false) : device;
        var backend = new CudaBackend(runtime, ownsDevice: false, GemmPrecision.Bf16);
        var llama = Llama.WithUninitializedWeights(c, backend);
        for (int pass = 0; pass < 3; pass++) NeuronTrace.Tracing.Scoring.Attributor.Score(llama, task, options);
        device.Reset();
        NeuronTrace.Tracing.Scoring.Attributor.Score(llama, task, options);
        return device;
    }

    [Fact]
    public void On_the_ledger_a_steady_relp_attribution_pass_is_one_graph_launch_per_score_copy_and_one_for_the_rest()
    {
        var c = RandomLlama.SmallConfig();
        var device = SteadyRelPLedger(c, batch: 3, seq: 5, batches: 1, graphs: true);
        // One host wait, at the end. The logit-difference metric seeds the backward sparsely, so the logits are never
        // read back. Each layer's score copy goes on the copy stream after the work that made it, so it ends a segment:
        // the work up to each layer's copy is one graph launch, and the rest of the bottom layer's backward one more.
        Assert.Equal(1, device.HostSyncs);
        Assert.Equal(c.Layers, device.CopyStreamDownloads);
        Assert.Equal(c.Layers + 1, device.GraphLaunches);
        Assert.Equal(device.GraphLaunches, device.Launches);
    }

    /// <summary>
    /// Two layers of Llama-3.1-8B's width, batch 8 x 64 (the benchmark's shape): there the attention scores of the
    /// paired forward are a 4 MiB block, the size of the graph's upload staging chunk. That chunk used to come from the
    /// pool's cache when the segment was captured (at its end), so the next pass got other blocks, never repeated, and
    /// `bench gpu-plan --shape llama3-8b` replayed nothing (0 graph launches, 2,743 launches op by op).
    /// </summary>
    [Fact]
    public void At_llama3_8b_width_a_steady_relp_attribution_task_is_one_graph_launch_and_one_host_sync()
    {
        var c = new LlamaConfig
        {
            Dim = 4096, HiddenDim = 14336, Layers = 2, Heads = 32, KvHeads = 8, VocabSize = 128256, MaxSeqLen = 128,
            RopeTheta = 500000f, RopeLayout = RopeLayout.RotateHalf, NormEps = 1e-5f,
        };
        var eager = SteadyRelPLedger(c, batch: 8, seq: 64, batches: 2, graphs: false);
        var replayed = SteadyRelPLedger(c, batch: 8, seq: 64, batches: 2, graphs: true);
        // Op by op it is hundreds of launches (282 with the stacked bf16 products and fused add+norm of s3-bf16): per batch
        // LaunchLedgerTests' pass (10 a forward layer, once for the paired clean and patch prompts, 11 while gate and up
        // were two products at this width; 17 a backward layer; 20 once) less the score slab's fill, which the task runs once (the scores leave the slab's rows as they are).
        Assert.Equal(2 * (10 * c.Layers + 17 * c.Layers + 19) + 1, eager.Launches);
        // Two batches, the readout in the last one's backward, a layer at a time on the copy stream: one wait at the end,
        // the work before each layer's copy one graph launch, the rest of the bottom layer one more.
        Assert.Equal(1, replayed.HostSyncs);
        Assert.Equal(c.Layers + 1, replayed.GraphLaunches);
        Assert.Equal(c.Layers + 1, replayed.Launches);
        // The graph ran every op of the op-by-op task (plus one staging copy per held upload).
        Assert.InRange(replayed.OpsInGraphs, eager.Launches, eager.Launches + eager.Uploads);
        Assert.Equal(eager.Ops["matmul"].Flops, replayed.Ops["matmul"].Flops);
        Assert.Equal(eager.BytesToHost, replayed.BytesToHost);
    }

    /// <summary>The task's scores cross to the host once, a layer at a time into page-locked memory on the copy stream, queued without a wait of their own.</summary>
    [Fact]
    public void A_relp_attribution_task_downloads_its_scores_once_pinned_and_asynchronously()
    {
        var c = RandomLlama.SmallConfig();
        foreach (int batches in new[] { 1, 3 })
        {
            var device = SteadyRelPLedger(c, batch: 2, seq: 5, batches, graphs: false);
            Assert.Equal(c.Layers, device.Downloads);
            Assert.Equal(c.Layers, device.PinnedDownloads);
            Assert.Equal(c.Layers, device.CopyStreamDownloads);
            Assert.Equal(device.BytesToHost, device.PinnedBytesToHost);
            // The one host wait is the Synchronize after the queued copies (they do not wait).
            Assert.Equal(1, device.HostSyncs);
            // Positions × the widths of every site, per layer: the means of the score slab, nothing more.
            int widths = NodeSites.All.Sum(s => s.Width(c));
            Assert.Equal((long)c.Layers * 5 * widths * sizeof(float), device.BytesToHost);
        }
    }
}
