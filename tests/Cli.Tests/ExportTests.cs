using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Tests;

/// <summary>A stories260K run folder written by the CLI (trace, then edges), shared by the export and run-format tests.</summary>
public sealed class CliRunFixture
{
    public CliRunFixture()
    {
        Dir = Path.Combine(RepoPaths.TempDir("cli-run"), "run");
        var t = CliHarness.Run("trace", "--task", TaskPath, "--sites", "mlp_act,attn", "--k-points", "4", "--seed", "3", "--out", Dir);
        if (t.Exit != 0) throw new InvalidOperationException("trace failed: " + t.Err);
        var e = CliHarness.Run("edges", "--run", Dir, "--top-nodes", "12");
        if (e.Exit != 0) throw new InvalidOperationException("edges failed: " + e.Err);
    }

    public string TaskPath { get; } = Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl");
    public string Dir { get; }
}

[Collection("console")]
public class ExportTests(CliRunFixture run) : IClassFixture<CliRunFixture>
{
    // The graph fields docs/circuit-graph-schema.md ("Exported attribution graph") lists as required (circuit-tracer's viewer and Neuronpedia read them).
    static readonly string[] MetadataFields = ["slug", "scan", "prompt_tokens", "prompt", "node_threshold", "schema_version", "info"];
    static readonly string[] QParamsFields = ["pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"];
    static readonly string[] NodeFields = ["node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId", "clerp", "influence", "activation"];
    static readonly string[] LinkFields = ["source", "target", "weight"];

    [Fact]
    public void CircuitTracerGraphHasTheSchemaFieldsAndTheModelsNumbers()
    {
        string outDir = RepoPaths.TempDir("export");
        string file = Path.Combine(outDir, "pronouns.json");
        var r = CliHarness.Run("export", "--run", run.Dir, "--format", "circuit-tracer", "--out", file, "--max-nodes", "40");
        Assert.True(r.Exit == 0, r.Err);
        var g = JsonDocument.Parse(File.ReadAllText(file)).RootElement;

        var meta = g.GetProperty("metadata");
        foreach (var f in MetadataFields) Assert.True(meta.TryGetProperty(f, out _), "metadata." + f);
        Assert.Equal("pronouns", meta.GetProperty("slug").GetString());
        Assert.Equal(1, meta.GetProperty("schema_version").GetInt32());
        Assert.Equal("neurontrace", meta.GetProperty("info").GetProperty("generator").GetProperty("name").GetString());
        foreach (var f in QParamsFields) Assert.True(g.GetProperty("qParams").TryGetProperty(f, out _), "qParams." + f);
        var nodes = g.GetProperty("nodes").EnumerateArray().ToList();
        foreach (var n in nodes) foreach (var f in NodeFields) Assert.True(n.TryGetProperty(f, out _), "node field " + f);
        foreach (var l in g.GetProperty("links").EnumerateArray()) foreach (var f in LinkFields) Assert.True(l.TryGetProperty(f, out _), "link field " + f);

        // The prompt is the run's first evaluation example, positions from the start, BOS included.
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        var task = PromptTask.Load(run.TaskPath, loaded.RequireTokenizer(), requireEqualLengths: false);
        var folder = RunFolder.Open(run.Dir);
        var pair = folder.HeldOut(task, run.TaskPath).Pairs[0];
        Assert.Equal(pair.Line, meta.GetProperty("info").GetProperty("task_line").GetInt32());
        int len = pair.CleanIds.Length;
        Assert.Equal(len, meta.GetProperty("prompt_tokens").GetArrayLength());
        var emb = nodes.Where(n => n.GetProperty("feature_type").GetString() == "embedding").ToList();
        Assert.Equal(Enumerable.Range(0, len), emb.Select(n => n.GetProperty("ctx_idx").GetInt32()).Order());
        foreach (var n in emb) Assert.Equal($"E_{pair.CleanIds[n.GetProperty("ctx_idx").GetInt32()]}_{n.GetProperty("ctx_idx").GetInt32()}", n.GetProperty("node_id").GetString());
        var logit = Assert.Single(nodes, n => n.GetProperty("feature_type").GetString() == "logit");
        Assert.Equal($"{loaded.Config.Layers + 1}_{pair.CleanAnswer}_{len - 1}", logit.GetProperty("node_id").GetString());

        // Neuron nodes: the circuit's top 40 by |score|, ctx_idx = len - 1 - position from the end, the run's score as
        // influence, and the activation an independent forward of the prompt gives.
        var circuit = folder.ReadCircuit("relp", "mlp_act");
        var top = circuit.Nodes.OrderByDescending(n => Math.Abs(n.Score)).Take(40).ToDictionary(n => n.Node, n => n.Score);
        var neurons = nodes.Where(n => n.GetProperty("feature_type").GetString() == "cross layer transcoder").ToList();
        Assert.Equal(top.Count, neurons.Count);
        using var model = new Llama(loaded.Weights, CpuBackend.Instance);
        using var pass = model.Forward(new TokenBatch([pair.CleanIds]), LogitRows.None);
        foreach (var n in neurons)
        {
            var id = NodeId.Parse(n.GetProperty("neurontrace_id").GetString()!);
            int ctx = len - 1 - id.Position;
            Assert.Equal($"{id.Layer}_{id.Index}_{ctx}", n.GetProperty("node_id").GetString());
            Assert.Equal(ctx, n.GetProperty("ctx_idx").GetInt32());
            Assert.Equal(id.Layer.ToString(CultureInfo.InvariantCulture), n.GetProperty("layer").GetString());
            Assert.Equal(top[id], n.GetProperty("influence").GetSingle());
            float want = pass.HostSite(NodeSite.MlpAct, id.Layer)[ctx * loaded.Config.HiddenDim + id.Index];
            Assert.Equal(want, n.GetProperty("activation").GetSingle());
            Assert.StartsWith($"mlp_act L{id.Layer} #{id.Index}: \"", n.GetProperty("clerp").GetString());
        }

        // Links: exactly the edges.csv rows (all 12 edge neurons are among the 40 exported), ends mapped to positions from the start.
        var rows = EdgeCsv.Read(Path.Combine(run.Dir, "edges.csv"));
        var links = g.GetProperty("links").EnumerateArray().Select(l => (l.GetProperty("source").GetString()!, l.GetProperty("target").GetString()!, l.GetProperty("weight").GetDouble())).ToList();
        Assert.Equal(rows.Count, links.Count);
        Assert.True(rows.Count > 0);
        string End(Tracing.Edges.EdgeEndKind k, NodeId? id, int? p) => k switch
        {
            Tracing.Edges.EdgeEndKind.Logit => logit.GetProperty("node_id").GetString()!,
            Tracing.Edges.EdgeEndKind.Embedding => $"E_{pair.CleanIds[len - 1 - p!.Value]}_{len - 1 - p.Value}",
            _ => $"{id!.Value.Layer}_{id.Value.Index}_{len - 1 - id.Value.Position}",
        };
        Assert.Equal(rows.Select(e => (End(e.SourceKind, e.Source, e.SourcePosition), End(e.TargetKind, e.Target, null), e.Weight)).ToHashSet(), links.ToHashSet());

        // graph-metadata.json lists the slug; a second export of another slug keeps both.
        Assert.True(CliHarness.Run("export", "--run", run.Dir, "--format", "circuit-tracer", "--out", Path.Combine(outDir, "second.json")).Exit == 0);
        var listed = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "graph-metadata.json"))).RootElement.GetProperty("graphs")
            .EnumerateArray().Select(x => x.GetProperty("slug").GetString()).Order().ToList();
        Assert.Equal(["pronouns", "second"], listed);

        // Python's json module, through the short check script in tests/tools, reads it and finds the same.
        var (rc, output) = Python("check_neuronpedia_graph.py", file, Path.Combine(outDir, "graph-metadata.json"));
        Assert.True(rc == 0, output);
        Assert.Equal($"ok {nodes.Count} nodes {links.Count} links", output.Trim());
        // ...and the script itself catches a graph missing a required field.
        string broken = Path.Combine(outDir, "broken.json");
        File.WriteAllText(broken, File.ReadAllText(file).Replace("\"jsNodeId\"", "\"jsNodeID\""));
        Assert.Contains("field jsNodeId is missing", Python("check_neuronpedia_graph.py", broken).Output);
    }

    [Fact]
    public void NeuronpediaFormatWritesTheGraphAloneAndBadRequestsAreOneLine()
    {
        string outDir = RepoPaths.TempDir("export-np");
        string file = Path.Combine(outDir, "g.json");
        var r = CliHarness.Run("export", "--run", run.Dir, "--format", "neuronpedia", "--out", file, "--slug", "my-graph", "--max-nodes", "5");
        Assert.True(r.Exit == 0, r.Err);
        Assert.Equal(["g.json"], Directory.GetFiles(outDir).Select(Path.GetFileName));
        Assert.Equal("my-graph", JsonDocument.Parse(File.ReadAllText(file)).RootElement.GetProperty("metadata").GetProperty("slug").GetString());

        CliHarness.AssertOneLineError(CliHarness.Run("export", "--run", run.Dir, "--format", "svg", "--out", file, "--force"), 2, "unknown --format \"svg\"");
        CliHarness.AssertOneLineError(CliHarness.Run("export", "--run", run.Dir, "--format", "neuronpedia", "--out", file), 2, "already exists");
        CliHarness.AssertOneLineError(CliHarness.Run("export", "--run", run.Dir, "--format", "circuit-tracer", "--out", Path.Combine(outDir, "a.json"), "--slug", "b"), 2, "SLUG.json");
        CliHarness.AssertOneLineError(CliHarness.Run("export", "--run", run.Dir, "--format", "neuronpedia", "--out", Path.Combine(outDir, "c.json"), "--line", "999999"), 2, "--line 999999");
        CliHarness.AssertOneLineError(CliHarness.Run("export", "--run", run.Dir, "--format", "neuronpedia", "--out", Path.Combine(outDir, "c.json"), "--max-nodes", "0"), 2, "--max-nodes 0");
        Assert.False(File.Exists(Path.Combine(outDir, "c.json")));
    }

    [Fact]
    public void ScoresSafetensorsEqualScoresCsv()
    {
        string dir = Path.Combine(run.Dir, "scores", "relp");
        var csv = Csv.Read(Path.Combine(dir, "scores.csv"));
        Assert.Equal(RunFormat.ScoresColumns, csv.Header);
        using (var st = SafetensorsFile.Open(Path.Combine(dir, "scores.safetensors")))
        {
            var tensors = st.Tensors.Keys.ToDictionary(k => k, k => st.ReadTensor(k));
            Assert.Equal(csv.Rows.Count, tensors.Values.Sum(t => t.Length));
            foreach (var (_, f) in csv.Rows)
            {
                var id = NodeId.Parse(f[0]);
                Assert.Equal((id.Site.Name(), id.Layer, id.Position, id.Index), (f[1], int.Parse(f[2], CultureInfo.InvariantCulture), int.Parse(f[3], CultureInfo.InvariantCulture), int.Parse(f[4], CultureInfo.InvariantCulture)));
                int width = st.Tensors[ScoresFolder.TensorName(id.Site, id.Layer)].Shape[1] is var w ? (int)w : 0;
                Assert.Equal(float.Parse(f[5], CultureInfo.InvariantCulture), tensors[ScoresFolder.TensorName(id.Site, id.Layer)][id.Position * width + id.Index]);
            }
        }
        // Debian's numpy reads the same file the way a researcher would (python3-numpy: scripts/ensure-tools.sh installs it).
        var (rc, output) = Python("check_scores_safetensors.py", dir);
        Assert.True(!output.Contains("No module named 'numpy'"), "cannot run here: python3-numpy is not installed (run scripts/ensure-tools.sh)");
        Assert.True(rc == 0, output);
        Assert.Equal($"ok {csv.Rows.Count} values", output.Trim());
    }

    [Fact]
    public void FromSummaryReproducesTheRun()
    {
        var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(run.Dir, "summary.json"))).RootElement;
        var o = summary.GetProperty("options");
        Assert.Equal(3, o.GetProperty("seed").GetInt32());
        Assert.Equal(4, o.GetProperty("k_points").GetInt32());
        Assert.Equal(10, o.GetProperty("ig_steps").GetInt32());
        Assert.Equal("gradient", o.GetProperty("relp_attention").GetString());
        Assert.Equal(0.8, o.GetProperty("target").GetDouble());
        Assert.Equal("cpu", summary.GetProperty("device").GetString());
        Assert.Equal("float32", summary.GetProperty("precision").GetString());
        Assert.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(run.TaskPath))), summary.GetProperty("task_sha256").GetString());
        Assert.False(string.IsNullOrEmpty(summary.GetProperty("tool_version").GetString()));

        string again = Path.Combine(RepoPaths.TempDir("from-summary"), "run");
        var r = CliHarness.Run("trace", "--from-summary", Path.Combine(run.Dir, "summary.json"), "--out", again);
        Assert.True(r.Exit == 0, r.Err);
        Assert.Equal(File.ReadAllText(Path.Combine(run.Dir, "sweep.csv")), File.ReadAllText(Path.Combine(again, "sweep.csv")));
        foreach (var f in new[] { "scores.safetensors", "scores.csv", "scores.f32" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(run.Dir, "scores", "relp", f)), File.ReadAllBytes(Path.Combine(again, "scores", "relp", f)));

        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--from-summary", Path.Combine(run.Dir, "summary.json"), "--seed", "4", "--out", again + "2"), 2,
            "--seed cannot be given with --from-summary");
    }

    [Fact]
    public void OldReadersWorkOnNewRunFoldersAndSteerTakesTheNodeIdSpelling()
    {
        string outDir = RepoPaths.TempDir("old-readers");
        var v = CliHarness.Run("view", "--run", run.Dir, "--out", Path.Combine(outDir, "v.html"), "--max-nodes", "10");
        Assert.True(v.Exit == 0, v.Err);
        var graph = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "graph.json"))).RootElement;
        foreach (var n in graph.GetProperty("nodes").EnumerateArray()) NodeId.Parse(n.GetProperty("id").GetString()!);
        var s = CliHarness.Run("steer", "--run", run.Dir, "--k", "5");
        Assert.True(s.Exit == 0, s.Err);

        var a = CliHarness.Run("steer", "--prompt", "Lily saw a dog", "--edit", "L2/N17@P1=x0", "--steps", "3");
        var b = CliHarness.Run("steer", "--prompt", "Lily saw a dog", "--edit", "mlp_act/L2/P-1/17=x0", "--steps", "3");
        Assert.True(a.Exit == 0, a.Err);
        Assert.Equal(a.Out, b.Out);
        CliHarness.AssertOneLineError(CliHarness.Run("steer", "--prompt", "x", "--edit", "mlp_act/L2/P-1/x=x0"), 2, "is not a node id");
    }

    static (int Rc, string Output) Python(string script, params string[] args)
    {
        // Debian's interpreter (where python3-numpy installs), not whichever python3 comes first on PATH.
        var psi = new ProcessStartInfo(File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(RepoPaths.Root, "tests", "tools", script));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output);
    }
}
