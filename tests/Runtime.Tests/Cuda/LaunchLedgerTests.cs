using NeuronTrace.Model;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;

namespace NeuronTrace.Runtime.Tests.Cuda;

/// <summary>
/// The launch ledger of <see cref="RecordingDeviceRuntime"/> (what <c>bench gpu-plan</c> prints): one RelP
/// attribution pass of B pairs × T tokens on a small model, its counts pinned to what the code must do — derived by
/// hand from the pass, not read off a run. Since issue 13 (items 2, 3, 5) the scores stay on the device until the
/// task's last batch, the node scores are added where the backward produces each gradient, and a logit metric seeds
/// the backward on the device: a pass waits for the device once. The last batch's backward queues each finished
/// layer's means on the copy stream as it goes (one download per layer, none waited for until the end). The clean and
/// patch forwards run as one forward of both prompt sets (PairedForward over row views; PairedForwardOnCudaTests
/// compares it with the two forwards it replaced).
/// </summary>
public class LaunchLedgerTests
{
    const int Batch = 3, Seq = 5;

    static RecordingDeviceRuntime OnePass(LlamaConfig c, IReadOnlyList<NodeSite> sites, GemmPrecision precision, bool uninitialized,
        int examples = Batch, Func<Llama, PromptTask, Metric>? metric = null)
    {
        var device = new RecordingDeviceRuntime();
        var backend = new CudaBackend(device, ownsDevice: false, precision);
        var llama = uninitialized ? Llama.WithUninitializedWeights(c, backend) : new Llama(RandomLlama.Create(c, seed: 1), backend);
        var rng = new Random(3);
        var pairs = Enumerable.Range(0, examples).Select(i =>
        {
            var clean = Enumerable.Range(0, Seq).Select(t => t == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[Seq - 1] = (patch[Seq - 1] + 1) % (c.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 4, 6);
        }).ToList();
        var task = new PromptTask("random", pairs);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = sites, BatchSize = Batch, Metric = metric?.Invoke(llama, task) };
        Attributor.Score(llama, task, options);
        device.Reset();
        Attributor.Score(llama, task, options);
        return device;
    }

    static int Width(LlamaConfig c, NodeSite s) => s == NodeSite.MlpAct ? c.HiddenDim : c.Dim;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_relp_pass_waits_for_the_device_once_for_the_one_download_of_its_scores(bool uninitialized)
    {
        var c = RandomLlama.SmallConfig();
        var sites = NodeSites.All;
        var r = OnePass(c, sites, GemmPrecision.Fp32, uninitialized);
        // One download per layer, on the copy stream: its [T, Σ widths] rows of the score slab (every site), queued once
        // the backward has added its last site, divided by the example counts on the host. No logits (the logit-difference seed is two classifier rows per example, formed on the device).
        Assert.Equal(c.Layers, r.Downloads);
        Assert.Equal(c.Layers, r.CopyStreamDownloads);
        Assert.Equal(4L * c.Layers * Seq * sites.Sum(s => (long)Width(c, s)), r.BytesToHost);
        Assert.Equal(r.BytesToHost, r.CopyStreamBytesToHost);
        Assert.Equal(1, r.HostSyncs);   // nothing else waits for the device: the copies are waited for at the end, together
        // Uploads: the token ids of the paired forward, the last-row gather of its clean half, the seed's entries, the
        // backward's scatter of the last rows. The row → position map of the score op is the previous pass's (same batch
        // shape), so it is not sent again; the slab's rows go to the host as they are (no gather, no row list).
        Assert.Equal(4, r.Uploads);
        // The scores: one fused op per site and layer; no delta tensors (intervene, multiply), no copies (the forwards'
        // residual output is one out-of-place add, add_into, per layer, where it was a copy and an add; the other
        // residual add is fused into the MLP's norm, add_rmsnorm_forward), one scatter (the backward's last rows).
        Assert.Equal(sites.Count * c.Layers, r.Ops["accumulate_scores"].Calls);
        Assert.False(r.Ops.ContainsKey("gather_scaled_rows"));
        Assert.Equal(1, r.Ops["scatter_add_rows"].Calls);
        Assert.False(r.Ops.ContainsKey("copy"));
        Assert.Equal(c.Layers, r.Ops["add"].Calls);   // one paired forward: once per layer
        Assert.Equal(c.Layers, r.Ops["add_rmsnorm_forward"].Calls);
        Assert.False(r.Ops.ContainsKey("intervene"));
        Assert.False(r.Ops.ContainsKey("multiply"));
    }

    [Fact]
    public void A_task_of_several_batches_still_downloads_its_scores_once_in_its_last_backward()
    {
        var c = RandomLlama.SmallConfig();
        var r = OnePass(c, NodeSites.All, GemmPrecision.Fp32, uninitialized: true, examples: 3 * Batch);
        Assert.Equal(c.Layers, r.Downloads);   // one per layer, in the last batch only
        Assert.Equal(c.Layers, r.CopyStreamDownloads);
        Assert.Equal(1, r.HostSyncs);
        Assert.Equal(3 * NodeSites.All.Count * c.Layers, r.Ops["accumulate_scores"].Calls);
    }

    [Fact]
    public void A_metric_with_more_than_two_terms_per_row_reads_the_logits_back_each_batch()
    {
        // Top-3 logits: three non-zeros per row, so the dense product (and the logits download) is kept; see Attributor.MetricGradient.
        var c = RandomLlama.SmallConfig();
        var r = OnePass(c, NodeSites.All, GemmPrecision.Fp32, uninitialized: false, examples: 2 * Batch,
            metric: (llama, task) => Metric.SumOfTopKLogits(llama, task, k: 3));
        Assert.Equal(2 + c.Layers, r.Downloads);   // two batches' logits, the scores layer by layer
        Assert.Equal(4L * (2 * Batch * c.VocabSize + c.Layers * Seq * NodeSites.All.Sum(s => (long)Width(c, s))), r.BytesToHost);
        Assert.False(r.Ops.ContainsKey("sparse_matmul_input_grad"));
    }

    [Fact]
    public void The_matrix_products_are_one_paired_forward_and_one_input_gradient_backward_without_the_output_layer()
    {
        var c = RandomLlama.SmallConfig();
        var r = OnePass(c, NodeSites.All, GemmPrecision.Bf16, uninitialized: true);
        double rows = Batch * Seq;
        double linear = c.Layers * ((double)c.Dim * c.Dim * 2 + 2.0 * c.KvDim * c.Dim + 3.0 * c.Dim * c.HiddenDim);
        // Clean and patch prompts in one forward of 2 × rows (each weight read once for both); no output layer: the
        // logit-difference seed is sparse, so the logits are never formed (the backward gathers the answer rows).
        // bf16 stacks [Wq; Wk; Wv] and [W1; W3]. The forward runs q, k, v as one product and one launch that splits it
        // and rotates q and k (split_qkv_rope), gate and up as one product whose output SwiGLU reads in place (at any
        // width: no split), then o and down: four products per layer, one split-and-rotate, no split, no forward RoPE.
        Assert.Equal(2 * (2 * rows) * linear, r.Ops["matmul"].Flops);
        Assert.Equal(4 * c.Layers, r.Ops["matmul"].Calls);
        Assert.False(r.Ops.ContainsKey("split_columns"));
        Assert.Equal(c.Layers, r.Ops["split_qkv_rope"].Calls);
        Assert.Equal(2 * c.Layers, r.Ops["rope"].Calls);   // the backward's inverse rotations of dq and dk
        // The backward's output layer is the gather of two classifier rows per example, not a product; its input
        // gradients are four products per layer too (down, gate-up summed, o, qkv summed).
        Assert.Equal(2 * rows * linear, r.Ops["matmul_input_grad"].Flops);
        Assert.Equal(4 * c.Layers, r.Ops["matmul_input_grad"].Calls);
        Assert.Equal(2, r.Ops["sparse_matmul_input_grad"].Calls);   // the answer rows widened from the bf16 classifier, then the sum
        Assert.Equal(2.0 * Batch * 2 * c.Dim, r.Ops["sparse_matmul_input_grad"].Flops);
        // bf16 end to end: the weights are stored bf16 (no conversion ever), the norms (forward and backward), SwiGLU
        // and SwiGLU's backward (the concatenated [dgate | dup]) and the head's scatter (the top layer's mlp_out
        // gradient) write their outputs' bf16 operands themselves, so with head dim 4 (the fp32 attention, which writes
        // no bf16) a forward layer converts only the attention output z (for Wo) and a backward layer the concatenated
        // [dq | dk | dv] in one launch. (The bf16 attention writes both: see the 8B-shape case.) The forward stores q, k,
        // v (and gate, up) in bf16 for the backward, adopting the shadows their producers wrote (no conversion), which
        // the fp32 attention's backward widens again: three widenings per backward layer, only for such head dims.
        Assert.Equal(c.Layers + c.Layers, r.Ops["f32_to_bf16"].Calls);   // z once per paired forward layer, [dq | dk | dv] per backward layer
        Assert.Equal(3 * c.Layers, r.Ops["bf16_to_f32"].Calls);
        Assert.True(r.Pool.PeakUsedBytes >= r.Pool.UsedBytes && r.Pool.PeakUsedBytes > 0);
    }

    [Fact]
    public void At_8b_shapes_the_bf16_attention_reads_the_q_k_v_and_dz_its_producers_wrote_in_bf16()
    {
        // Head dim 128: the bf16 tensor-core attention runs. Its q, k and v come from the stacked product's split, which
        // rotates q and k in the same launch (split_qkv_rope writes all three bf16 shadows), kept from the forward for the backward; dz from the backward's row-term
        // pass; z (the o product's operand) from the attention forward; the [dq | dk | dv] operand of the backward's
        // stacked Q/K/V input gradient from the dk/dv kernel (dv) and the inverse RoPE (dq, dk); the top layer's
        // mlp_out gradient from the head's scatter. Nothing is converted (was 14 per layer + 1 before the producers
        // wrote bf16, then 1 per layer + 1).
        var c = new LlamaConfig
        {
            Dim = 4096, HiddenDim = 14336, Layers = 2, Heads = 32, KvHeads = 8, VocabSize = 128256, MaxSeqLen = 8192,
            RopeTheta = 500000f, RopeLayout = RopeLayout.RotateHalf, NormEps = 1e-5f,
        };
        var r = OnePass(c, NodeSites.All, GemmPrecision.Bf16, uninitialized: true);
        Assert.False(r.Ops.ContainsKey("f32_to_bf16"));
        Assert.Equal(c.Layers, r.Ops["split_qkv_rope"].Calls);
        Assert.Equal(2 * c.Layers, r.Ops["rope"].Calls);   // the backward's inverse rotations only (was 2 more per forward layer)
        Assert.Equal(c.Layers, r.Ops["attention_flash_forward"].Calls);   // one paired forward over both prompt sets
        // Every launch of the pass: a forward layer 10 (attention norm, Q/K/V product and its split with RoPE, attention,
        // o product, residual add fused with the MLP norm, the stacked gate-up product, SwiGLU reading its output in
        // place, down product, residual add into the layer's output), once over the clean and patch prompts together
        // (it was twice before the paired forward; 11 while gate and up were two products at this width);
        // a backward layer 17 (4 input-gradient products, 5 score accumulations, SwiGLU backward, 2 norm backwards, 2
        // inverse RoPE, the attention backward's row term, dq and dk/dv); once a pass 20: the embedding, the clean half's
        // last-row gather and final norm (no output layer: the sparse seed never reads logits), 13 zero-filled
        // allocations (the backward's 9 scratch tensors, the head's 3, the score slab), the head's answer-row gather and
        // sum (2), final norm backward and scatter (the scores leave each layer's slab rows as they are: no gather).
        Assert.Equal(10 * c.Layers + 17 * c.Layers + 20, r.Launches);   // 14 a forward layer before split_qkv_rope and add_into
        Assert.Equal(4 * c.Layers, r.Ops["matmul"].Calls);   // q/k/v, o, gate-up, down
        Assert.False(r.Ops.ContainsKey("split_columns"));
    }

    [Fact]
    public void The_fp32_pass_keeps_its_separate_products_and_converts_nothing()
    {
        var c = RandomLlama.SmallConfig();
        var r = OnePass(c, NodeSites.All, GemmPrecision.Fp32, uninitialized: true);
        Assert.Equal(7 * c.Layers, r.Ops["matmul"].Calls);   // one paired forward, no output layer (sparse seed)
        Assert.Equal(7 * c.Layers, r.Ops["matmul_input_grad"].Calls);
        Assert.False(r.Ops.ContainsKey("f32_to_bf16"));
        Assert.False(r.Ops.ContainsKey("split_columns"));
    }
}
