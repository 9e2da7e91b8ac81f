using NeuronTrace.Model;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>Every bad input gives one line on stderr naming the problem and a non-zero exit code, never a stack trace.</summary>
[Collection("console")]
public class BadInputTests
{
    [Fact]
    public void MissingModelFile() =>
        CliHarness.AssertOneLineError(CliHarness.Run("info", "--model", "/nonexistent/model.bin"), 1, "/nonexistent/model.bin", "no such file");

    [Fact]
    public void TruncatedBinModel()
    {
        string dir = RepoPaths.TempDir("trunc");
        string path = Path.Combine(dir, "stories260K.bin");
        var bytes = File.ReadAllBytes(RepoPaths.Stories260KBin);
        File.WriteAllBytes(path, bytes[..(bytes.Length / 2)]);
        CliHarness.AssertOneLineError(CliHarness.Run("info", "--model", path), 1, path, "truncated");
    }

    [Fact]
    public void GgufWithBadMagic()
    {
        string path = Path.Combine(RepoPaths.TempDir("magic"), "bad.gguf");
        var bytes = File.ReadAllBytes(RepoPaths.Stories260KGguf);
        bytes[0] = (byte)'X';
        File.WriteAllBytes(path, bytes);
        CliHarness.AssertOneLineError(CliHarness.Run("info", "--model", path), 1, path, "magic");
    }

    [Fact]
    public void UnknownFlag() => CliHarness.AssertOneLineError(CliHarness.Run("trace", "--frobnicate"), 2, "--frobnicate");

    [Fact]
    public void UnknownMethodAndSite()
    {
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--method", "shap", "--out", RepoPaths.TempDir("m")), 2, "shap");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--sites", "mlp_act,neurons", "--out", RepoPaths.TempDir("s")), 2, "neurons");
    }

    [Fact]
    public void MalformedTaskLineNamesTheLine()
    {
        string path = Path.Combine(RepoPaths.TempDir("task"), "bad.jsonl");
        File.WriteAllText(path, "{\"clean_prefix\": \"Lily was sad.\", \"patch_prefix\": \"Tim was sad.\", \"clean_answer\": \" She\", \"patch_answer\": \" He\"}\n{not json\n");
        string outDir = Path.Combine(RepoPaths.TempDir("out"), "scores");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--task", path, "--out", outDir), 1, path, "line 2", "malformed JSON");
        Assert.False(Directory.Exists(outDir), "no output may be written for bad input");
    }

    [Fact]
    public void EmptyTaskAndMultiTokenAnswerAndUnequalLengths()
    {
        string dir = RepoPaths.TempDir("task2");
        string empty = Path.Combine(dir, "empty.jsonl");
        File.WriteAllText(empty, "\n");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--task", empty, "--out", Path.Combine(dir, "o1")), 1, "no examples");

        string multi = Path.Combine(dir, "multi.jsonl");
        File.WriteAllText(multi, "{\"clean_prefix\": \"The trees\", \"patch_prefix\": \"The tree\", \"clean_answer\": \" were\", \"patch_answer\": \" was\"}\n");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--task", multi, "--out", Path.Combine(dir, "o2")), 1, "line 1", "\" were\" is not one token");

        string unequal = Path.Combine(dir, "unequal.jsonl");
        File.WriteAllText(unequal, "{\"clean_prefix\": \"Lily was sad.\", \"patch_prefix\": \"Timmy went to the park.\", \"clean_answer\": \" She\", \"patch_answer\": \" He\"}\n");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--task", unequal, "--out", Path.Combine(dir, "o3")), 1, "line 1", "tokens");
    }

    [Fact]
    public void ExistingRunFolderIsNotOverwrittenWithoutForce()
    {
        string dir = RepoPaths.TempDir("exists");
        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--out", dir), 2, "already exists");
    }

    [Fact]
    public void CudaWithoutAGpuExplainsItselfInOneLine() =>
        CliHarness.AssertOneLineError(CliHarness.Run("generate", "--device", "cuda", "--steps", "3"), 2, "--device cuda");
}

[Collection("console")]
public class EdgesBadInputTests
{
    [Fact]
    public void MissingRunFolderIsOneLine()
    {
        var r = CliHarness.Run("edges", "--run", "/nonexistent/run");
        Assert.NotEqual(0, r.Exit);
        Assert.Single(r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("/nonexistent/run", r.Err);
    }
}
