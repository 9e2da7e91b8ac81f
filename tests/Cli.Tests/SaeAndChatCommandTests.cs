using System.Globalization;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>trace/attribute with --sae on the bundled model, and the chat and hub-id inputs of the commands.</summary>
[Collection("console")]
public sealed class SaeAndChatCommandTests : IDisposable
{
    readonly string _dir = RepoPaths.TempDir("saecli");
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static string Sae(string name) => Path.Combine(RepoPaths.Fixtures, "sae", name);

    static List<string[]> Csv(string file) => File.ReadAllLines(file).Skip(1).Select(l => l.Split(',')).ToList();

    [Fact]
    public void TraceWithSaesReportsSaeCircuitsBesideNeuronCircuits()
    {
        string run = Path.Combine(_dir, "run");
        var r = CliHarness.Run("trace", "--sites", "mlp_act", "--k-points", "8", "--sae", Sae("saelens_jumprelu"), Sae("resid_2"), "--out", run);
        Assert.True(r.Exit == 0, r.Err);
        Assert.Contains("faithfulness per basis:", r.Out);
        Assert.Contains("sae saelens_jumprelu", r.Out);
        Assert.Contains("sae resid_2", r.Out);
        Assert.Contains("neurons", r.Out);

        var circuits = Csv(Path.Combine(run, "sae_circuits.csv"));
        Assert.Equal(2, circuits.Count);
        var sweep = Csv(Path.Combine(run, "sae_sweep.csv"));
        foreach (var c in circuits)
        {
            Assert.Equal(("resid", "2", "relp"), (c[1], c[2], c[3]));
            int total = int.Parse(c[5]);
            Assert.Equal(0, total % 257); // 256 features + 1 error node per position
            var points = sweep.Where(s => s[0] == c[0]).Select(s => (K: int.Parse(s[4]), F: double.Parse(s[5], CultureInfo.InvariantCulture))).ToList();
            Assert.Equal(8, points.Count);
            var full = points.Single(p => p.K == total);
            Assert.True(Math.Abs(full.F - 1) < 1e-9, $"all SAE nodes kept: faithfulness {full.F}");
            // The reported k is the smallest swept k reaching the target.
            var first = points.Where(p => p.F >= 0.8).MinBy(p => p.K);
            Assert.Equal(first.K.ToString(CultureInfo.InvariantCulture), c[6]);
        }
        // The same SAE in two layouts: the same circuit.
        Assert.Equal(circuits[0][6], circuits[1][6]);
        Assert.Equal(double.Parse(circuits[0][7], CultureInfo.InvariantCulture), double.Parse(circuits[1][7], CultureInfo.InvariantCulture), 4);
    }

    [Fact]
    public void AttributeWithAnSaeSplitsTheResidScoreIntoFeaturesAndError()
    {
        string outDir = Path.Combine(_dir, "scores");
        var r = CliHarness.Run("attribute", "--method", "atp", "--sites", "resid", "--limit", "8", "--sae", Sae("saelens_topk"), "--out", outDir);
        Assert.True(r.Exit == 0, r.Err);
        // scores.csv: node, site, layer, position, index, score
        var neuron = Csv(Path.Combine(outDir, "scores.csv")).Where(s => s[2] == "2")
            .GroupBy(s => int.Parse(s[3])).ToDictionary(g => g.Key, g => g.Sum(s => double.Parse(s[5], CultureInfo.InvariantCulture)));
        var sae = Csv(Path.Combine(outDir, "sae_saelens_topk.csv"));
        Assert.All(sae, s => Assert.Equal(("resid", "2"), (s[0], s[1])));
        Assert.Contains(sae, s => s[3] == "error");
        var bySite = sae.GroupBy(s => int.Parse(s[2])).ToDictionary(g => g.Key, g => g.Sum(s => double.Parse(s[4], CultureInfo.InvariantCulture)));
        Assert.Equal(neuron.Keys.Order(), bySite.Keys.Order());
        double scale = neuron.Values.Max(Math.Abs);
        foreach (var (p, v) in neuron)
            Assert.True(Math.Abs(bySite[p] - v) <= 1e-4 * scale, $"position {p}: features + error {bySite[p]} vs resid AtP sum {v}");
    }

    [Fact]
    public void SaeWithTheWrongMethodOrHookIsOneLine()
    {
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--method", "ig", "--sae", Sae("resid_2"), "--out", Path.Combine(_dir, "a")), 2, "--sae needs --method atp or relp");
        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--sae", Path.Combine(_dir, "none"), "--out", Path.Combine(_dir, "b")), 1, "SAE folder not found");
    }

    [Fact]
    public void ChatPromptOnAModelWithoutLlama3SpecialsIsOneLine() =>
        CliHarness.AssertOneLineError(CliHarness.Run("generate", "--prompt", """[{"role": "user", "content": "Hi"}]""", "-n", "8"), 2,
            "chat messages need a tokenizer with Llama 3 special tokens");

    [Fact]
    public void MissingHubIdNamesTheCacheFolder()
    {
        var r = CliHarness.Run("generate", "--model", "no-such-org/no-such-model", "-n", "4");
        CliHarness.AssertOneLineError(r, 1, "models--no-such-org--no-such-model", "nothing is downloaded", "huggingface-cli download no-such-org/no-such-model");
    }
}
