using System.Text.Json;
using NeuronTrace.TestSupport;
using NeuronTrace.Formats.Tokenizers;

namespace NeuronTrace.Cli.Tests;

/// <summary>The success paths of convert, generate and info, checked against upstream llama2.c's golden output.</summary>
[Collection("console")]
public class ModelCommandsTests
{
    static readonly JsonElement OnceUponATime = JsonDocument.Parse(File.ReadAllText(Path.Combine(RepoPaths.Golden, "golden.json")))
        .RootElement.GetProperty("prompts").EnumerateArray().Single(p => p.GetProperty("prompt").GetString() == "Once upon a time");

    /// <summary>Each "name   value" line of info's output.</summary>
    static Dictionary<string, string> InfoFields(string stdout) => stdout
        .Split('\n', StringSplitOptions.RemoveEmptyEntries)
        .Select(l => l.Split(' ', 2))
        .ToDictionary(p => p[0], p => p[1].Trim());

    [Fact]
    public void ConvertedHfFolderGeneratesTheGoldenGreedyTextAndReportsItsConfig()
    {
        string hf = Path.Combine(RepoPaths.TempDir("convert"), "stories260K-hf");
        var convert = CliHarness.Run("convert", "--model", RepoPaths.Stories260KBin, "--to", "hf", "--out", hf);
        Assert.Equal((0, ""), (convert.Exit, convert.Err));
        Assert.Equal($"wrote {hf}", convert.Out.Trim());
        Assert.Equal(["config.json", "model.safetensors", "tok512.bin"], Directory.GetFiles(hf).Select(Path.GetFileName).Order());

        var greedy = OnceUponATime.GetProperty("greedy");
        var generate = CliHarness.Run("generate", "--model", hf, "--prompt", "Once upon a time", "--steps", greedy.GetProperty("steps").GetInt32().ToString());
        Assert.Equal(0, generate.Exit);
        Assert.Equal(greedy.GetProperty("text").GetString() + Environment.NewLine, generate.Out);
        Assert.Matches(@"^\d+ tokens in ", generate.Err);

        var info = CliHarness.Run("info", "--model", hf);
        Assert.Equal((0, ""), (info.Exit, info.Err));
        var f = InfoFields(info.Out);
        Assert.Equal(Path.GetFullPath(hf), f["model"]);
        Assert.Equal("hf", f["format"]);
        Assert.Equal("64", f["dim"]);
        Assert.Equal("172", f["hidden_dim"]);
        Assert.Equal("5", f["layers"]);
        Assert.Equal("8 (kv heads 4, head size 8)", f["heads"]);
        Assert.Equal("512", f["vocab"]);
        Assert.Equal("512", f["max_seq_len"]);
        Assert.Equal("theta 10000, rotate_half", f["rope"]);
        Assert.Equal("tied to the token embedding", f["classifier"]);
        Assert.Equal("Llama2cTokenizer", f["tokenizer"]);
    }

    [Fact]
    public void BundledFolderMeansItsBinModel()
    {
        string folder = Path.GetDirectoryName(RepoPaths.Stories260KBin)!;
        var info = CliHarness.Run("info", "--model", folder);
        Assert.Equal((0, ""), (info.Exit, info.Err));
        var f = InfoFields(info.Out);
        Assert.Equal(RepoPaths.Stories260KBin, f["model"]);
        Assert.Equal("llama2.c", f["format"]);
        Assert.Equal("theta 10000, interleaved pairs", f["rope"]);
        Assert.Equal("8 (kv heads 4, head size 8)", f["heads"]);
    }

    [Theory]
    [InlineData("hf", "nope")]
    [InlineData("gguf", "nope.gguf")]
    public void UnwritableOutputIsReportedByThePathGiven(string format, string name)
    {
        // The output's parent is a file, so the hidden temporary beside the target cannot be created.
        string parent = Path.Combine(RepoPaths.TempDir("unwritable"), "a-file");
        File.WriteAllText(parent, "");
        string target = Path.Combine(parent, name);
        var r = CliHarness.Run("convert", "--to", format, "--out", target);
        Assert.Equal(1, r.Exit);
        Assert.Equal($"neurontrace: error: {target}: cannot write ({parent} is a file, not a folder)", r.Err.Trim());
        Assert.DoesNotContain(".tmp", r.Err);
    }
}
