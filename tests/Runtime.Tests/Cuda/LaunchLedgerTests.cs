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
/// hand from the pass, not read off a run. When the score readout moves onto the device (issue 13, item 2) the
/// download counts here are the ones that must fall, and this test says by how much.
/// </summary>
public class LaunchLedgerTests
{
    const int Batch = 3, Seq = 5;

    static RecordingDeviceRuntime OnePass(LlamaConfig c, IReadOnlyList<NodeSite> sites, GemmPrecision precision, bool uninitialized)
    {
        var device = new RecordingDeviceRuntime();
        var backend = new CudaBackend(device, ownsDevice: false, precision);
        var llama = uninitialized ? Llama.WithUninitializedWeights(c, backend) : new Llama(RandomLlama.Create(c, seed: 1), backend);
        var rng = new Random(3);
        var pairs = Enumerable.Range(0, Batch).Select(i =>
        {
            var clean = Enumerable.Range(0, Seq).Select(t => t == 0 ? 1 : rng.Next(3, c.VocabSize)).ToArray();
            var patch = (int[])clean.Clone();
            patch[Seq - 1] = (patch[Seq - 1] + 1) % (c.VocabSize - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 4, 6);
        }).ToList();
        var options = new AttributionOptions { Method = AttributionMethod.RelP, Sites = sites, BatchSize = Batch };
        var task = new PromptTask("random", pairs);
        Attributor.Score(llama, task, options);
        device.Reset();
        Attributor.Score(llama, task, options);
        return device;
    }

    static int Width(LlamaConfig c, NodeSite s) => s == NodeSite.MlpAct ? c.HiddenDim : c.Dim;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_relp_pass_downloads_each_site_layer_once_plus_the_logits(bool uninitialized)
    {
        var c = RandomLlama.SmallConfig();
        var sites = NodeSites.All;
        var r = OnePass(c, sites, GemmPrecision.Fp32, uninitialized);
        // One [T, width] per-position score sum per site and layer, and the last-row logits of the clean forward.
        long expectedDownloads = sites.Count * c.Layers + 1;
        long expectedBytes = 4L * (Seq * sites.Sum(s => (long)Width(c, s)) * c.Layers + (long)Batch * c.VocabSize);
        Assert.Equal(expectedDownloads, r.Downloads);
        Assert.Equal(expectedBytes, r.BytesToHost);
        Assert.Equal(r.Downloads, r.HostSyncs);   // nothing else waits for the device
    }

    [Fact]
    public void The_matrix_products_are_two_forwards_one_output_layer_and_one_input_gradient_backward()
    {
        var c = RandomLlama.SmallConfig();
        var r = OnePass(c, NodeSites.All, GemmPrecision.Bf16, uninitialized: true);
        double rows = Batch * Seq;
        double linear = c.Layers * ((double)c.Dim * c.Dim * 2 + 2.0 * c.KvDim * c.Dim + 3.0 * c.Dim * c.HiddenDim);
        double head = 2.0 * Batch * c.VocabSize * c.Dim;    // the output layer on the last rows only
        // Clean and patch forwards; only the clean one runs the output layer (the patch forward gives activations).
        Assert.Equal(2 * 2 * rows * linear + head, r.Ops["matmul"].Flops);
        Assert.Equal(2 * 7 * c.Layers + 1, r.Ops["matmul"].Calls);
        Assert.Equal(2 * rows * linear + head, r.Ops["matmul_input_grad"].Flops);
        // bf16: the weights were converted in the first pass; a steady pass converts activations only, one per product.
        Assert.Equal(r.Ops["matmul"].Calls + r.Ops["matmul_input_grad"].Calls, r.Ops["f32_to_bf16"].Calls);
        Assert.True(r.Pool.PeakUsedBytes >= r.Pool.UsedBytes && r.Pool.PeakUsedBytes > 0);
    }
}
