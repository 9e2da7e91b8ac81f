using System.Globalization;
using System.Net;
using System.Text.RegularExpressions;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// Issue 17 item 4, the parts the other view tests leave out: every drawn node carries its label (layer/neuron and its
/// top-activating tokens) as text on the page, not only in a hover; the sweep chart draws faithfulness, completeness and
/// both random controls at the values of sweep.csv; each node links to its dataset examples; and, in headless Chromium,
/// the circuit table sorts by a clicked column and filters by the search box.
/// </summary>
[Collection("console")]
public class ViewReadsWithoutHoverTests(SmallRunFixture run) : IClassFixture<SmallRunFixture>
{
    [Fact]
    public void LabelsChartLinksSortAndSearch()
    {
        string dir = run.Copy("view-nohover");
        var (rc, _, err) = CliHarness.Run("view", "--run", dir, "--max-nodes", "15", "--examples", "3");
        Assert.True(rc == 0, err);
        string htmlPath = Path.Combine(dir, "view.html");
        string html = File.ReadAllText(htmlPath);

        // Labels: one visible text per drawn node, "L{layer}/N{neuron}" then its strongest example token, from graph.json.
        using var graph = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "graph.json")));
        var nodes = graph.RootElement.GetProperty("nodes").EnumerateArray().ToList();
        Assert.Equal(15, nodes.Count);
        var labels = Regex.Matches(html, "<text class=\"nlabel\" [^>]*>([^<]*)</text></a>").Select(m => WebUtility.HtmlDecode(m.Groups[1].Value)).ToList();
        Assert.Equal(15, labels.Count);
        foreach (var (n, label) in nodes.Zip(labels))
        {
            Assert.StartsWith($"L{n.GetProperty("layer").GetInt32()}/N{n.GetProperty("index").GetInt32()} ", label);
            string top = n.GetProperty("examples")[0].GetProperty("token").GetString()!.Trim();
            Assert.Contains(top.Length > 12 ? top[..8] : top, label);
            // The node links to its examples section, which exists.
            string anchor = Regex.Match(html, $"<a href=\"#(ex-[^\"]+)\"><circle [^>]*data-id=\"{Regex.Escape(WebUtility.HtmlEncode(n.GetProperty("id").GetString()!))}\"").Groups[1].Value;
            Assert.NotEqual("", anchor);
            Assert.Contains($"<section class=\"ex\" id=\"{anchor}\">", html);
        }

        // Chart: four series, each a dot per swept k > 0 of this circuit at sweep.csv's value (read here as plain CSV).
        var csv = File.ReadAllLines(Path.Combine(dir, "sweep.csv"));
        var head = csv[0].Split(',');
        int Col(string name) => Array.IndexOf(head, name);
        var rows = csv.Skip(1).Select(l => l.Split(',')).Where(f => f[Col("site")] == "mlp_act" && f[Col("method")] == "relp" && int.Parse(f[Col("k")]) > 0).ToList();
        Assert.True(rows.Count >= 3, "sweep rows: " + rows.Count);
        foreach (var (column, label) in new[] { ("faithfulness", "faithfulness"), ("completeness", "completeness"),
                     ("random_faithfulness", "random faithfulness"), ("random_completeness", "random completeness") })
            foreach (var f in rows)
            {
                string v = double.Parse(f[Col(column)], CultureInfo.InvariantCulture).ToString("F3", CultureInfo.InvariantCulture);
                Assert.Contains($"<title>{label}, k={f[Col("k")]}: {v}</title>", html);
            }
        Assert.Equal(2, Regex.Matches(html, "<polyline class=\"series (faith|compl) random\"").Count);

        if (!HeadlessChromium.Available(nameof(LabelsChartLinksSortAndSearch))) return;
        // In the browser: the labels have a rendered size without any hover, a click on "score" sorts the table
        // (ascending, then descending), and a search for one node's id leaves exactly its row visible.
        string probe = Path.Combine(dir, "probe.html");
        var ids = nodes.Select(n => n.GetProperty("id").GetString()!).ToList();
        string firstId = ids.Last(id => ids.Count(other => other.Contains(id, StringComparison.Ordinal)) == 1); // no other id contains it
        File.WriteAllText(probe, html.Replace("</body>", $$"""
            <script>
            (function () {
              var sized = 0; document.querySelectorAll("#graph .nlabel").forEach(function (t) { var b = t.getBBox(); if (b.width > 10 && b.height > 4) sized++; });
              var table = document.getElementById("nodes"), th = table.querySelectorAll("th")[6];
              function scores() { return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return parseFloat(r.cells[6].getAttribute("data-v")); }); }
              function sorted(a, dir) { for (var i = 1; i < a.length; i++) if (dir * (a[i] - a[i - 1]) < 0) return false; return true; }
              th.click(); var up = sorted(scores(), 1); th.click(); var down = sorted(scores(), -1);
              var search = document.getElementById("node-search"); search.value = {{System.Text.Json.JsonSerializer.Serialize(firstId)}};
              search.dispatchEvent(new Event("input"));
              var visible = Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return !r.hidden; }).length;
              console.log("VIEWPROBE sized=" + sized + " up=" + up + " down=" + down + " visible=" + visible);
            })();
            </script>
            </body>
            """));
        var (_, console) = HeadlessChromium.DumpDom(probe);
        string line = console.SingleOrDefault(l => l.Contains("VIEWPROBE")) ?? "";
        Assert.True(console.Count == 1, "console messages: " + string.Join(" | ", console));
        Assert.Contains("VIEWPROBE sized=15 up=true down=true visible=1", line);
    }
}
