using System.CommandLine;
using System.Text.Json;
using NeuronTrace.Cli;
using NeuronTrace.Cli.Commands;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Tracing.View;

namespace NeuronTrace.Cli.Tests;

/// <summary>A small stories260K trace run folder, built once for the view tests.</summary>
public sealed class SmallRunFixture
{
    public SmallRunFixture()
    {
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        TaskPath = Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl");
        var task = PromptTask.Load(TaskPath, loaded.RequireTokenizer()).Take(16);
        using var model = new Llama(loaded.Weights, CpuBackend.Instance);
        var result = TraceJob.Run(model, task, new NeuronTrace.Tracing.Pipeline.TraceOptions { Sites = [NodeSite.MlpAct], KPoints = 4, Methods = [AttributionMethod.RelP] });
        Dir = RepoPaths.TempDir("view-run");
        TraceReport.Write(Dir, result, loaded, TaskPath);
    }

    public string Dir { get; }
    public string TaskPath { get; }

    /// <summary>A private copy of the run folder, for tests that corrupt it or write into it.</summary>
    public string Copy(string prefix)
    {
        string dest = Path.Combine(RepoPaths.TempDir(prefix), "run");
        foreach (var f in Directory.GetFiles(Dir, "*", SearchOption.AllDirectories))
        {
            string to = Path.Combine(dest, Path.GetRelativePath(Dir, f));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(f, to);
        }
        return dest;
    }
}

// The console collection: view prints to Console, which the other CLI tests capture (a line of ours once landed in
// their captured output and failed them).
[Collection("console")]
public class ViewTests(SmallRunFixture run) : IClassFixture<SmallRunFixture>
{
    [Fact]
    public void WritesSelfContainedHtmlWithTheCircuitNodesAndGraphJson()
    {
        string outDir = RepoPaths.TempDir("view-out");
        string html = Path.Combine(outDir, "view.html");
        var (rc, _, err) = CliHarness.Run("view", "--run", run.Dir, "--out", html, "--max-nodes", "25");
        Assert.True(rc == 0, err);
        string text = File.ReadAllText(html);

        var circuit = RunFolder.Open(run.Dir).ReadCircuit();
        Assert.Equal("mlp_act", circuit.Site.Name());
        var top = circuit.Nodes.OrderByDescending(n => Math.Abs(n.Score)).Take(25).ToList();
        Assert.Equal(25, top.Count);
        foreach (var n in top) Assert.Contains($"data-id=\"{CircuitGraph.NodeKey(n.Node)}\"", text);
        Assert.Equal(25, CountOf(text, "<circle class=\"node "));
        Assert.Contains("co-attribution (not causal edge weights)", text);
        Assert.Contains("id=\"sweep\"", text);
        // Self-contained: nothing is fetched.
        Assert.DoesNotContain("src=\"http", text);
        Assert.DoesNotContain("href=\"http", text);
        Assert.DoesNotContain("<link", text);

        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "graph.json")));
        var root = doc.RootElement;
        Assert.Equal(CircuitGraph.FormatName, root.GetProperty("format").GetString());
        Assert.Equal(25, root.GetProperty("nodes").GetArrayLength());
        var first = root.GetProperty("nodes")[0];
        Assert.Equal(5, first.GetProperty("examples").GetArrayLength());
        Assert.True(root.GetProperty("sweep").GetArrayLength() > 0);
        foreach (var e in root.GetProperty("edges").EnumerateArray())
        {
            var s = root.GetProperty("nodes").EnumerateArray().Single(n => n.GetProperty("id").GetString() == e.GetProperty("source").GetString());
            var t = root.GetProperty("nodes").EnumerateArray().Single(n => n.GetProperty("id").GetString() == e.GetProperty("target").GetString());
            Assert.Equal(s.GetProperty("layer").GetInt32() + 1, t.GetProperty("layer").GetInt32());
            Assert.True(s.GetProperty("position").GetInt32() >= t.GetProperty("position").GetInt32());
            Assert.Equal(s.GetProperty("score").GetSingle() * t.GetProperty("score").GetSingle(), e.GetProperty("weight").GetSingle(), 5);
        }

        if (HeadlessChromium.Available(nameof(WritesSelfContainedHtmlWithTheCircuitNodesAndGraphJson)))
        {
            var (pngBytes, console) = Screenshot(html);
            Assert.True(pngBytes > 1000, "no screenshot");
            Assert.True(console.Count == 0, "console messages: " + string.Join(" | ", console));

            // The check itself catches script errors: a page with a deliberate one is reported.
            string bad = Path.Combine(outDir, "bad.html");
            File.WriteAllText(bad, "<html><body><script>console.error('deliberate'); notDefined();</script></body></html>");
            var (_, badConsole) = Screenshot(bad);
            Assert.Contains(badConsole, l => l.Contains("Uncaught"));
            Assert.Contains(badConsole, l => l.Contains("deliberate"));
        }
    }

    [Fact]
    public void OtherSitesAndMissingCircuitsAreReported()
    {
        var folder = RunFolder.Open(run.Dir);
        Assert.Throws<ModelFormatException>(() => folder.ReadCircuit("relp", "resid"));
        var c = folder.ReadCircuit("relp", "mlp_act");
        var g = CircuitGraph.Build(folder, c, maxNodes: 10, maxEdges: 5, examples: null, layers: 5);
        Assert.Equal(10, g.Nodes.Count);
        Assert.True(g.Edges.Count <= 5);
        Assert.All(g.Nodes, n => Assert.Empty(n.Examples));
        string html = CircuitView.Render(g);
        Assert.Contains("<svg id=\"graph\"", html);
    }

    static int CountOf(string s, string what)
    {
        int n = 0, i = 0;
        while ((i = s.IndexOf(what, i, StringComparison.Ordinal)) >= 0) { n++; i += what.Length; }
        return n;
    }

    /// <summary>Headless chromium screenshot; returns the PNG's size (0 when none) and the page's console lines.</summary>
    static (long PngBytes, List<string> Console) Screenshot(string html)
    {
        string png = Path.Combine(RepoPaths.TempDir("shot"), "view.png");
        var console = HeadlessChromium.Screenshot(html, png, 1200, 900);
        return (File.Exists(png) ? new FileInfo(png).Length : 0, console);
    }
}
