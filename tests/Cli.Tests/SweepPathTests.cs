using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// trace --sweep-path: the exact shortcuts are the default and recorded in summary.json; the plain reference gives the
/// same sweep.csv up to rounding; a summary written before the field existed reproduces on the plain path.
/// </summary>
[Collection("console")]
public class SweepPathTests(CliRunFixture run) : IClassFixture<CliRunFixture>
{
    [Fact]
    public void ShortcutsAreTheDefaultAndEqualPlainUpToRounding()
    {
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(run.Dir, "summary.json")))!;
        Assert.Equal("shortcuts", (string?)summary["options"]!["sweep_path"]);

        string dir = RepoPaths.TempDir("sweep-path");
        string plain = Path.Combine(dir, "plain");
        var r = CliHarness.Run("trace", "--task", run.TaskPath, "--sites", "mlp_act,attn", "--k-points", "4", "--seed", "3",
            "--sweep-path", "plain", "--out", plain);
        Assert.True(r.Exit == 0, r.Err);
        var plainSummary = JsonNode.Parse(File.ReadAllText(Path.Combine(plain, "summary.json")))!;
        Assert.Equal("plain", (string?)plainSummary["options"]!["sweep_path"]);

        // Scores are fractions of the metric's range: 1e-5 absolute is 1e-5 of the range (issue 18's bound).
        var a = SweepValues(Path.Combine(run.Dir, "sweep.csv"));
        var b = SweepValues(Path.Combine(plain, "sweep.csv"));
        Assert.Equal(a.Count, b.Count);
        Assert.True(a.Count >= 8, "both sites' k points");
        double worst = 0;
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Key, b[i].Key);
            for (int j = 0; j < a[i].Values.Length; j++) worst = Math.Max(worst, Math.Abs(a[i].Values[j] - b[i].Values[j]));
        }
        Assert.True(worst <= 1e-5, $"shortcuts vs plain sweep.csv differ by {worst:E2}");

        // An old summary (no sweep_path) is reproduced on the plain path it was run on: byte for byte the plain run.
        var old = JsonNode.Parse(File.ReadAllText(Path.Combine(plain, "summary.json")))!;
        old["options"]!.AsObject().Remove("sweep_path");
        string oldSummary = Path.Combine(dir, "old-summary.json");
        File.WriteAllText(oldSummary, old.ToJsonString());
        string again = Path.Combine(dir, "again");
        r = CliHarness.Run("trace", "--from-summary", oldSummary, "--out", again);
        Assert.True(r.Exit == 0, r.Err);
        Assert.Equal(File.ReadAllText(Path.Combine(plain, "sweep.csv")), File.ReadAllText(Path.Combine(again, "sweep.csv")));
        Assert.Equal("plain", (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(again, "summary.json")))!["options"]!["sweep_path"]);

        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--from-summary", oldSummary, "--sweep-path", "plain", "--out", again + "2"), 2,
            "--sweep-path cannot be given with --from-summary");
        old["options"]!["sweep_path"] = "fast";
        File.WriteAllText(oldSummary, old.ToJsonString());
        var bad = CliHarness.Run("trace", "--from-summary", oldSummary, "--out", again + "3");
        Assert.NotEqual(0, bad.Exit);
        Assert.Contains("sweep_path", bad.Err);
        Assert.Contains("\"fast\"", bad.Err);
        Assert.False(Directory.Exists(again + "3"));
    }

    [Fact]
    public void AnUnknownSweepPathIsOneLine()
    {
        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--task", run.TaskPath, "--sweep-path", "fast"), 2,
            "unknown --sweep-path", "plain", "shortcuts");
    }

    static List<(string Key, double[] Values)> SweepValues(string path) =>
        File.ReadAllLines(path).Skip(1).Where(l => l.Length > 0).Select(l =>
        {
            var f = l.Split(',');
            return ($"{f[0]},{f[1]},{f[2]}", new[] { 3, 4, 5, 6 }.Select(i => double.Parse(f[i], CultureInfo.InvariantCulture)).ToArray());
        }).ToList();
}
