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
/// A backward over some rows only (<see cref="BackwardRows"/>: each prompt from a first position to its last token) must
/// give, at those rows, the gradients of the full backward bit for bit, and zero at every other row; the scores
/// AtP and RelP add from it must equal those of the full backward (<see cref="AttributionOptions.ComputeEveryRow"/>)
/// bit for bit.
/// </summary>
public class BackwardRowsTests
{
    static readonly NodeSite[] AllSites = PairedForwardTests.AllSites;

    public static TheoryData<string> Models() => new() { "stories260K", "wide", "stories260K-bf16" };

    /// <summary>The model, and a folder to delete afterwards (the bf16 copy of the bundled model), or null.</summary>
    static (Llama Model, string? Folder) Open(string which)
    {
        if (which == "wide") return (new Llama(PairedForwardTests.WideRandom(), CpuBackend.Instance), null);
        var weights = ModelLoader.Load(RepoPaths.Stories260KBin).Weights;
        if (which == "stories260K") return (new Llama(weights, CpuBackend.Instance), null);
        string dir = Path.Combine(Path.GetTempPath(), $"nt-backward-rows-{Environment.ProcessId}-{Guid.NewGuid():N}");
        HfFolderWriter.Write(weights, dir, null, FloatEncoding.BF16);
        return (new Llama(HfFolderFormat.Load(dir), CpuBackend.Bf16Math), dir);
    }

    static void Delete(string? dir)
    {
        if (dir is null) return;
        GC.Collect(); GC.WaitForPendingFinalizers();   // the mapped weights hold the file open until finalized
        try { Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>Prompts of 10-16 tokens (padding in most), patched at a random position: 40-64 rows per batch of 4.</summary>
    static PromptTask Task(Llama model, int count, int seed) => RandomTasks.Pairs(count, model.Config.VocabSize, seed, minLen: 10, maxLen: 16);

    [Theory, MemberData(nameof(Models))]
    public void ComputedRowsEqualTheFullBackwardAndTheOthersReadZero(string which)
    {
        var (model, dir) = Open(which);
        try
        {
            using var _ = model;
            var task = Task(model, 4, seed: 3);
            var clean = new TokenBatch(task.Pairs.Select(p => p.CleanIds).ToList());
            var first = BackwardRows.FirstDifferences(task.Pairs.Select(p => p.CleanIds).ToList(), task.Pairs.Select(p => p.PatchIds!).ToList());
            var rows = BackwardRows.From(clean, first)!;
            Assert.NotNull(rows);
            Assert.True(rows.AppliesTo(model), $"{rows.Computed.Length} of {clean.Rows} rows: the compact backward must apply for this test to mean anything");
            // Hand-derived: prompt b's rows first[b] .. length − 1, in order.
            Assert.Equal(Enumerable.Range(0, clean.Size).SelectMany(b => Enumerable.Range(b * clean.SeqLen + first[b], clean.Lengths[b] - first[b])), rows.Computed);

            using var pass = model.Forward(clean, LogitRows.Last);
            int v = model.Config.VocabSize;
            float[] tokens = new float[clean.Size * v];
            for (int b = 0; b < clean.Size; b++) { tokens[b * v + 7] = 1f; tokens[b * v + 12] = -1f; }
            using var dLogits = CpuBackend.Instance.Upload(tokens, clean.Size, v);
            foreach (var rules in new[] { BackwardRules.RelP, BackwardRules.Exact })
            {
                var full = Collect(model, pass, dLogits, rules, null);
                var part = Collect(model, pass, dLogits, rules, rows);
                var computed = rows.Computed.ToHashSet();
                bool skippedNonZero = false;
                foreach (var ((site, layer), g) in full)
                {
                    var h = part[(site, layer)];
                    int w = site.Width(model.Config);
                    Assert.Contains(g, x => x != 0f);
                    for (int r = 0; r < clean.Rows; r++)
                        for (int i = 0; i < w; i++)
                        {
                            float expected = computed.Contains(r) ? g[r * w + i] : 0f;
                            skippedNonZero |= !computed.Contains(r) && g[r * w + i] != 0f;
                            if (BitConverter.SingleToInt32Bits(expected) != BitConverter.SingleToInt32Bits(h[r * w + i]) && !(expected == 0f && h[r * w + i] == 0f))
                                Assert.Fail($"{which} {rules} {site} layer {layer} row {r} [{i}]: rows {h[r * w + i]:R}, expected {expected:R}");
                        }
                }
                // The rows left out carry real gradients in the full backward: the zeros above are not what it computes there.
                Assert.True(skippedNonZero, "no row left out has a non-zero gradient in the full backward");
            }
        }
        finally { Delete(dir); }
    }

    static Dictionary<(NodeSite, int), float[]> Collect(Llama model, ForwardPass pass, Tensor dLogits, BackwardRules rules, BackwardRows? rows)
    {
        var got = new Dictionary<(NodeSite, int), float[]>();
        model.Backward(pass, LogitGradient.FromDense(dLogits), rules, AllSites, (s, l, g) =>
        {
            var h = new float[g.Length];
            CpuBackend.Instance.Download(g, h);
            got[(s, l)] = h;
        }, rows: rows);
        Assert.Equal(AllSites.Length * model.Config.Layers, got.Count);
        return got;
    }

    [Theory, MemberData(nameof(Models))]
    public void ScoresEqualTheFullBackwardsBitForBit(string which)
    {
        var (model, dir) = Open(which);
        try
        {
            using var _ = model;
            var task = Task(model, 12, seed: 8);
            foreach (var method in new[] { AttributionMethod.AtP, AttributionMethod.RelP })
                foreach (var baseline in new Baseline?[] { null, Baseline.Zero })   // the patch: its shared prefix left out; zero: padding only
                {
                    var options = new AttributionOptions { Method = method, BatchSize = 4, Sites = AllSites, Baseline = baseline };
                    var rows = Attributor.Score(model, task, options);
                    var every = Attributor.Score(model, task, options with { ComputeEveryRow = true });
                    foreach (var s in AllSites)
                        for (int l = 0; l < model.Config.Layers; l++)
                        {
                            var x = every.Get(s, l);
                            var y = rows.Get(s, l);
                            Assert.Equal(x.Length, y.Length);
                            Assert.Contains(x, v => v != 0f);
                            for (int i = 0; i < x.Length; i++)
                                if (BitConverter.SingleToInt32Bits(x[i]) != BitConverter.SingleToInt32Bits(y[i]) && !(x[i] == 0f && y[i] == 0f))
                                    Assert.Fail($"{which} {method} {baseline?.ToString() ?? "patch"} {s} layer {l} [{i}]: rows {y[i]:R}, every row {x[i]:R}");
                        }
                }
        }
        finally { Delete(dir); }
    }

    /// <summary>
    /// The paired forward's top layer on the prompts' last rows (<see cref="PairedForward.TopLayerRows"/>): every layer
    /// below, and the top layer at the last rows of both halves, equal the full paired forward bit for bit; the logits'
    /// inputs too.
    /// </summary>
    [Theory, MemberData(nameof(Models))]
    public void TopLayerOnTheLastRowsEqualsTheFullLayerThere(string which)
    {
        var (model, dir) = Open(which);
        try
        {
            using var _ = model;
            var task = Task(model, 4, seed: 6);
            var clean = new TokenBatch(task.Pairs.Select(p => p.CleanIds).ToList());
            var patch = new TokenBatch(task.Pairs.Select(p => p.PatchIds!).ToList());
            Assert.True(PairedForward.Applies(model, clean.Rows), "the pairing must apply for this test to mean anything");
            var (fc, fp) = PairedForward.Run(model, clean, patch, AllSites);
            var (tc, tp) = PairedForward.Run(model, clean, patch, AllSites, lastRowsAtTop: true);
            using var fullClean = fc; using var fullPatch = fp; using var topClean = tc; using var topPatch = tp;
            Same(fullClean.FinalInput!, topClean.FinalInput!, clean.Size, r => r, "final input");
            int top = model.Config.Layers - 1;
            foreach (var (full, part, batch, half) in new[] { (fullClean, topClean, clean, "clean"), (fullPatch, topPatch, patch, "patch") })
                for (int l = 0; l <= top; l++)
                    foreach (var site in AllSites)
                    {
                        Tensor f = full.Site(site, l), t = part.Site(site, l);
                        // Below the top layer every row; at the top layer each prompt's last row.
                        if (l < top) Same(f, t, batch.Rows, r => r, $"{half} layer {l} {site}");
                        else Same(f, t, batch.Size, batch.LastRow, $"{half} top layer {site}");
                    }
            // Fewer rows than the layer's products: the last rows padded to a multiple of 16, at least 17.
            var both = new TokenBatch([.. task.Pairs.Select(p => p.CleanIds), .. task.Pairs.Select(p => p.PatchIds!)]);
            int hidden = model.Config.HiddenDim;
            var rows = PairedForward.TopLayerRows(both, both.Rows, hidden)!;
            Assert.Equal(32, rows.Length);
            Assert.Subset(rows.ToHashSet(), both.LastRows().ToHashSet());
            Assert.Null(PairedForward.TopLayerRows(both, 32, hidden));   // no fewer than the products take: nothing saved
            // A full layer whose SwiGLU ends in a scalar tail (rows × hidden not a multiple of 16): not left out.
            Assert.Null(PairedForward.TopLayerRows(both, 97, 172));
            Assert.NotNull(PairedForward.TopLayerRows(both, 96, 172));
        }
        finally { Delete(dir); }
    }

    // Rows row(0) .. row(count - 1) of two [rows, width] tensors, bit for bit.
    static void Same(Tensor expected, Tensor actual, int count, Func<int, int> row, string what)
    {
        var x = expected.Span;
        var y = actual.Span;
        Assert.Equal(x.Length, y.Length);
        int width = expected.Columns;
        for (int i = 0; i < count; i++)
            for (int j = 0; j < width; j++)
            {
                float a = x[row(i) * width + j], b = y[row(i) * width + j];
                if (BitConverter.SingleToInt32Bits(a) != BitConverter.SingleToInt32Bits(b) && !(a == 0f && b == 0f))
                    Assert.Fail($"{what} row {row(i)} [{j}]: last rows at the top {b:R}, full {a:R}");
            }
    }

    [Fact]
    public void RowsAreLeftOutOnlyWhereTheProductsKeepTheirArithmetic()
    {
        using var model = new Llama(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, CpuBackend.Instance);
        // Input-gradient products of 8 rows or fewer take the few-row kernel, whose sums run in another order.
        var batch = new TokenBatch([[1, 5, 6, 7, 8, 9, 10, 11], [1, 5, 6, 7, 8, 9, 10, 11]]);
        var eight = BackwardRows.From(batch, [4, 4])!;
        var nine = BackwardRows.From(batch, [4, 3])!;
        Assert.Equal(8, eight.Computed.Length);
        Assert.False(eight.AppliesTo(model));
        Assert.Equal(9, nine.Computed.Length);
        Assert.True(nine.AppliesTo(model));
        // Every row asked for: nothing to leave out. A first position past the prompt leaves all of it out.
        Assert.Null(BackwardRows.From(batch, [0, 0]));
        Assert.Equal(Enumerable.Range(8, 8), BackwardRows.From(batch, [8, 0])!.Computed);
        Assert.Throws<ArgumentOutOfRangeException>(() => BackwardRows.From(batch, [-1, 0]));
        Assert.Throws<ArgumentException>(() => BackwardRows.From(batch, [0]));
        // The top layer's MLP and W_o: the logit rows, then the first other computed rows up to 9 (the packed kernel).
        var three = new TokenBatch([[1, 5, 6, 7, 8, 9, 10, 11], [1, 5, 6, 7, 8, 9, 10, 11], [1, 5, 6, 7, 8, 9, 10, 11]]);
        var rows = BackwardRows.From(three, [0, 0, 4])!;
        Assert.Equal([0, 1, 2, 3, 4, 5, 7, 15, 23], rows.TopLayer([7, 15, 23]).Computed);
        Assert.Same(nine, nine.TopLayer([7, 15]));   // 9 rows already: nothing to leave out
        Assert.Equal([2, 3, 0], BackwardRows.FirstDifferences([[1, 2, 3], [1, 2, 3], [4]], [[1, 2, 4], [1, 2, 3], [5]]));
    }
}
