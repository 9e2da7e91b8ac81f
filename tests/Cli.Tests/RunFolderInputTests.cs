using System.Text.Json.Nodes;
using NeuronTrace.Model;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Runs;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// A run folder read by steer, view and edges: every corrupted file gives exit 1 and ONE stderr line naming the file
/// (never an internal error, never exit 0 with bad nodes or lines silently ignored). Each test corrupts a copy of one
/// small valid run.
/// </summary>
[Collection("console")]
public class RunFolderInputTests(SmallRunFixture run) : IClassFixture<SmallRunFixture>
{
    static readonly string[] Readers = ["steer", "view", "edges"];

    static string Summary(string dir) => Path.Combine(dir, "summary.json");
    static string Circuit(string dir) => Path.Combine(dir, "circuits", "relp_mlp_act.json");

    static void EditJson(string file, Action<JsonObject> edit)
    {
        var root = JsonNode.Parse(File.ReadAllText(file))!.AsObject();
        edit(root);
        File.WriteAllText(file, root.ToJsonString());
    }

    static void EditFirstNode(string dir, Action<JsonObject> edit) =>
        EditJson(Circuit(dir), c => edit(c["nodes"]![0]!.AsObject()));

    static (int Exit, string Out, string Err) Read(string command, string dir, params string[] more) =>
        CliHarness.Run([command, "--run", dir, .. more]);

    /// <summary>Every reading command gives exit 1 and one line holding the file name and the texts.</summary>
    static void AllReadersFail(string dir, string file, params string[] texts)
    {
        foreach (var cmd in Readers)
            CliHarness.AssertOneLineError(Read(cmd, dir), 1, [file, .. texts]);
    }

    [Theory]
    [InlineData("[]", "expected a JSON object, got an array")]
    [InlineData("\"x\"", "expected a JSON object, got \"x\"")]
    [InlineData("{\"circuits\": [{\"method\": 5, \"site\": \"mlp_act\"}]}", "field circuits[0].method: expected a string, got 5")]
    [InlineData("{not json", "malformed JSON")]
    public void SummaryOfTheWrongShape(string json, string message)
    {
        string dir = run.Copy("bad-run");
        File.WriteAllText(Summary(dir), json);
        AllReadersFail(dir, Summary(dir), message);
    }

    [Theory]
    [InlineData("train_examples", "1.5", "field train_examples: expected an integer, got 1.5")]
    [InlineData("train_examples", "\"8\"", "field train_examples: expected an integer, got \"8\"")]
    [InlineData("eval_lines", "[\"a\"]", "field eval_lines[0]: expected an integer, got \"a\"")]
    [InlineData("eval_lines", "[1.5]", "field eval_lines[0]: expected an integer, got 1.5")]
    [InlineData("eval_lines", "[]", "eval_lines is empty")]
    [InlineData("eval_lines", "[0]", "field eval_lines[0]: 0 is out of range")]
    [InlineData("eval_lines", "5", "field eval_lines: expected an array, got 5")]
    [InlineData("model", "3", "field model: expected a string, got 3")]
    [InlineData("format", "\"neurontrace-trace/9\"", "is not neurontrace-trace/1")]
    public void SummaryFieldOfTheWrongType(string field, string json, string message)
    {
        string dir = run.Copy("bad-run");
        EditJson(Summary(dir), s => s[field] = JsonNode.Parse(json));
        AllReadersFail(dir, Summary(dir), message);
    }

    [Fact]
    public void TrainingCountOutOfRangeIsRefused()
    {
        string dir = run.Copy("bad-run");
        EditJson(Summary(dir), s => { s.Remove("eval_lines"); s["train_examples"] = -3; });
        AllReadersFail(dir, Summary(dir), "field train_examples: -3 is out of range");

        // 500 training lines leave none of the 96-line task for evaluation (found once the task is loaded).
        EditJson(Summary(dir), s => { s.Remove("train_lines"); s["train_examples"] = 500; });
        foreach (var cmd in new[] { "steer", "edges" })
            CliHarness.AssertOneLineError(Read(cmd, dir), 1, Summary(dir), "train_examples", "no evaluation examples");

        // Neither recorded: the held-out lines are unknown, so neither command guesses.
        EditJson(Summary(dir), s => s.Remove("train_examples"));
        foreach (var cmd in new[] { "steer", "edges" })
            CliHarness.AssertOneLineError(Read(cmd, dir), 1, Summary(dir), "neither eval_lines nor train_examples");
    }

    [Fact]
    public void EvaluationLinesMustBeLinesOfTheTask()
    {
        string dir = run.Copy("bad-run");
        EditJson(Summary(dir), s => s["eval_lines"] = new JsonArray(9, 10, 9999));
        EditJson(Summary(dir), s => s.Remove("eval_examples"));
        foreach (var cmd in new[] { "steer", "edges" })
            CliHarness.AssertOneLineError(Read(cmd, dir), 1, Summary(dir), "eval_lines: line 9999 is not an example line");

        EditJson(Summary(dir), s => s["eval_lines"] = new JsonArray(1, 9));
        AllReadersFail(dir, Summary(dir), "line 1 is in both train_lines and eval_lines");
    }

    [Fact]
    public void MissingRecordedModelIsAnErrorUnlessModelIsGiven()
    {
        string dir = run.Copy("bad-run");
        string gone = Path.Combine(RepoPaths.TempDir("gone"), "moved-model.bin");
        EditJson(Summary(dir), s => s["model"] = gone);
        AllReadersFail(dir, Summary(dir), gone, "--model");

        var steer = Read("steer", dir, "--model", RepoPaths.Stories260KBin, "--k", "5");
        Assert.True(steer.Exit == 0, steer.Err);
        Assert.Contains("held-out", steer.Out);
        var view = Read("view", dir, "--model", RepoPaths.Stories260KBin, "--max-nodes", "5");
        Assert.True(view.Exit == 0, view.Err);
    }

    [Theory]
    [InlineData("99999999999", "line 2, column k: expected an integer, got \"99999999999\"")]
    [InlineData("abc", "line 2, column k: expected an integer, got \"abc\"")]
    [InlineData("-1", "line 2, column k: -1 is out of range")]
    public void SweepCsvWithABadK(string k, string message)
    {
        string dir = run.Copy("bad-run");
        string path = Path.Combine(dir, "sweep.csv");
        var lines = File.ReadAllLines(path);
        var cells = lines[1].Split(',');
        cells[Array.IndexOf(lines[0].Split(','), "k")] = k;
        lines[1] = string.Join(",", cells);
        File.WriteAllLines(path, lines);
        AllReadersFail(dir, path, message);
    }

    [Theory]
    [InlineData("layer", 99, "layer 99 is outside the run's 5 layers")]
    [InlineData("layer", -1, "layer -1 is negative")]
    [InlineData("index", 999, "index 999 is outside the")]
    [InlineData("index", -5, "index -5 is negative")]
    [InlineData("position", 99, "position 99 is past the")]
    [InlineData("position", 600, "position 600 is past the")]
    [InlineData("position", -1, "position -1 is negative")]
    public void CircuitNodeOutOfRange(string field, int value, string message)
    {
        string dir = run.Copy("bad-run");
        EditFirstNode(dir, n => n[field] = value);
        AllReadersFail(dir, Circuit(dir), "nodes[0]", message);
    }

    [Fact]
    public void WithoutScoresNodesAreCheckedAgainstTheModelAndTheTask()
    {
        string dir = run.Copy("bad-run");
        Directory.Delete(Path.Combine(dir, "scores"), recursive: true);
        EditFirstNode(dir, n => n["layer"] = 7);
        AllReadersFail(dir, Circuit(dir), "nodes[0]", "layer 7 is outside the 5 layers of the model");

        EditFirstNode(dir, n => { n["layer"] = 0; n["position"] = 600; });
        CliHarness.AssertOneLineError(Read("view", dir), 1, Circuit(dir), "nodes[0]", "position 600 is past the 512-token context");

        // Past every prompt of the task: steer and edges would patch nothing for this node.
        EditFirstNode(dir, n => n["position"] = 99);
        AllReadersFail(dir, Circuit(dir), "nodes[0]", "position 99 from the end is past the longest prompt");
    }

    [Fact]
    public void CircuitSitesMustMatchTheFile()
    {
        string dir = run.Copy("bad-run");
        EditFirstNode(dir, n => n["site"] = "attn");
        AllReadersFail(dir, Circuit(dir), "nodes[0]: site \"attn\" in a mlp_act circuit");

        dir = run.Copy("bad-run");
        EditJson(Circuit(dir), c => c["site"] = "resid");
        AllReadersFail(dir, Circuit(dir), "field site: \"resid\" does not match the file name");
    }

    [Theory]
    [InlineData("total_nodes", "-1", "field total_nodes: -1 is out of range")]
    [InlineData("total_nodes", "1.5", "field total_nodes: expected an integer, got 1.5")]
    [InlineData("total_nodes", "12", "field total_nodes: 12 is less than")]
    [InlineData("nodes", "{}", "field nodes: expected an array, got an object")]
    [InlineData("faithfulness", "\"high\"", "field faithfulness: expected a number, got \"high\"")]
    [InlineData("k", "3", "field k: 3, but")]
    public void CircuitFieldOfTheWrongValue(string field, string json, string message)
    {
        string dir = run.Copy("bad-run");
        EditJson(Circuit(dir), c => c[field] = JsonNode.Parse(json));
        AllReadersFail(dir, Circuit(dir), message);
    }

    [Theory]
    [InlineData("layer", "1.5", "field nodes[0].layer: expected an integer, got 1.5")]
    [InlineData("score", "\"big\"", "field nodes[0].score: expected a number, got \"big\"")]
    public void CircuitNodeFieldOfTheWrongType(string field, string json, string message)
    {
        string dir = run.Copy("bad-run");
        EditFirstNode(dir, n => n[field] = JsonNode.Parse(json));
        AllReadersFail(dir, Circuit(dir), message);
        EditFirstNode(dir, n => n.Remove(field));
        AllReadersFail(dir, Circuit(dir), $"field nodes[0].{field} is missing");
    }

    [Fact]
    public void ScoresIndexOfTheWrongShape()
    {
        string dir = run.Copy("bad-run");
        string scores = Path.Combine(dir, "scores", "relp", "scores.json");
        EditJson(scores, s => s["positions"] = "many");
        AllReadersFail(dir, scores, "field positions: expected an integer, got \"many\"");
    }

    [Fact]
    public void ValidRunReadsBack()
    {
        var folder = RunFolder.Open(run.Dir);
        var c = folder.ReadCircuit();
        var grid = folder.ReadScoreGrid("relp")!;
        Assert.Equal(grid.Sites[NodeSite.MlpAct].Layers * grid.Positions * grid.Sites[NodeSite.MlpAct].Width, c.TotalNodes);
        Assert.NotEmpty(folder.Sweep);
        Assert.Equal(8, folder.EvalLines!.Length);
    }

    [Fact]
    public void SteerOptionsOfTheOtherModeOrOutOfRangeAreRefused()
    {
        CliHarness.AssertOneLineError(CliHarness.Run("steer", "-p", "Lily was sad.", "-e", "L0/N0=x2", "--k", "3"), 2, "--k applies to --run mode only");
        CliHarness.AssertOneLineError(CliHarness.Run("steer", "-p", "Lily was sad.", "-e", "L0/N0=x2", "--method", "relp"), 2, "--method applies to --run mode only");
        CliHarness.AssertOneLineError(CliHarness.Run("steer", "--run", run.Dir, "--top", "0"), 2, "--top must be at least 1");
        CliHarness.AssertOneLineError(CliHarness.Run("steer", "--run", run.Dir, "-n=-1"), 2, "--steps must not be negative");
        CliHarness.AssertOneLineError(CliHarness.Run("steer", "--run", run.Dir, "--top", "5"), 2, "--top applies to --prompt mode only");
        CliHarness.AssertOneLineError(CliHarness.Run("steer", "--run", run.Dir, "--source", "Max"), 2, "--source applies to --prompt mode only");
        CliHarness.AssertOneLineError(CliHarness.Run("steer", "--run", run.Dir, "--k", "0"), 2, "--k must be at least 1");
    }

    [Fact]
    public void SourceEditPastTheSourcePromptIsRefused()
    {
        var r = CliHarness.Run("steer", "-p", "Lily was sad and Tim", "-e", "L0/N0@P5=src", "--source", "Max", "-n", "0");
        CliHarness.AssertOneLineError(r, 2, "L0/N0@P5=src", "position 5 from the end", "-token source prompt");
        // An edit the source does reach still works.
        var ok = CliHarness.Run("steer", "-p", "Lily was sad and Tim", "-e", "L0/N0@P0=src", "--source", "Max", "-n", "0");
        Assert.True(ok.Exit == 0, ok.Err);
        Assert.Contains("1 value(s) changed", ok.Out);
    }
}
