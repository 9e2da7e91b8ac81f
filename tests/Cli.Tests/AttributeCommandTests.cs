using System.Globalization;
using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// <c>attribute</c> writes the library's scores: the binary arrays at the offsets its index names, and the same numbers
/// in the CSV, positions counted from the end.
/// </summary>
[Collection("console")]
public class AttributeCommandTests
{
    static readonly string TaskFile = Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl");

    static (PromptTask Task, Llama Model) Library()
    {
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        var task = PromptTask.Load(TaskFile, loaded.RequireTokenizer()).Take(6);
        return (task, new Llama(loaded.Weights, CpuBackend.Instance));
    }

    [Theory]
    [InlineData(null, 0)]
    [InlineData("top-logits", 3)]
    public void FilesHoldTheLibraryScores(string? metricName, int k)
    {
        string dir = Path.Combine(RepoPaths.TempDir("attr"), "scores");
        var args = new List<string> { "attribute", "--task", TaskFile, "--limit", "6", "--method", "relp", "--sites", "mlp_act,attn", "--out", dir };
        if (metricName is not null) args.AddRange(["--metric", metricName, "--top-logits-k", k.ToString(CultureInfo.InvariantCulture)]);
        var r = CliHarness.Run(args.ToArray());
        Assert.True(r.Exit == 0, r.Err);

        var (task, model) = Library();
        using var _ = model;
        Metric metric = metricName is null ? Metric.TowardsPatch : Metric.SumOfTopKLogits(model, task, k);
        var expected = Attributor.Score(model, task, new AttributionOptions { Method = AttributionMethod.RelP, Sites = [NodeSite.MlpAct, NodeSite.Attn], Metric = metric });

        var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "scores.json"))).RootElement;
        Assert.Equal("relp", index.GetProperty("method").GetString());
        Assert.Equal(metric.Name, index.GetProperty("metric").GetString());
        Assert.Equal(6, index.GetProperty("examples").GetInt32());
        var bytes = File.ReadAllBytes(Path.Combine(dir, "scores.f32"));
        int arrays = 0;
        foreach (var a in index.GetProperty("arrays").EnumerateArray())
        {
            var site = NodeSites.ParseList(a.GetProperty("site").GetString()!)[0];
            int layer = a.GetProperty("layer").GetInt32();
            var want = expected.Get(site, layer);
            var got = new float[want.Length];
            Buffer.BlockCopy(bytes, (int)a.GetProperty("offset_bytes").GetInt64(), got, 0, got.Length * 4);
            Assert.Equal(want, got);
            arrays++;
        }
        Assert.Equal(2 * model.Config.Layers, arrays);

        var rows = File.ReadAllLines(Path.Combine(dir, "scores.csv"));
        Assert.Equal("node,site,layer,position,index,score", rows[0]);
        long nodes = expected.NodeCount(NodeSite.MlpAct) + expected.NodeCount(NodeSite.Attn);
        Assert.Equal(nodes, rows.Length - 1);
        foreach (var row in rows.Skip(1).Where((_, i) => i % 97 == 0))
        {
            var f = row.Split(',');
            var node = new NodeId(NodeSites.ParseList(f[1])[0], int.Parse(f[2], CultureInfo.InvariantCulture), int.Parse(f[3], CultureInfo.InvariantCulture), int.Parse(f[4], CultureInfo.InvariantCulture));
            Assert.Equal(node, NodeId.Parse(f[0]));
            Assert.Equal(expected[node], float.Parse(f[5], CultureInfo.InvariantCulture));
        }
    }

    [Fact]
    public void BadMetricsAreRefusedBeforeAnythingIsWritten()
    {
        string root = RepoPaths.TempDir("attr-bad");
        void Refused(string why, params string[] extra)
        {
            string dir = Path.Combine(root, Guid.NewGuid().ToString("N"));
            var r = CliHarness.Run(["attribute", "--task", TaskFile, "--limit", "2", "--out", dir, .. extra]);
            Assert.Equal(2, r.Exit);
            Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Contains(why, r.Err);
            Assert.False(Directory.Exists(dir));
        }
        Refused("unknown --metric \"logits\"", "--metric", "logits");
        Refused("--top-logits-k must be at least 1", "--metric", "top-logits", "--top-logits-k", "0");
        var negative = CliHarness.Run("attribute", "--task", TaskFile, "--limit=-3", "--out", Path.Combine(root, "neg"));
        Assert.Equal(2, negative.Exit);
        Assert.Contains("--limit must be 0", negative.Err);
        string unpaired = Path.Combine(root, "unpaired.jsonl");
        File.WriteAllText(unpaired, "{\"clean_prefix\": \"Mia found a ball.\", \"clean_answer\": \" She\"}\n");
        string dir2 = Path.Combine(root, "o");
        var r2 = CliHarness.Run("attribute", "--task", unpaired, "--metric", "logit-diff", "--out", dir2);
        Assert.Equal(2, r2.Exit);
        Assert.Contains("patch_answer", r2.Err);
        Assert.False(Directory.Exists(dir2));
    }

    [Theory]
    [InlineData("zero")]
    [InlineData("mean")]
    public void InputIntegratedGradientsNeedThePatchBaseline(string baseline)
    {
        string dir = Path.Combine(RepoPaths.TempDir("attr-igi"), "o");
        var r = CliHarness.Run("attribute", "--task", TaskFile, "--limit", "2", "--method", "ig-inputs", "--baseline", baseline, "--out", dir);
        Assert.Equal(1, r.Exit);
        Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("patch baseline", r.Err);
        Assert.False(Directory.Exists(dir));
    }
}
