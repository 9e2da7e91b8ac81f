using NeuronTrace.Model;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using Xunit;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// <see cref="MemoryPlan.WeightBytes"/> against the device memory pool of a CUDA backend on the recording runtime
/// (nothing executes; the pool counts every block): at the Llama-3.1-8B shape (32 layers), the bytes the weights hold
/// once loaded, in bf16 (matrices 2 bytes, no fp32 copy) and in fp32. The pool rounds each block up to its size class
/// (<see cref="DeviceMemoryPool.SizeClass"/>), which the plan leaves out: 0.3% here, nearly all of it the two
/// [vocab, dim] matrices (1,002 MiB each in bf16, rounded to 1,024). During the load the pool
/// peaks above that by the largest row-stacked group (the group's blocks and their stacked copy are alive together).
/// </summary>
public class MemoryPlanWeightTests
{
    static readonly LlamaConfig Shape8B = new()
    {
        Dim = 4096, HiddenDim = 14336, Layers = 32, Heads = 32, KvHeads = 8, VocabSize = 128256, MaxSeqLen = 8192,
        RopeTheta = 500000f, RopeLayout = RopeLayout.RotateHalf, NormEps = 1e-5f,
    };

    [Theory]
    [InlineData("bf16")]
    [InlineData("fp32")]
    [InlineData("tf32")]
    public void The_weights_item_is_what_the_cuda_backend_holds_once_loaded(string math)
    {
        var precision = GemmPrecisions.Parse(math);
        var c = Shape8B;
        var device = new RecordingDeviceRuntime();
        using var model = Llama.WithUninitializedWeights(c, new CudaBackend(device, ownsDevice: false, precision));
        long held = device.Pool.UsedBytes, peak = device.Pool.PeakUsedBytes;
        var plan = MemoryPlan.ForAttribution(c, 1, 16, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, weightCopies: 1, cudaPrecision: precision);
        long planned = plan.Items.Single(i => i.Item == "weights").Bytes;
        Assert.Equal(MemoryPlan.WeightBytes(c, c.Layers, true, true, 1, 4, precision), planned);
        Assert.True(held >= planned && held <= planned * 1.004, $"pool holds {held} bytes of weights, the plan says {planned}");
        // By hand: the matrices (embedding, classifier, q k v o, gate up down) and the norm gains (2 per layer + the final one).
        long gains = 2L * c.Layers * c.Dim + c.Dim;
        long matrices = c.ParameterCount - gains;
        long expected = precision == GemmPrecision.Bf16 ? 2 * matrices + 4 * gains : 4 * c.ParameterCount;
        Assert.Equal(expected, planned);
        long stackedGroup = (precision == GemmPrecision.Bf16 ? 2L : 0) * 2 * c.HiddenDim * c.Dim;   // [W1; W3]: only bf16 stacks
        Assert.True(peak <= held + DeviceMemoryPool.SizeClass(stackedGroup), $"load peak {peak} against {held} held");
    }

    [Fact]
    public void A_bf16_plan_counts_half_the_fp32_weight_bytes_and_a_split_adds_up_to_it()
    {
        var c = Shape8B;
        long bf16 = MemoryPlan.WeightBytes(c, c.Layers, true, true, 1, 4, GemmPrecision.Bf16);
        long fp32 = MemoryPlan.WeightBytes(c, c.Layers, true, true, 1, 4, GemmPrecision.Fp32);
        Assert.InRange(bf16 / (double)fp32, 0.5, 0.5001);
        // The CPU keeps two fp32 copies whatever the CUDA precision.
        Assert.Equal(2 * 4 * c.ParameterCount, MemoryPlan.WeightBytes(c, c.Layers, true, true, 2, 4, GemmPrecision.Bf16));
        var parts = MemoryPlan.ForSplitAttribution(c, 3, 1, 16, NodeSites.All, AttributionMethod.RelP, patchBaseline: true, cudaPrecision: GemmPrecision.Bf16);
        Assert.Equal(bf16, parts.Sum(p => p.Items.Single(i => i.Item == "weights").Bytes));
    }
}
