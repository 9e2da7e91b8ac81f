using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using Xunit.Abstractions;
using NeuronTrace.Tracing.Edges;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>CLJA edges (docs/method.md §6.2): the multi-right-hand-side Jacobian against single backwards and finite differences, and a planted path.</summary>
public class EdgeTests(ITestOutputHelper output)
{
    static readonly int[] Prompt = [1, 7, 3, 12, 5];

    static LlamaWeights ThreeLayers() => RandomLlama.Create(RandomLlama.SmallConfig() with { Layers = 3 }, seed: 11);

    static readonly (int Row, int Unit)[] Targets = [(4, 0), (4, 5), (3, 2), (2, 9), (4, 17), (1, 3), (0, 23)];

    [Theory]
    [InlineData(0, 2)]
    [InlineData(1, 2)]
    [InlineData(0, 1)]
    public void ChunkedJacobianEqualsSingleBackwardsAndFiniteDifferences(int src, int tgt)
    {
        using var model = new Llama(ThreeLayers(), CpuBackend.Instance);
        var c = model.Config;
        int T = Prompt.Length, H = c.HiddenDim;

        float[][] single;
        using (var one = new EdgeJacobian(model, Prompt, 1)) single = one.Compute(src, tgt, Targets, BackwardRules.Exact, chunk: 1);
        var fd = FiniteDifferences(model, src, tgt);
        double scale = fd.SelectMany(r => r).Max(v => Math.Abs(v));
        double worstFd = MaxDiff(single, fd);
        output.WriteLine($"src {src} tgt {tgt}: max |J| {scale:G3}, single-RHS vs FD max abs diff {worstFd:G3}");
        Assert.True(scale > 1e-3, "the Jacobian should not vanish");
        Assert.True(worstFd < 2e-3 * Math.Max(1, scale), $"single-RHS vs finite differences differ by {worstFd}");

        foreach (int chunk in new[] { 2, 3, 7 })
        {
            using var jac = new EdgeJacobian(model, Prompt, chunk);
            var multi = jac.Compute(src, tgt, Targets, BackwardRules.Exact, chunk);
            double d = MaxDiff(multi, single);
            output.WriteLine($"  chunk {chunk}: multi-RHS vs single-RHS max abs diff {d:G3}, backwards {jac.Backwards}");
            Assert.True(d < 1e-5, $"chunk {chunk}: multi-RHS differs from single-RHS by {d}");
            Assert.Equal((Targets.Length + chunk - 1) / chunk, jac.Backwards);
        }
    }

    [Fact]
    public void StoppingTheIntermediateMlpChangesTheJacobian()
    {
        using var model = new Llama(ThreeLayers(), CpuBackend.Instance);
        using var jac = new EdgeJacobian(model, Prompt, Targets.Length);
        var stopped = jac.Compute(0, 2, Targets, BackwardRules.Exact);
        var total = jac.Compute(0, 2, Targets, BackwardRules.Exact, stopIntermediate: false);
        Assert.True(MaxDiff(stopped, total) > 1e-4, "the layer-1 MLP should carry some effect that the stop removes");
    }

    [Fact]
    public void ChunkingDoesNotChangeTracedEdges()
    {
        using var model = new Llama(ThreeLayers(), CpuBackend.Instance);
        var task = new PromptTask("random", [new PromptPair(1, Prompt, [1, 7, 4, 12, 5], 3, 9), new PromptPair(2, [1, 2, 3], [1, 2, 8], 4, 5)]);
        var neurons = new List<EdgeEnd>();
        for (int l = 0; l < 3; l++)
            for (int p = 0; p < 3; p++)
                for (int u = l; u < 24; u += 5) neurons.Add(EdgeEnd.Neuron(l, p, u));
        var a = EdgeTracer.Trace(model, task, neurons, new EdgeOptions { Chunk = 1 });
        var b = EdgeTracer.Trace(model, task, neurons, new EdgeOptions { Chunk = 4 });
        var e = EdgeTracer.Trace(model, task, neurons, new EdgeOptions { Chunk = 100 });
        Assert.Equal(a.Edges.Count, b.Edges.Count);
        Assert.Equal(a.Edges.Count, e.Edges.Count);
        double worst = 0, maxF = a.Edges.Max(x => Math.Abs(x.FinalAttr));
        for (int i = 0; i < a.Edges.Count; i++)
        {
            Assert.Equal(a.Edges[i].Source, b.Edges[i].Source);
            Assert.Equal(a.Edges[i].Target, e.Edges[i].Target);
            foreach (var other in new[] { b, e })
                worst = Math.Max(worst, Math.Abs(a.Edges[i].FinalAttr - other.Edges[i].FinalAttr) / maxF);
        }
        output.WriteLine($"{a.Edges.Count} edges; chunk 1 vs 4 vs 100: max |F| diff / max |F| {worst:G3}");
        Assert.True(worst < 1e-5, $"chunking changed F by {worst}");
    }

    /// <summary>
    /// Layer-0 neuron 0 fires on token 3 and writes residual dimension 5; layer-1 neuron 2 reads only dimension 5 and
    /// writes dimension 6 (logit 6). Attention is off, so the residual stream is the only path between them. Other
    /// neurons read and write dimensions 8..11.
    /// </summary>
    [Fact]
    public void PlantedResidualPathIsTheLargestEdge()
    {
        const int Dim = 12, Hidden = 8, Vocab = 12;
        var c = new LlamaConfig { Dim = Dim, HiddenDim = Hidden, Layers = 2, Heads = 2, KvHeads = 1, VocabSize = Vocab, MaxSeqLen = 16, RopeLayout = RopeLayout.Interleaved };
        var rng = new Random(3);
        float[] Ones(int n) { var a = new float[n]; Array.Fill(a, 1f); return a; }
        var emb = new float[Vocab * Dim];
        for (int t = 0; t < Vocab; t++) emb[t * Dim + t] = 1f;
        LayerWeights Layer(int layer)
        {
            var w1 = new float[Hidden * Dim]; var w3 = new float[Hidden * Dim]; var w2 = new float[Dim * Hidden];
            for (int n = 3; n < Hidden; n++)
            {
                int reads = 8 + rng.Next(4), writes = 8 + rng.Next(4);
                w1[n * Dim + reads] = 1f + (float)rng.NextDouble(); w3[n * Dim + reads] = 1f + (float)rng.NextDouble();
                w2[writes * Hidden + n] = 0.5f;
            }
            if (layer == 0) { w1[0 * Dim + 3] = 4f; w3[0 * Dim + 3] = 4f; w2[5 * Hidden + 0] = 1f; }   // token 3 → dim 5
            else { w1[2 * Dim + 5] = 4f; w3[2 * Dim + 5] = 4f; w2[6 * Hidden + 2] = 1f; }               // dim 5 → logit 6
            return new LayerWeights
            {
                AttnNorm = Ones(Dim), FfnNorm = Ones(Dim),
                Wq = new float[Dim * Dim], Wk = new float[c.KvDim * Dim], Wv = new float[c.KvDim * Dim], Wo = new float[Dim * Dim],
                W1 = w1, W2 = w2, W3 = w3,
            };
        }
        var cls = new float[Vocab * Dim];
        for (int t = 0; t < Vocab; t++) cls[t * Dim + t] = 1f;
        var weights = new LlamaWeights { Config = c, TokenEmbedding = emb, FinalNorm = Ones(Dim), Classifier = cls, Layers = [Layer(0), Layer(1)] };
        using var model = new Llama(weights, CpuBackend.Instance);
        var task = new PromptTask("planted", new[] { 8, 9, 10, 11 }.Select((x, i) => new PromptPair(i + 1, [1, x, 3], [1, x, 4], 6, 7)).ToList());
        var neurons = new List<EdgeEnd>();
        for (int l = 0; l < 2; l++)
            for (int p = 0; p < 2; p++)
                for (int u = 0; u < Hidden; u++) neurons.Add(EdgeEnd.Neuron(l, p, u));
        var graph = EdgeTracer.Trace(model, task, neurons, new EdgeOptions { Chunk = 5 });
        var ranked = graph.NeuronEdges.OrderByDescending(e => Math.Abs(e.FinalAttr)).ToList();
        foreach (var e in ranked.Take(3)) output.WriteLine($"{e.Source} -> {e.Target}: w {e.Weight:G4}, F {e.FinalAttr:G4}");
        var planted = ranked[0];
        Assert.Equal(EdgeEnd.Neuron(0, 0, 0), planted.Source);
        Assert.Equal(EdgeEnd.Neuron(1, 0, 2), planted.Target);
        Assert.True(planted.Weight > 0.1, $"planted weight {planted.Weight}");
        Assert.True(Math.Abs(ranked[1].FinalAttr) < 0.01 * Math.Abs(planted.FinalAttr), $"second edge {ranked[1].Source} -> {ranked[1].Target} F {ranked[1].FinalAttr}");
        // The endpoint edges exist: token 3 at the last position feeds the planted layer-0 neuron, the layer-1 neuron feeds the logits.
        var emb0 = graph.Edges.Where(e => e.Source.Kind == EdgeEndKind.Embedding && e.Target == EdgeEnd.Neuron(0, 0, 0)).MaxBy(e => Math.Abs(e.FinalAttr));
        Assert.Equal(0, emb0.Source.Position);
        var toLogit = graph.Edges.Where(e => e.Target.Kind == EdgeEndKind.Logit).MaxBy(e => Math.Abs(e.FinalAttr));
        Assert.Equal(EdgeEnd.Neuron(1, 0, 2), toLogit.Source);
    }

    [Fact]
    public void BackwardFromTheLastResidualEqualsTheLogitBackward()
    {
        using var model = new Llama(ThreeLayers(), CpuBackend.Instance);
        var be = CpuBackend.Instance;
        var c = model.Config;
        using var pass = model.Forward(new TokenBatch([Prompt, [1, 4, 9]]), LogitRows.Last);
        var g = new float[2 * c.VocabSize];
        g[3] = 1f; g[c.VocabSize + 8] = -1f;
        using var dLogits = be.Upload(g, 2, c.VocabSize);
        using var full = model.Backward(pass, dLogits, BackwardRules.RelP, [NodeSite.MlpAct, NodeSite.Resid]);
        using var fromSite = model.BackwardFromSite(pass, NodeSite.Resid, c.Layers - 1, full.Get(NodeSite.Resid, c.Layers - 1), BackwardRules.RelP, [NodeSite.MlpAct]);
        double worst = 0;
        for (int l = 0; l < c.Layers; l++)
        {
            var a = full.Host(NodeSite.MlpAct, l); var b = fromSite.Host(NodeSite.MlpAct, l);
            for (int i = 0; i < a.Length; i++) worst = Math.Max(worst, Math.Abs(a[i] - b[i]));
        }
        Assert.True(worst < 1e-6, $"differ by {worst}");
    }

    [Fact]
    public void SweepKeepsNeuronsWithAnIncomingAndAnOutgoingEdge()
    {
        var n = Enumerable.Range(0, 4).Select(l => EdgeEnd.Neuron(l, 0, 0)).ToList();
        var edges = new List<Edge> { new(n[0], n[1], 1, 5, 1), new(n[1], n[2], 1, 4, 1), new(n[2], n[3], 1, 3, 1), new(n[0], n[3], 1, 0.1, 1) };
        var graph = new EdgeGraph(n, edges, 4, HasEndpointEdges: false, 1, "m");
        // No endpoint edges: layer 0 counts as fed by the embeddings, layer 3 as feeding the logits.
        Assert.Equal([n[0]], EdgeSweep.KeptNeurons(graph, edges, 1).OrderBy(x => x.Layer));
        Assert.Equal([n[0], n[1]], EdgeSweep.KeptNeurons(graph, edges, 2).OrderBy(x => x.Layer));
        Assert.Equal(n, EdgeSweep.KeptNeurons(graph, edges, 3).OrderBy(x => x.Layer));
        Assert.Empty(EdgeSweep.KeptNeurons(graph, edges, 0));
        // With endpoint edges the rule is literal: n[0] has no incoming edge here.
        var withEnds = graph with { HasEndpointEdges = true };
        Assert.Equal([n[1], n[2]], EdgeSweep.KeptNeurons(withEnds, edges, 4).OrderBy(x => x.Layer));
    }

    /// <summary>
    /// Central differences of a_tgt w.r.t. a_src at every (row, unit), with the MLP outputs of the layers strictly
    /// between frozen to their clean values (scale 0, offset = clean), all perturbations in one batched forward.
    /// </summary>
    static float[][] FiniteDifferences(Llama model, int src, int tgt)
    {
        var be = CpuBackend.Instance;
        var c = model.Config;
        int T = Prompt.Length, H = c.HiddenDim, d = c.Dim, n = T * H;
        const float h = 1e-2f;
        using var clean = model.Forward(new TokenBatch([Prompt]), LogitRows.None);
        var batch = new TokenBatch(Enumerable.Repeat(Prompt, 2 * n).ToList());
        using var plan = new InterventionPlan();
        var scale = new float[batch.Rows * H]; Array.Fill(scale, 1f);
        var offset = new float[batch.Rows * H];
        for (int i = 0; i < n; i++)
        {
            offset[(2 * i) * n + i] = h;
            offset[(2 * i + 1) * n + i] = -h;
        }
        plan.Set(NodeSite.MlpAct, src, be.Upload(scale, batch.Rows, H), be.Upload(offset, batch.Rows, H));
        for (int l = src + 1; l < tgt; l++)
        {
            var cleanOut = clean.HostSite(NodeSite.MlpOut, l);
            var off = new float[batch.Rows * d];
            for (int r = 0; r < 2 * n; r++) cleanOut.CopyTo(off, r * T * d);
            plan.Set(NodeSite.MlpOut, l, be.Upload(new float[batch.Rows * d], batch.Rows, d), be.Upload(off, batch.Rows, d));
        }
        using var pass = model.Forward(batch, LogitRows.None, plan);
        var a = pass.HostSite(NodeSite.MlpAct, tgt);
        var result = new float[Targets.Length][];
        for (int k = 0; k < Targets.Length; k++)
        {
            result[k] = new float[n];
            int at = Targets[k].Row * H + Targets[k].Unit;
            for (int i = 0; i < n; i++) result[k][i] = (a[(2 * i) * n + at] - a[(2 * i + 1) * n + at]) / (2 * h);
        }
        return result;
    }

    static double MaxDiff(float[][] x, float[][] y)
    {
        double m = 0;
        for (int k = 0; k < x.Length; k++)
            for (int i = 0; i < x[k].Length; i++) m = Math.Max(m, Math.Abs(x[k][i] - y[k][i]));
        return m;
    }
}
