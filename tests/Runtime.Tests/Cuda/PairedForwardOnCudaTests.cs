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
/// Issue 13 item 5, "clean and patch forwards as one batched forward", on the CUDA backend: PairedForward runs one
/// forward of 2 × rows and hands the backward and the scores row views of it (<see cref="IRowViews"/>, no copy). The
/// ledger pins that the second forward is gone (each weight read once for both prompt sets) and the backward is
/// unchanged; the emulator pins that the scores are those of the two separate forwards and the CPU backend's.
/// </summary>
public class PairedForwardOnCudaTests(ITestOutputHelper output)
{
    static PromptTask RandomTask(LlamaConfig c, int pairs, int seq)
    {
        var rng = new Random(3);
        return new PromptTask("random", Enumerable.Range(0, pairs).Select(i =>
        {
            var clean = Enumerable.Range(0, seq).Select(t => t == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[seq / 2] = (patch[seq / 2] + 1) % (c.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 4, 6);
        }).ToList());
    }

    static RecordingDeviceRuntime Ledger(LlamaConfig c, bool pairForwards)
    {
        var device = new RecordingDeviceRuntime();
        var backend = new CudaBackend(device, ownsDevice: false, GemmPrecision.Bf16);
        var llama = Llama.WithUninitializedWeights(c, backend);
        var task = RandomTask(c, pairs: 3, seq: 5);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = 3 };
        Attributor.ScoreWithPairing(llama, task, options, null, pairForwards);
        device.Reset();
        Attributor.ScoreWithPairing(llama, task, options, null, pairForwards);
        return device;
    }

    [Fact]
    public void On_the_ledger_clean_and_patch_are_one_forward_of_both_prompt_sets_and_the_backward_is_unchanged()
    {
        // Two layers of Llama-3.1-8B's width (the bf16 tensor-core attention; 10 launches a forward layer, LaunchLedgerTests).
        var c = new LlamaConfig
        {
            Dim = 4096, HiddenDim = 14336, Layers = 2, Heads = 32, KvHeads = 8, VocabSize = 128256, MaxSeqLen = 128,
            RopeTheta = 500000f, RopeLayout = RopeLayout.RotateHalf, NormEps = 1e-5f,
        };
        Assert.True(PairedForward.Applies(Llama.WithUninitializedWeights(c, new CudaBackend(new RecordingDeviceRuntime())), 15));
        var paired = Ledger(c, pairForwards: true);
        var separate = Ledger(c, pairForwards: false);
        // One forward: one embedding, one attention and four products per layer (q/k/v stacked, o, gate-up stacked and
        // read in place by SwiGLU, down), each product over 2 × rows (the same
        // FLOP as the two forwards, each weight read once instead of twice); the output layer is not run at all (the
        // sparse logit-difference seed never reads logits; the separate clean forward still formed them).
        Assert.Equal((1, 2), (paired.Ops["embedding"].Calls, separate.Ops["embedding"].Calls));
        Assert.Equal((c.Layers, 2 * c.Layers), (paired.Ops["attention_flash_forward"].Calls, separate.Ops["attention_flash_forward"].Calls));
        Assert.Equal((4 * c.Layers, 2 * 4 * c.Layers + 1), (paired.Ops["matmul"].Calls, separate.Ops["matmul"].Calls));
        double head = 2.0 * 3 * c.VocabSize * c.Dim;
        Assert.Equal(separate.Ops["matmul"].Flops - head, paired.Ops["matmul"].Flops, 6);
        double weightBytes = c.Layers * 2.0 * ((double)c.Dim * c.Dim * 2 + 2.0 * c.KvDim * c.Dim + 3.0 * c.Dim * c.HiddenDim);
        // The bytes the products move: the layers' bf16 weights once fewer, and the output layer's (bf16 classifier and
        // normed rows in, fp32 logits out) not at all; the activations are the same rows either way.
        double headBytes = 2.0 * c.VocabSize * c.Dim + 3 * (2.0 * c.Dim + 4.0 * c.VocabSize);
        Assert.Equal(weightBytes + headBytes, separate.Ops["matmul"].Bytes - paired.Ops["matmul"].Bytes, 6);
        // The split into halves is views: no gather, no copy, no host round trip; one token upload fewer.
        Assert.Equal(10 * c.Layers + 2, separate.Launches - paired.Launches);
        Assert.Equal(separate.Uploads - 1, paired.Uploads);
        Assert.Equal((1, 1), (paired.HostSyncs, separate.HostSyncs));
        Assert.Equal(separate.BytesToHost, paired.BytesToHost);
        // The backward reads the clean half exactly as it read the clean forward: the same ops, the same work.
        foreach (var op in new[] { "matmul_input_grad", "accumulate_scores", "swiglu_backward", "rmsnorm_backward", "attention_flash_backward", "rope" })
        {
            Assert.Equal(separate.Ops[op].Calls, paired.Ops[op].Calls);
            Assert.Equal(separate.Ops[op].Bytes, paired.Ops[op].Bytes);
        }
        output.WriteLine($"launches {separate.Launches} -> {paired.Launches}, peak {separate.Pool.PeakUsedBytes} -> {paired.Pool.PeakUsedBytes} bytes");
    }

    /// <summary>Head dim 4 (fp32 streaming attention) and 16 (the bf16 tensor-core attention), each in fp32 and bf16 products.</summary>
    public static TheoryData<int, bool> Cases => new() { { 4, false }, { 4, true }, { 16, false }, { 16, true } };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Paired_scores_equal_the_separate_forwards_and_the_cpu_backend(int headDim, bool bf16)
    {
        var config = RandomLlama.SmallConfig() with { Dim = 4 * headDim, HiddenDim = 6 * headDim };
        var weights = RandomLlama.Create(config, seed: 5);
        var task = LastTokenPairs.Task(4, config.VocabSize, seed: 2);
        var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = NodeSites.All, BatchSize = 2 };
        using var cpu = new Llama(weights, CpuBackend.Instance);
        using var backend = new CudaBackend(new HostKernelRuntime(), precision: bf16 ? GemmPrecision.Bf16 : GemmPrecision.Fp32);
        using var gpu = new Llama(weights, backend);
        Assert.True(PairedForward.Applies(gpu, 2 * task.Pairs.Max(p => p.CleanIds.Length)));
        var reference = Attributor.Score(cpu, task, options);
        var separate = Attributor.ScoreWithPairing(gpu, task, options, null, pairForwards: false);
        var paired = Attributor.ScoreWithPairing(gpu, task, options, null, pairForwards: true);
        double toSeparate = 0, toCpu = 0;
        foreach (var s in options.Sites)
            for (int l = 0; l < config.Layers; l++)
            {
                float[] p = paired.Get(s, l), q = separate.Get(s, l), r = reference.Get(s, l);
                double max = r.Max(Math.Abs);
                Assert.True(max > 0, $"{s} layer {l}: all zero");
                for (int i = 0; i < p.Length; i++)
                {
                    toSeparate = Math.Max(toSeparate, Math.Abs(p[i] - q[i]) / max);
                    toCpu = Math.Max(toCpu, Math.Abs(p[i] - r[i]) / max);
                }
            }
        output.WriteLine($"head dim {headDim}, {(bf16 ? "bf16" : "fp32")}: paired vs separate {toSeparate:E2}, vs cpu {toCpu:E2} of the largest score");
        // Against the CPU, the tolerances of AttributionOnCudaTests (fp32: 1e-4) and Bf16StorageTests (bf16: 8e-2,
        // 1.2e-1 with the tensor-core attention). Against the separate forwards, bit for bit: every op treats rows
        // independently and the emulator's products compute a row alike at any row count (cuBLAS on a GPU may pick
        // another algorithm at 2 × rows; there the bf16 tolerance is what holds, checked by gpu-check).
        double tolerance = !bf16 ? 1e-4 : backend.UsesBf16Attention(new AttentionShape(1, 1, config.Heads, config.KvHeads, config.HeadDim)) ? 1.2e-1 : 8e-2;
        Assert.True(toCpu <= tolerance, $"paired vs cpu {toCpu:E2} (tolerance {tolerance:E1})");
        Assert.True(toCpu > 0, "the cpu and cuda scores are identical: the comparison reads one of them twice");
        Assert.Equal(0, toSeparate);
    }

    [Fact]
    public void A_row_view_reads_its_slices_and_keeps_the_memory_until_it_and_its_tensor_are_both_disposed()
    {
        var runtime = new HostKernelRuntime(pooled: true);
        using var backend = new CudaBackend(runtime, precision: GemmPrecision.Bf16);
        long before = runtime.Pool!.UsedBytes;
        var data = Enumerable.Range(0, 12).Select(i => i + 0.25f).ToArray();
        var t = backend.Upload(data, 6, 2);
        var v = backend.ViewLeading(t, 2, 3);
        Assert.Equal([3, 2], v.Shape);
        t.Dispose();   // the view still holds the block
        var got = new float[6];
        backend.Download(v, got);
        Assert.Equal(data[4..10], got);
        Assert.True(runtime.Pool.UsedBytes > before);
        v.Dispose();
        Assert.Equal(before, runtime.Pool.UsedBytes);
        // A bf16 weight (2 bytes a value): the offset is in its element size; a row lookup reads the viewed rows.
        var table = backend.UploadConstant(data, 6, 2);
        using (var rows = backend.ViewLeading(table, 4, 2))
        using (var looked = backend.AllocateUninitialized(2, 2))
        {
            backend.Embedding([1, 0], rows, looked);
            backend.Download(looked, got.AsSpan(0, 4));
            Assert.Equal(new[] { data[10], data[11], data[8], data[9] }.Select(x => MmaSelfTests.FromBf16(MmaSelfTests.Bf16(x))), got[..4]);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => backend.ViewLeading(table, 5, 2));
        table.Dispose();
    }
}
