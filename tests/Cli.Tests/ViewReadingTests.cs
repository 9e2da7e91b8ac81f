using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Tracing.View;
using SkiaSharp;

namespace NeuronTrace.Cli.Tests;

/// <summary>The view reads without hovering: the drawn prompt's tokens on the axis, causal edge weights from edges.csv, escaped task text.</summary>
[Collection("console")]
public class ViewReadingTests(SmallRunFixture run) : IClassFixture<SmallRunFixture>
{
    /// <summary>The token labels' fill (CircuitViewAssets .tok); nothing else on the page uses it.</summary>
    static readonly SKColor TokenColour = new(0x5a, 0x1e, 0x96);

    static List<string> AxisTokens(string html) =>
        Regex.Matches(html, "<text class=\"tok\" [^>]*data-col=\"(\\d+)\" data-token=\"([^\"]*)\"")
            .Select(m => WebUtility.HtmlDecode(m.Groups[2].Value)).ToList();

    [Fact]
    public void ThePromptTokensAndTheCausalEdgeWeightsOfEdgesCsvAreOnThePage()
    {
        string dir = run.Copy("view-edges");
        var (rc, _, err) = CliHarness.Run("edges", "--run", dir, "--top-nodes", "20");
        Assert.True(rc == 0, err);
        (rc, _, err) = CliHarness.Run("view", "--run", dir, "--max-nodes", "30");
        Assert.True(rc == 0, err);
        string htmlPath = Path.Combine(dir, "view.html");
        string html = File.ReadAllText(htmlPath);

        // The drawn prompt: its task line, read raw; the tokens, concatenated after BOS, spell its clean prefix exactly.
        int line = int.Parse(Regex.Match(html, "prompt \\(task line (\\d+)\\)").Groups[1].Value);
        string raw = File.ReadAllLines(run.TaskPath)[line - 1];
        using var rawDoc = JsonDocument.Parse(raw);
        string prefix = rawDoc.RootElement.GetProperty("clean_prefix").GetString()!;
        var tokens = AxisTokens(html);
        Assert.Equal(ViewPrompt.BosLabel, tokens[0]);
        Assert.Equal(prefix, string.Concat(tokens.Skip(1)));
        var task = PromptTask.Load(run.TaskPath, ModelLoader.Load(RepoPaths.Stories260KBin).RequireTokenizer(), requireEqualLengths: false);
        var pair = task.Pairs.Single(p => p.Line == line);
        Assert.Equal(pair.CleanIds.Length, tokens.Count);
        Assert.Equal(task.Pairs.Max(p => p.CleanIds.Length), pair.CleanIds.Length); // the longest prompt: every position has its token
        Assert.Contains(WebUtility.HtmlEncode(rawDoc.RootElement.GetProperty("clean_answer").GetString()!), html);
        Assert.Contains("Edges are causal edge attributions", html);
        Assert.DoesNotContain("Edges are co-attribution", html);

        // Every edges.csv row joining drawn nodes (embeddings, drawn neurons, the logits), strongest first, is listed with
        // its weight exactly as the CSV has it (columns by header name; node ids as graph.json spells them).
        using var graph = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "graph.json")));
        var drawn = graph.RootElement.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("id").GetString()!).ToHashSet();
        var csv = File.ReadAllLines(Path.Combine(dir, "edges.csv"));
        var head = csv[0].Split(',');
        int sn = Array.IndexOf(head, "source_node"), tn = Array.IndexOf(head, "target_node"), wc = Array.IndexOf(head, "weight"), fc = Array.IndexOf(head, "final_attr");
        Assert.True(sn >= 0 && tn >= 0 && wc >= 0 && fc >= 0, "edges.csv header: " + csv[0]);
        bool Drawn(string node) => node == "logits" || node.StartsWith("embedding/", StringComparison.Ordinal) || drawn.Contains(node);
        var rows = csv.Skip(1).Select(r => r.Split(','))
            .Where(f => Drawn(f[sn]) && Drawn(f[tn]))
            .OrderByDescending(f => Math.Abs(double.Parse(f[fc], System.Globalization.CultureInfo.InvariantCulture))).Take(300).ToList();
        Assert.True(rows.Count >= 10, $"only {rows.Count} edges join drawn nodes");
        foreach (var f in rows) Assert.Contains($"<td data-v=\"{f[wc]}\">{f[wc]}</td>", html);
        Assert.Equal(rows.Count, Regex.Matches(html, "<line class=\"edge (pos|neg)\"").Count);
        Assert.Equal(8, Regex.Matches(html, "<text class=\"ew\"").Count);

        if (!HeadlessChromium.Available(nameof(ThePromptTokensAndTheCausalEdgeWeightsOfEdgesCsvAreOnThePage))) return;
        // The rendered DOM (after the page's script ran) holds every token label, and the script logged nothing.
        var (dom, console) = HeadlessChromium.DumpDom(htmlPath);
        Assert.True(console.Count == 0, "console messages: " + string.Join(" | ", console));
        Assert.Equal(tokens, AxisTokens(dom));

        // The screenshot shows them: pixels of the token colour form one cluster per token column.
        int width = int.Parse(Regex.Match(html, "<svg id=\"graph\"[^>]* width=\"(\\d+)\"").Groups[1].Value) + 80;
        int height = int.Parse(Regex.Match(html, "<svg id=\"graph\"[^>]* height=\"(\\d+)\"").Groups[1].Value) + 500;
        string png = Path.Combine(RepoPaths.TempDir("view-shot"), "view.png");
        console = HeadlessChromium.Screenshot(htmlPath, png, width, height);
        Assert.True(console.Count == 0, "console messages: " + string.Join(" | ", console));
        using var bitmap = SKBitmap.Decode(png);
        Assert.NotNull(bitmap);
        var columns = new List<int>();
        for (int x = 0; x < bitmap.Width; x++)
            for (int y = 0; y < bitmap.Height; y++)
            {
                var c = bitmap.GetPixel(x, y);
                if (Math.Abs(c.Red - TokenColour.Red) + Math.Abs(c.Green - TokenColour.Green) + Math.Abs(c.Blue - TokenColour.Blue) < 40) { columns.Add(x); break; }
            }
        int clusters = columns.Count == 0 ? 0 : 1 + columns.Zip(columns.Skip(1)).Count(p => p.Second - p.First > 12);
        Assert.True(clusters == tokens.Count, $"{clusters} clusters of token-coloured pixels for {tokens.Count} tokens (screenshot {png})");
    }

    [Fact]
    public void TaskTextCannotBreakThePage()
    {
        // A task whose prompts hold script tags and a comment opener; the view draws it (--task: the prompt and examples).
        string dir = run.Copy("view-inject");
        string evil = Path.Combine(dir, "evil.jsonl");
        string[] attacks = ["Mia saw <script>console.log('INJECTED-1')</script> a dog.", "Max saw <!--<script>console.log('INJECTED-2')</script> a cat.",
            "Leo said </script><script>console.log('INJECTED-3')</script> hi."];
        File.WriteAllLines(evil, attacks.Select((a, i) => JsonSerializer.Serialize(new Dictionary<string, string>
        {
            ["clean_prefix"] = a, ["patch_prefix"] = a.Replace("Mia", "Tom").Replace("Max", "Amy").Replace("Leo", "Sue"),
            ["clean_answer"] = i == 0 ? " She" : " He", ["patch_answer"] = i == 0 ? " He" : " She", ["case"] = "<b>case</b><!--",
        })));
        string htmlPath = Path.Combine(dir, "evil.html");
        var (rc, _, err) = CliHarness.Run("view", "--run", dir, "--task", evil, "--out", htmlPath, "--max-nodes", "20", "--prompt-line", "2");
        Assert.True(rc == 0, err);
        string html = File.ReadAllText(htmlPath);

        Assert.Equal(2, Regex.Matches(html, "<script", RegexOptions.IgnoreCase).Count); // the page's own two
        Assert.Equal(2, Regex.Matches(html, "</script", RegexOptions.IgnoreCase).Count);
        Assert.DoesNotContain("<!--", html);
        Assert.DoesNotContain("INJECTED-1')<", html);
        // The drawn prompt (line 2) is there, escaped, token by token.
        Assert.Contains("<!--<script>", string.Concat(AxisTokens(html)));
        // The embedded JSON parses and still holds the task text (the examples' snippets) unchanged.
        string json = Regex.Match(html, "<script type=\"application/json\" id=\"graph-data\">(.*?)</script>", RegexOptions.Singleline).Groups[1].Value;
        Assert.Contains("\\u003c", json);
        using var doc = JsonDocument.Parse(json);
        var snippets = doc.RootElement.GetProperty("nodes").EnumerateArray().SelectMany(n => n.GetProperty("examples").EnumerateArray())
            .Select(e => e.GetProperty("snippet").GetString()!).ToList();
        Assert.Contains(snippets, s => s.Contains("<script>") || s.Contains("</script>") || s.Contains("<!--"));

        if (!HeadlessChromium.Available(nameof(TaskTextCannotBreakThePage))) return;
        var (dom, console) = HeadlessChromium.DumpDom(htmlPath);
        Assert.True(console.Count == 0, "console messages (an injected script ran, or the page's own failed): " + string.Join(" | ", console));
        Assert.Equal(2, Regex.Matches(dom, "<script", RegexOptions.IgnoreCase).Count);
        Assert.Contains("id=\"node-search\"", dom); // the page after the data is intact: the tables were not swallowed
        Assert.Equal(20, Regex.Matches(dom, "<circle class=\"node ").Count);
    }

    [Fact]
    public void AMalformedEdgesCsvIsOneLineNamingTheFileAndLine()
    {
        string dir = run.Copy("view-badedges");
        var (rc, _, err) = CliHarness.Run("edges", "--run", dir, "--top-nodes", "5");
        Assert.True(rc == 0, err);
        string path = Path.Combine(dir, "edges.csv");
        var lines = File.ReadAllLines(path);
        int wc = Array.IndexOf(lines[0].Split(','), "weight");
        var f = lines[2].Split(',');
        f[wc] = "abc";
        lines[2] = string.Join(',', f);
        File.WriteAllLines(path, lines);
        var r = CliHarness.Run("view", "--run", dir, "--examples", "0");
        Assert.NotEqual(0, r.Exit);
        Assert.Contains("edges.csv: line 3, column weight", r.Err);
        Assert.Contains("\"abc\"", r.Err);
        Assert.Single(r.Err.Trim().Split('\n'));
        Assert.False(File.Exists(Path.Combine(dir, "view.html")));

        // The ends come back as drawn: embedding, neuron and logit ends at their layers, weights as the file has them.
        lines[2] = string.Join(',', lines[2].Split(',').Select((c, i) => i == wc ? "0.5" : c));
        File.WriteAllLines(path, lines);
        var edges = ViewEdge.Read(path, layers: 5);
        Assert.Equal(lines.Length - 1, edges.Count);
        Assert.Equal(0.5, edges[1].Weight);
        Assert.All(edges, e => Assert.True(e.Source.Kind != NeuronTrace.Tracing.Edges.EdgeEndKind.Logit && e.Target.Kind != NeuronTrace.Tracing.Edges.EdgeEndKind.Embedding));
        Assert.Contains(edges, e => e.Target.Kind == NeuronTrace.Tracing.Edges.EdgeEndKind.Logit && e.Target.Layer == 5);
        Assert.Contains(edges, e => e.Source.Kind == NeuronTrace.Tracing.Edges.EdgeEndKind.Embedding && e.Source.Layer == -1);
    }

    [Theory]
    [InlineData("0", "--prompt-line must be at least 1")]
    [InlineData("9999", "--prompt-line 9999: ")]
    public void APromptLineOutsideTheTaskIsRefused(string line, string message)
    {
        string dir = run.Copy("view-line");
        var r = CliHarness.Run("view", "--run", dir, "--examples", "0", "--prompt-line", line);
        CliHarness.AssertOneLineError(r, 2, message);
        Assert.False(File.Exists(Path.Combine(dir, "view.html")));
    }
}
