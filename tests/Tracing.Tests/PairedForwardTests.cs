using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using Xunit;

namespace NeuronTrace.Tracing.Tests;

/// <summary>
/// The clean and patch forwards of an attribution batch run as one forward (<see cref="PairedForward"/>): every tensor
/// the scores and the backward read, and the scores themselves, must equal bit for bit those of two separate forwards
/// (the reference: the separate-forward path the attributor keeps for batches the pairing does not apply to).
/// </summary>
public class PairedForwardTests
{
    internal static readonly NodeSite[] AllSites = [NodeSite.Resid, NodeSite.Attn, NodeSite.AttnZ, NodeSite.MlpOut, NodeSite.MlpAct];
    /// <summary>The tensors of <see cref="AllSites"/>: all that the patch pass keeps.</summary>
    static readonly string[] PatchKeeps = ["output", "attn out", "z", "mlp out", "act"];

    /// <summary>Wide enough (hidden 640 × dim 128 × 56+ rows) for the products to be shared across cores.</summary>
    internal static LlamaWeights WideRandom() => RandomLlama.Create(RandomLlama.SmallConfig() with
    {
        Dim = 128, HiddenDim = 640, Heads = 4, KvHeads = 2, VocabSize = 300, Layers = 2,
    }, seed: 11, scale: 0.1f);

    public static TheoryData<string> Models() => new() { "stories260K", "wide" };

    static LlamaWeights Weights(string which) =>
        which == "wide" ? WideRandom() : ModelLoader.Load(RepoPaths.Stories260KBin).Weights;

    [Theory, MemberData(nameof(Models))]
    public void PassesEqualSeparateForwards(string which)
    {
        var weights = Weights(which);
        using var model = new Llama(weights, CpuBackend.Instance);
        var task = RandomTasks.Pairs(8, weights.Config.VocabSize, seed: 4);
        var clean = new TokenBatch(task.Pairs.Select(p => p.CleanIds).ToList());
        var patch = new TokenBatch(task.Pairs.Select(p => p.PatchIds!).ToList());
        Assert.True(PairedForward.Applies(model, clean.Rows), $"{clean.Rows} rows: the pairing must apply for this test to mean anything");
        // The patch rows before each prompt's first differing token are not computed (their clean twins' values):
        // some must be shared here for the test to cover that path.
        var shared = PairedForward.SharedPrefix.Of(clean, patch);
        Assert.True(shared is not null && shared.Computed.Length < 2 * clean.Rows, $"{which}: no patch row shares its clean prefix");

        var (pc, pp) = PairedForward.Run(model, clean, patch, AllSites);
        using var pairedClean = pc;
        using var pairedPatch = pp;
        using var aloneClean = model.Forward(clean, LogitRows.Last);
        using var alonePatch = model.Forward(patch, LogitRows.None);

        Assert.Null(pairedPatch.Logits);
        Assert.Equal(aloneClean.LogitRowIndex, pairedClean.LogitRowIndex);
        AssertSame(aloneClean.Logits!, pairedClean.Logits!, "logits");
        foreach (var (alone, paired, name) in new[] { (aloneClean, pairedClean, "clean"), (alonePatch, pairedPatch, "patch") })
        {
            AssertSame(alone.Embedded, paired.Embedded, $"{name} embedding");
            for (int l = 0; l < weights.Config.Layers; l++)
            {
                var a = alone.Layers[l];
                var b = paired.Layers[l];
                Assert.Same(l == 0 ? paired.Embedded : paired.Layers[l - 1].Output, b.Input);
                foreach (var (x, y, t) in new[] { (a.AttnNormed, b.AttnNormed, "attn normed"), (a.AttnRstd, b.AttnRstd, "attn rstd"),
                             (a.Q, b.Q, "q"), (a.K, b.K, "k"), (a.V, b.V, "v"), (a.Lse, b.Lse, "lse"), (a.Z, b.Z, "z"),
                             (a.AttnOut, b.AttnOut, "attn out"), (a.Mid, b.Mid, "mid"), (a.FfnNormed, b.FfnNormed, "ffn normed"),
                             (a.FfnRstd, b.FfnRstd, "ffn rstd"), (a.Gate, b.Gate, "gate"), (a.Up, b.Up, "up"), (a.Act, b.Act, "act"),
                             (a.MlpOut, b.MlpOut, "mlp out"), (a.Output, b.Output, "output") })
                {
                    if (name == "patch" && !PatchKeeps.Contains(t))
                    {
                        // The patch pass keeps its site values only (what the scores read as the baseline).
                        Assert.True(y.Length == 0, $"patch layer {l} {t}: {y.Length} values kept, expected none");
                        continue;
                    }
                    Assert.Equal(x.Shape, y.Shape);
                    AssertSame(x, y, $"{name} layer {l} {t}");
                }
            }
        }

        // The backward from the paired clean pass reads only its own tensors: same gradients at every site.
        using var dLogits = CpuBackend.Instance.Upload(Enumerable.Range(0, (int)aloneClean.Logits!.Length).Select(i => (float)Math.Sin(i)).ToArray(),
            aloneClean.Logits.Shape);
        using var gAlone = model.Backward(aloneClean, dLogits, BackwardRules.RelP, AllSites);
        using var gPaired = model.Backward(pairedClean, dLogits, BackwardRules.RelP, AllSites);
        foreach (var s in AllSites)
            for (int l = 0; l < weights.Config.Layers; l++) AssertSame(gAlone.Get(s, l), gPaired.Get(s, l), $"gradient {s} layer {l}");
    }

    [Theory, MemberData(nameof(Models))]
    public void ScoresEqualSeparateForwardsBitForBit(string which)
    {
        var weights = Weights(which);
        using var model = new Llama(weights, CpuBackend.Instance);
        var task = RandomTasks.Pairs(13, weights.Config.VocabSize, seed: 9);
        foreach (var method in new[] { AttributionMethod.AtP, AttributionMethod.RelP, AttributionMethod.IG, AttributionMethod.IGInputs })
            foreach (int batch in new[] { 8, 5 })   // 5: a last batch of 3, split in halves on the small model
                foreach (var sites in new[] { AllSites, [NodeSite.MlpAct, NodeSite.Resid] })   // the patch pass keeps only these
                {
                    var options = new AttributionOptions { Method = method, BatchSize = batch, Sites = sites, IgSteps = 2 };
                    var paired = Attributor.Score(model, task, options);
                    var separate = Attributor.ScoreWithPairing(model, task, options, null, pairForwards: false);
                    foreach (var s in sites)
                        for (int l = 0; l < weights.Config.Layers; l++)
                        {
                            var x = separate.Get(s, l);
                            var y = paired.Get(s, l);
                            Assert.Equal(x.Length, y.Length);
                            Assert.Contains(x, v => v != 0f);
                            for (int i = 0; i < x.Length; i++)
                                if (BitConverter.SingleToInt32Bits(x[i]) != BitConverter.SingleToInt32Bits(y[i]))
                                    Assert.Fail($"{which} {method} batch {batch} {s} layer {l} [{i}]: paired {y[i]:R}, separate {x[i]:R}");
                        }
                }
    }

    /// <summary>
    /// The bf16 CPU math mode (the AVX-512 BF16 kernel where the CPU has it) on the bundled model converted to bf16: the
    /// paired forward, with its shared patch prefix, scores bit for bit as separate forwards.
    /// </summary>
    [Fact]
    public void Bf16MathScoresEqualSeparateForwardsBitForBit()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"nt-paired-bf16-{Environment.ProcessId}-{Guid.NewGuid():N}");
        try
        {
            HfFolderWriter.Write(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, dir, null, FloatEncoding.BF16);
            var weights = HfFolderFormat.Load(dir);
            using var model = new Llama(weights, CpuBackend.Bf16Math);
            // 10-16 tokens in batches of 4: 40-64 rows, the packed (instruction) path.
            var task = RandomTasks.Pairs(8, weights.Config.VocabSize, seed: 5, minLen: 10, maxLen: 16);
            var clean = new TokenBatch(task.Pairs.Take(4).Select(p => p.CleanIds).ToList());
            var patch = new TokenBatch(task.Pairs.Take(4).Select(p => p.PatchIds!).ToList());
            Assert.True(PairedForward.Applies(model, clean.Rows) && PairedForward.SharedPrefix.Of(clean, patch) is not null,
                "the pairing and its shared prefix must apply for this test to mean anything");
            var options = new AttributionOptions { Method = AttributionMethod.RelP, BatchSize = 4, Sites = AllSites };
            var paired = Attributor.Score(model, task, options);
            var separate = Attributor.ScoreWithPairing(model, task, options, null, pairForwards: false);
            foreach (var s in AllSites)
                for (int l = 0; l < weights.Config.Layers; l++)
                {
                    var x = separate.Get(s, l);
                    var y = paired.Get(s, l);
                    Assert.Contains(x, v => v != 0f);
                    for (int i = 0; i < x.Length; i++)
                        if (BitConverter.SingleToInt32Bits(x[i]) != BitConverter.SingleToInt32Bits(y[i]))
                            Assert.Fail($"bf16 math {s} layer {l} [{i}]: paired {y[i]:R}, separate {x[i]:R}");
                }
        }
        finally
        {
            GC.Collect(); GC.WaitForPendingFinalizers();   // the mapped weights hold the file open until finalized
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>Without logits (a sparsely seeded backward never reads them) the clean pass backpropagates as with them.</summary>
    [Fact]
    public void CleanPassWithoutLogitsGivesTheSameSparseBackward()
    {
        var weights = WideRandom();
        using var model = new Llama(weights, CpuBackend.Instance);
        var task = RandomTasks.Pairs(8, weights.Config.VocabSize, seed: 5);
        var clean = new TokenBatch(task.Pairs.Select(p => p.CleanIds).ToList());
        var patch = new TokenBatch(task.Pairs.Select(p => p.PatchIds!).ToList());
        var (wc, wp) = PairedForward.Run(model, clean, patch, AllSites);
        var (nc, np) = PairedForward.Run(model, clean, patch, AllSites, logits: false);
        using var withClean = wc; using var withPatch = wp; using var noClean = nc; using var noPatch = np;
        Assert.NotNull(withClean.Logits);
        Assert.Null(noClean.Logits);
        Assert.Throws<InvalidOperationException>(() => noClean.HostLogits());
        AssertSame(withClean.FinalInput!, noClean.FinalInput!, "final input");
        // Two terms per row (a logit difference), one row with none.
        int[] tokens = [.. Enumerable.Range(0, 2 * clean.Size).Select(i => i < 2 ? -1 : (i * 37) % weights.Config.VocabSize)];
        float[] signs = [.. Enumerable.Range(0, 2 * clean.Size).Select(i => i % 2 == 0 ? 1f : -1f)];
        using var gWith = model.Backward(withClean, LogitGradient.Sparse(tokens, signs, 2), BackwardRules.RelP, AllSites);
        using var gNo = model.Backward(noClean, LogitGradient.Sparse(tokens, signs, 2), BackwardRules.RelP, AllSites);
        foreach (var s in AllSites)
            for (int l = 0; l < weights.Config.Layers; l++)
            {
                Assert.Contains(gWith.Get(s, l).Span.ToArray(), v => v != 0f);
                AssertSame(gWith.Get(s, l), gNo.Get(s, l), $"gradient {s} layer {l}");
            }
    }

    [Fact]
    public void FewRowsOnTheCpuRunApart()
    {
        using var model = new Llama(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, CpuBackend.Instance);
        // 16 rows take the few-row kernel and 32 the packed one, whose sums run in another order: no pairing there.
        Assert.False(PairedForward.Applies(model, 16));
        Assert.True(PairedForward.Applies(model, 17));
        Assert.Throws<ArgumentException>(() => PairedForward.Run(model, new TokenBatch([[1, 5, 6]]), new TokenBatch([[1, 5]]), AllSites));
    }

    [Fact]
    public void LargeRowGathersSpreadOverCoresCopyTheSameRows()
    {
        // 300 rows of 2048: past the threshold where the split and the shared-prefix expansion copy rows on every core.
        var be = CpuBackend.Instance;
        int rows = 300, width = 2048;
        var values = new float[rows * width];
        var random = new Random(5);
        for (int i = 0; i < values.Length; i++) values[i] = (float)random.NextDouble();
        using var source = be.Upload(values, rows, width);
        var index = Enumerable.Range(0, rows).Select(i => (i * 7 + 3) % rows).ToArray();   // every row, out of order
        using var parallel = be.Allocate(rows, width);
        using var serial = be.Allocate(rows, width);
        Assert.True((long)rows * width >= 1 << 19, "the gather must be large enough to take the multi-core path");
        PairedForward.GatherRows(be, source, index, parallel);
        be.GatherRows(source, index, serial);
        AssertSame(serial, parallel, "gathered rows");
        for (int i = 0; i < rows; i++) Assert.Equal(values[index[i] * width + 17], parallel.Span[i * width + 17]);
        using var small = be.Allocate(2, width);
        Assert.Throws<ArgumentOutOfRangeException>(() => PairedForward.GatherRows(be, source, [0, rows], small));

        // The inverse: scattered back by the same index, the gathered rows give the source again, and a scatter of a
        // few rows leaves the destination's other rows as they were; a row past the destination is refused.
        using var back = be.Allocate(rows, width);
        PairedForward.ScatterRows(parallel, index, back);
        AssertSame(source, back, "scattered rows");
        using var two = be.Upload(values.AsSpan(0, 2 * width).ToArray(), 2, width);
        PairedForward.ScatterRows(two, [5, 1], back);
        for (int j = 0; j < width; j += 97)
        {
            Assert.Equal(values[j], back.Span[5 * width + j]);
            Assert.Equal(values[width + j], back.Span[width + j]);
            Assert.Equal(values[2 * width + j], back.Span[2 * width + j]);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => PairedForward.ScatterRows(two, [0, rows], back));
    }

    static void AssertSame(Tensor expected, Tensor actual, string what)
    {
        var x = expected.Span;
        var y = actual.Span;
        Assert.True(x.Length == y.Length, $"{what}: {y.Length} values, expected {x.Length}");
        for (int i = 0; i < x.Length; i++)
            if (BitConverter.SingleToInt32Bits(x[i]) != BitConverter.SingleToInt32Bits(y[i]))
                Assert.Fail($"{what} [{i}]: paired {y[i]:R}, separate {x[i]:R}");
    }
}
