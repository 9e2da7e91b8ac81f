using System.Text.Json.Nodes;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Edges;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Sae;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Sharding;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Tracing.View;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// The facade calls behind <c>generate</c>, <c>attribute --metric top-logits / --sae / --shard</c>, <c>trace --sae / --shard</c>,
/// <c>edges</c>, <c>export</c> and <c>view</c>, each against the library path those commands ran before the facade (the
/// library called on a model built by hand), on the bundled stories260K: equal token for token, bit for bit, byte for byte.
/// </summary>
[Collection("console")]
public class TracedModelCommandsTests(SmallRunFixture run) : IClassFixture<SmallRunFixture>
{
    static string Sae(string name) => Path.Combine(RepoPaths.Fixtures, "sae", name);

    /// <summary>A second model of the same file, built as the commands built theirs before the facade: the "before" side.</summary>
    static (LoadedModel Loaded, Llama Llama) Direct()
    {
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        return (loaded, new Llama(loaded.Weights, CpuBackend.Instance));
    }

    [Fact]
    public void GenerateIsTheGreedyGeneratorOnTheSameIds()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var (_, llama) = Direct();
        using var _l = llama;
        var ids = model.Tokenizer.Encode("Once upon a time", addBos: true);
        var streamed = new List<int>();
        var facade = model.Generate(ids, 40, streamed.Add);
        var direct = GreedyGenerator.Generate(llama, ids, 40);
        Assert.Equal(direct, facade);
        Assert.True(facade.Count > ids.Length + 10, $"{facade.Count} tokens");
        Assert.Equal(direct.Skip(ids.Length), streamed);
        Assert.Throws<ArgumentException>(() => model.Generate([], 4));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => model.Generate(ids, 40, cancellation: cancelled.Token));
    }

    [Fact]
    public void TopLogitsMetricAttributesAsSumOfTopKLogits()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var task = model.LoadTask("pronoun_gender").Take(8);
        var (_, llama) = Direct();
        using var _l = llama;
        var o = new AttributionOptions { Method = AttributionMethod.AtP, Sites = [NodeSite.MlpAct, NodeSite.Resid] };
        var facade = model.Attribute(task, o.Method, o.Sites, o with { Metric = model.TopLogitsMetric(task, 5) });
        var direct = Attributor.Score(llama, task, o with { Metric = Metric.SumOfTopKLogits(llama, task, 5) });
        Assert.Equal(model.TopLogitsMetric(task, 5).Name, Metric.SumOfTopKLogits(llama, task, 5).Name);
        foreach (var site in o.Sites)
            for (int l = 0; l < model.Config.Layers; l++) Assert.Equal(direct.Get(site, l), facade.Get(site, l));
        // The metric is not the default one: its scores differ from the logit difference's.
        var plain = Attributor.Score(llama, task, o);
        Assert.NotEqual(plain.Get(NodeSite.MlpAct, 2), facade.Get(NodeSite.MlpAct, 2));
    }

    [Fact]
    public void AttributeSaeIsSaeAttributorAtTheHookPoint()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var task = model.LoadTask("pronoun_gender").Take(8);
        var (loaded, llama) = Direct();
        using var _l = llama;
        foreach (var (folder, method) in new[] { (Sae("saelens_topk"), AttributionMethod.AtP), (Sae("resid_2"), AttributionMethod.RelP) })
        {
            var sae = model.LoadSae(folder);
            var (site, layer) = sae.HookSite;
            var o = new AttributionOptions { Method = method, Sites = [NodeSite.MlpAct] };
            var progress = new List<WorkProgress>();
            var facade = model.AttributeSae(task, sae, o, new Progress(progress));
            var direct = SaeAttributor.Score(llama, task, SparseAutoencoder.Load(folder), site, layer, o with { Sites = [site] });
            Assert.Equal(direct.FeatureScores, facade.FeatureScores);
            Assert.Equal(direct.ErrorScores, facade.ErrorScores);
            Assert.Contains(facade.FeatureScores, v => v != 0);
            Assert.Equal(task.Count, progress[^1].Done);
            Assert.All(progress, p => Assert.InRange(p.Done, 1, p.Total));
        }
        // The hook checks of the CLI's --sae: an SAE of a layer this model lacks is refused naming the folder.
        Assert.Equal(model.LoadSae(Sae("resid_2")).HookSite, TracedModel.LoadSae(Sae("resid_2"), loaded.Config).HookSite);
    }

    [Fact]
    public void TraceSaesIsSaeTraceRunOfTheSameTrace()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var task = model.LoadTask("pronoun_gender").Take(16);
        var o = new TraceOptions { Sites = [NodeSite.MlpAct], KPoints = 4, Methods = [AttributionMethod.RelP, AttributionMethod.AtP] };
        var trace = model.Trace(task, o);
        var saes = new[] { model.LoadSae(Sae("saelens_jumprelu")), model.LoadSae(Sae("resid_2")) };
        var facade = model.TraceSaes(trace, saes, o);
        var (_, llama) = Direct();
        using var _l = llama;
        var direct = SaeTrace.Run(llama, trace, saes, o);
        Assert.Equal(4, facade.Count);
        Assert.Equal(direct.Count, facade.Count);
        for (int i = 0; i < direct.Count; i++)
        {
            Assert.Equal(direct[i] with { Sweep = [] }, facade[i] with { Sweep = [] });
            Assert.Equal(direct[i].Sweep, facade[i].Sweep);
        }
    }

    [Fact]
    public void EdgesAndTheirSweepAreEdgeTracerAndEdgeSweep()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var (train, eval) = TracedModel.Split(model.LoadTask("pronoun_gender"));
        var neurons = model.Attribute(train, AttributionMethod.RelP, [NodeSite.MlpAct]).Top(NodeSite.MlpAct, 16)
            .Select(t => EdgeEnd.Neuron(t.Node.Layer, t.Node.Position, t.Node.Index)).ToList();
        var options = new EdgeOptions { Chunk = 5 };
        var graph = model.Edges(eval, neurons, options);
        var sweep = model.EvaluateEdges(graph, eval, masksPerForward: 4);

        var (_, llama) = Direct();
        using var _l = llama;
        var directGraph = EdgeTracer.Trace(llama, eval, neurons, options);
        var means = SiteMeans.Compute(llama, eval.Pairs.Select(p => p.PatchIds ?? p.CleanIds).ToList(), [NodeSite.MlpAct]);
        var directSweep = EdgeSweep.Run(llama, directGraph, eval, means, masksPerForward: 4);
        Assert.Equal(directGraph.ToCsv(), graph.ToCsv());
        Assert.Equal(directSweep, sweep);
        Assert.Contains(graph.NeuronEdges, e => e.FinalAttr != 0);

        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => model.Edges(eval, neurons, options, cancellation: cancelled.Token));
        Assert.Throws<OperationCanceledException>(() => model.EvaluateEdges(graph, eval, cancellation: cancelled.Token));
    }

    [Fact]
    public void ExportGraphIsTheGraphExportBuiltBefore()
    {
        var folder = RunFolder.Open(run.Dir);
        var circuit = folder.ReadCircuit(null, "mlp_act");
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var task = PromptTask.Load(run.TaskPath, model.Tokenizer, requireEqualLengths: false);
        var pair = folder.HeldOut(task, run.TaskPath).Pairs[0];
        var edges = new List<EdgeCsv.Row>();
        var options = new GraphExportOptions { Slug = "g", MaxNodes = 30, Examples = 3, NodeThreshold = 0.8, GeneratorVersion = "test", Source = run.Dir };
        var facade = model.ExportGraph(circuit, task, pair, options);

        // What `export` computed before the facade, on a model of its own.
        var (loaded, llama) = Direct();
        using var _l = llama;
        var tokenizer = loaded.RequireTokenizer();
        var shown = circuit.Nodes.OrderByDescending(n => Math.Abs(n.Score)).Take(30).ToList();
        var ids = pair.CleanIds;
        var labels = NeuronExamples.Collect(llama, task, tokenizer, shown.Select(n => (n.Node.Layer, n.Node.Index)), 3);
        var neurons = new List<GraphNeuron>();
        float prob;
        using (var pass = llama.Forward(new TokenBatch([ids]), LogitRows.Last))
        {
            var logits = pass.HostLogits();
            float max = logits.Max();
            prob = (float)(Math.Exp(logits[pair.CleanAnswer] - max) / logits.Sum(v => Math.Exp(v - max)));
            foreach (var n in shown)
            {
                if (n.Node.Position >= ids.Length) continue; // not a position of this prompt
                var a = pass.HostSite(NodeSite.MlpAct, n.Node.Layer);
                string clerp = $"mlp_act L{n.Node.Layer} #{n.Node.Index}";
                if (labels.TryGetValue((n.Node.Layer, n.Node.Index), out var ex) && ex.Count > 0)
                    clerp += ": " + string.Join(" ", ex.Select(e => "\"" + e.Token.Replace("\n", "\\n").Replace("\t", "\\t") + "\""));
                neurons.Add(new GraphNeuron(n.Node, n.Score, a[(ids.Length - 1 - n.Node.Position) * loaded.Config.HiddenDim + n.Node.Index], clerp));
            }
        }
        var prompt = new GraphPrompt(pair.Line, ids, ids.Select((id, i) => i == 0 ? tokenizer.Piece(id).Trim() : tokenizer.Decode(ids[i - 1], id)).ToList(),
            tokenizer.Decode(ids), pair.CleanAnswer, tokenizer.Decode(ids[^1], pair.CleanAnswer), prob);
        var direct = NeuronpediaGraph.Build("g", "stories260K", prompt, loaded.Config.Layers, neurons, edges, 0.8, "neurontrace", "test", run.Dir);
        Assert.Equal(NeuronpediaGraph.ToJson(direct), NeuronpediaGraph.ToJson(facade.Json));
        Assert.Equal(neurons.Count, facade.Neurons);
        Assert.True(facade.Neurons >= 10, $"{facade.Neurons} neurons drawn");
        Assert.Equal(ids.Length, facade.Tokens);
        Assert.Contains("mlp_act L", NeuronpediaGraph.ToJson(facade.Json));
    }

    [Fact]
    public void RunViewIsTheCircuitViewOfTheBuiltGraph()
    {
        var folder = RunFolder.Open(run.Dir);
        var circuit = folder.ReadCircuit();
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var task = PromptTask.Load(run.TaskPath, model.Tokenizer, requireEqualLengths: false);
        var shown = circuit.Nodes.OrderByDescending(n => Math.Abs(n.Score)).Take(20).Select(n => (n.Node.Layer, n.Node.Index)).ToList();
        var examples = model.TopActivations(task, shown, 4);
        // Causal edges among the drawn nodes, written as `edges` writes them.
        var edgeNodes = circuit.Nodes.OrderByDescending(n => Math.Abs(n.Score)).Take(8).Select(n => EdgeEnd.Neuron(n.Node.Layer, n.Node.Position, n.Node.Index)).ToList();
        string edgesPath = Path.Combine(RepoPaths.TempDir("runview-edges"), "edges.csv");
        File.WriteAllText(edgesPath, model.Edges(folder.HeldOut(task, run.TaskPath), edgeNodes).ToCsv());

        var page = RunView.Render(folder, circuit, new RunViewOptions
        {
            MaxNodes = 20, MaxEdges = 50, Task = task, Tokenizer = model.Tokenizer, TaskPath = run.TaskPath, Layers = model.Config.Layers,
            Examples = examples, EdgesPath = edgesPath,
        });

        var (loaded, llama) = Direct();
        using var _l = llama;
        var directExamples = NeuronExamples.Collect(llama, task, loaded.RequireTokenizer(), shown, 4);
        var graph = CircuitGraph.Build(folder, circuit, 20, 50, directExamples, loaded.Config.Layers, run.TaskPath);
        var causal = ViewEdge.Read(edgesPath, graph.Layers);
        string html = CircuitView.Render(graph, ViewPrompt.Draw(task, loaded.RequireTokenizer()), causal, edgesPath, 50);
        Assert.Equal(graph.ToJson(), page.Graph.ToJson());
        Assert.Equal(html, page.Html);
        Assert.Equal(causal, page.CausalEdges);
        Assert.NotEmpty(causal);

        // Without edges the page draws co-attribution edges, and causal edges of another site are refused.
        Assert.Null(RunView.Render(folder, circuit).CausalEdges);
        Assert.Throws<ArgumentException>(() => RunView.Render(folder, circuit with { Site = NodeSite.Resid }, new RunViewOptions { EdgesPath = edgesPath }));
    }

    [Fact]
    public void AttributeShardIsAttributionShardRun()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var task = model.LoadTask("pronoun_gender").Take(10);
        var (loaded, llama) = Direct();
        using var _l = llama;
        string taskPath = Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl");
        var identity = ShardIdentity.Of("attribute", loaded, taskPath, new SortedDictionary<string, string>(StringComparer.Ordinal) { ["method"] = "relp" });
        var o = new AttributionOptions { Method = AttributionMethod.RelP, Sites = [NodeSite.MlpAct, NodeSite.Attn], Baseline = Baseline.Patch, Metric = Metric.AttributionDefault(task) };
        var slice = ShardSlice.Parse("1/2");
        string a = RepoPaths.TempDir("facade-shard"), b = RepoPaths.TempDir("direct-shard");
        var facade = model.AttributeShard(task, [("relp", o)], identity, slice, a, 2);
        var direct = AttributionShard.Run(llama, task, [("relp", o)], ShardIdentity.Of("attribute", loaded, taskPath, identity.Options), slice, b, 2);
        Assert.True(facade.Complete);
        Assert.Equal((direct.First, direct.End, direct.Done), (facade.First, facade.End, facade.Done));
        Assert.Equal(File.ReadAllBytes(Path.Combine(b, direct.SumsFile!)), File.ReadAllBytes(Path.Combine(a, facade.SumsFile!)));
    }

    [Fact]
    public void SweepShardIsSweepShardRun()
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var task = model.LoadTask("pronoun_gender").Take(12);
        var o = new TraceOptions { Sites = [NodeSite.MlpAct], KPoints = 5, Methods = [AttributionMethod.RelP] };
        var (train, _) = TracedModel.Split(task);
        var scores = new Dictionary<AttributionMethod, NodeScores> { [AttributionMethod.RelP] = model.Attribute(train, AttributionMethod.RelP, [NodeSite.MlpAct]) };
        var (loaded, llama) = Direct();
        using var _l = llama;
        string taskPath = Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl");
        ShardManifest Identity() => ShardIdentity.Of("trace", loaded, taskPath, ShardIdentity.TraceOptionsText(o, "relp", false, false));
        var slice = ShardSlice.Parse("0/2");
        string a = RepoPaths.TempDir("facade-sweep"), b = RepoPaths.TempDir("direct-sweep");
        var facade = model.SweepShard(task, o, scores, Identity(), slice, a, checkpointCircuits: 3);
        var direct = Tracing.Sharding.SweepShard.Run(llama, task, o, scores, Identity(), slice, b, checkpointCircuits: 3);
        Assert.True(facade.Complete);
        Assert.True(facade.Done >= 2, $"{facade.Done} circuits");
        var files = Directory.GetFiles(b).Select(Path.GetFileName).Order().ToList();
        Assert.Equal(files, Directory.GetFiles(a).Select(Path.GetFileName).Order().ToList());
        foreach (var f in files) Assert.Equal(File.ReadAllBytes(Path.Combine(b, f!)), File.ReadAllBytes(Path.Combine(a, f!)));
    }

    [Fact]
    public void TraceManifestsRecordSpecialTokensAndOlderOnesReadWithout()
    {
        var o = new TraceOptions { Sites = [NodeSite.MlpAct], KPoints = 5, Methods = [AttributionMethod.RelP] };
        var text = ShardIdentity.TraceOptionsText(o, "gradient", false, true);
        Assert.Equal("true", text["special_tokens"]);
        Assert.True(ShardIdentity.TraceOptionsOf(new ShardManifest { Options = text }).SpecialTokens);
        text.Remove("special_tokens");   // a manifest written before the option was recorded
        Assert.False(ShardIdentity.TraceOptionsOf(new ShardManifest { Options = text }).SpecialTokens);
    }

    sealed class Progress(List<WorkProgress> seen) : IProgress<WorkProgress>
    {
        public void Report(WorkProgress value) => seen.Add(value);
    }
}
