using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// The output policy (src/Cli/OutputPaths.cs): an existing output is replaced only with --force (a run folder's own
/// view/edges outputs excepted), --force replaces only an empty folder or one of the kind the command writes, an
/// output is never one of the command's inputs, bad output paths are named in one line, and a refused or failed
/// command leaves nothing behind. Every output here is under a fresh temporary folder.
/// </summary>
[Collection("console")]
public class OutputPolicyTests(SmallRunFixture fixture) : IClassFixture<SmallRunFixture>
{
    const string Keep = "keep me";

    static void Ok((int Exit, string Out, string Err) r) => Assert.True(r.Exit == 0, r.Err);

    static string KeepFile(string dir, string name)
    {
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, name);
        File.WriteAllText(path, Keep);
        return path;
    }

    static void NoHiddenLeftovers(string dir) =>
        Assert.DoesNotContain(Directory.GetFileSystemEntries(dir), p => Path.GetFileName(p).StartsWith('.'));

    [Fact]
    public void ViewAndEdgesReplaceAnExistingFileOnlyWithForce()
    {
        string dir = RepoPaths.TempDir("policy-files");
        string target = KeepFile(dir, "existing.txt");
        CliHarness.AssertOneLineError(CliHarness.Run("view", "--run", fixture.Dir, "--examples", "0", "-o", target), 2, $"{target} already exists (pass --force to replace it)");
        CliHarness.AssertOneLineError(CliHarness.Run("edges", "--run", fixture.Dir, "--top-nodes", "3", "-o", target), 2, $"{target} already exists (pass --force to replace it)");
        Assert.Equal(Keep, File.ReadAllText(target));
        Assert.Equal(["existing.txt"], Directory.GetFiles(dir).Select(Path.GetFileName));

        Ok(CliHarness.Run("view", "--run", fixture.Dir, "--examples", "0", "-o", target, "--force"));
        Assert.StartsWith("<!DOCTYPE html>", File.ReadAllText(target));
        Assert.True(File.Exists(Path.Combine(dir, "graph.json")));
        NoHiddenLeftovers(dir);

        // The file written beside --out does not clobber an unrelated file of that name either.
        string viewDir = RepoPaths.TempDir("policy-graph");
        string graph = KeepFile(viewDir, "graph.json");
        CliHarness.AssertOneLineError(CliHarness.Run("view", "--run", fixture.Dir, "--examples", "0", "-o", Path.Combine(viewDir, "v.html")), 2,
            $"{graph} (written beside --out) already exists (pass --force to replace it)");
        Assert.Equal(Keep, File.ReadAllText(graph));
        Assert.Equal(["graph.json"], Directory.GetFiles(viewDir).Select(Path.GetFileName));

        string edgesDir = RepoPaths.TempDir("policy-sweep");
        string sweep = KeepFile(edgesDir, "edge_sweep.csv");
        CliHarness.AssertOneLineError(CliHarness.Run("edges", "--run", fixture.Dir, "--top-nodes", "3", "-o", Path.Combine(edgesDir, "e.csv")), 2,
            $"{sweep} (written beside --out) already exists (pass --force to replace it)");
        Assert.Equal(Keep, File.ReadAllText(sweep));
        Assert.Equal(["edge_sweep.csv"], Directory.GetFiles(edgesDir).Select(Path.GetFileName));

        // --out may not be the name of the file written beside it.
        CliHarness.AssertOneLineError(CliHarness.Run("view", "--run", fixture.Dir, "--examples", "0", "-o", Path.Combine(viewDir, "graph.json"), "--force"), 2, "graph.json");
        Assert.Equal(Keep, File.ReadAllText(graph));
    }

    [Fact]
    public void ViewAndEdgesDefaultOutputsInTheRunFolderAreReplacedWithoutForce()
    {
        string run = fixture.Copy("policy-run");
        Ok(CliHarness.Run("view", "--run", run, "--examples", "0"));
        Ok(CliHarness.Run("view", "--run", run, "--examples", "0"));
        Ok(CliHarness.Run("view", "--run", run, "--examples", "0", "-o", Path.Combine(run, "view.html")));
        Ok(CliHarness.Run("edges", "--run", run, "--top-nodes", "3"));
        Ok(CliHarness.Run("edges", "--run", run, "--top-nodes", "3"));
        foreach (var f in new[] { "view.html", "graph.json", "edges.csv", "edge_sweep.csv" }) Assert.True(File.Exists(Path.Combine(run, f)), f);
        NoHiddenLeftovers(run);
    }

    [Fact]
    public void AnOutputIsNeverTheCommandsInputEvenWithForce()
    {
        string run = fixture.Copy("policy-run");
        string summary = File.ReadAllText(Path.Combine(run, "summary.json"));
        CliHarness.AssertOneLineError(CliHarness.Run("view", "--run", run, "--examples", "0", "-o", Path.Combine(run, "summary.json"), "--force"), 2, "is a file of the run folder");
        CliHarness.AssertOneLineError(CliHarness.Run("edges", "--run", run, "--top-nodes", "3", "-o", Path.Combine(run, "sweep.csv"), "--force"), 2, "is a file of the run folder");
        CliHarness.AssertOneLineError(CliHarness.Run("edges", "--run", run, "--top-nodes", "3", "-o", Path.Combine(run, "circuits", "relp_mlp_act.json"), "--force"), 2, "is a file of the run folder");
        Assert.Equal(summary, File.ReadAllText(Path.Combine(run, "summary.json")));
        Assert.False(File.Exists(Path.Combine(run, "graph.json")));
        Assert.False(File.Exists(Path.Combine(run, "edges.csv")));

        // attribute must not replace a trace run's scores.
        string scores = Path.Combine(run, "scores", "relp");
        byte[] before = File.ReadAllBytes(Path.Combine(scores, "scores.f32"));
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--sites", "mlp_act", "--limit", "2", "--out", scores, "--force"), 2, "part of the trace run folder");
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(scores, "scores.f32")));

        // convert: not over the model file, its tokenizer, or the model folder.
        string models = RepoPaths.TempDir("policy-model");
        string bin = Path.Combine(models, "stories260K.bin");
        File.Copy(RepoPaths.Stories260KBin, bin);
        File.Copy(RepoPaths.Tok512, Path.Combine(models, "tok512.bin"));
        byte[] model = File.ReadAllBytes(bin);
        CliHarness.AssertOneLineError(CliHarness.Run("convert", "--model", bin, "--to", "gguf", "-o", bin, "--force"), 2, $"{bin} is an input");
        CliHarness.AssertOneLineError(CliHarness.Run("convert", "--model", bin, "--to", "gguf", "-o", Path.Combine(models, "tok512.bin"), "--force"), 2, "is an input");
        CliHarness.AssertOneLineError(CliHarness.Run("convert", "--model", bin, "--to", "hf", "-o", models, "--force"), 2, $"{models} holds an input");
        Assert.Equal(model, File.ReadAllBytes(bin));
        Assert.Equal(["stories260K.bin", "tok512.bin"], Directory.GetFiles(models).Select(Path.GetFileName).Order());

        // trace and attribute: not a folder that holds the task.
        string taskDir = RepoPaths.TempDir("policy-task");
        string task = Path.Combine(taskDir, "t.jsonl");
        File.Copy(Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl"), task);
        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--task", task, "--out", taskDir, "--force"), 2, $"{taskDir} holds an input");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--task", task, "--out", taskDir, "--force"), 2, $"{taskDir} holds an input");
        Assert.True(File.Exists(task));
    }

    [Fact]
    public void ForceReplacesOnlyAnEmptyFolderOrOneTheCommandWrote()
    {
        string root = RepoPaths.TempDir("policy-force");
        string other = Path.Combine(root, "other");
        string kept = KeepFile(other, "data.bin");
        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--out", other, "--force"), 2, $"{other} is not empty and is not a NeuronTrace run folder");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--out", other, "--force"), 2, $"{other} is not empty and is not a scores folder");
        CliHarness.AssertOneLineError(CliHarness.Run("convert", "--to", "hf", "--out", other, "--force"), 2, $"{other} is not empty and is not a model folder written by convert");
        Assert.Equal(Keep, File.ReadAllText(kept));
        Assert.Single(Directory.GetFileSystemEntries(other));

        // A run folder is replaced as a whole (nothing of the old one survives).
        string run = fixture.Copy("policy-run");
        KeepFile(run, "stale.txt");
        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--sites", "mlp_act", "--k-points", "2", "--out", run), 2, $"{run} already exists (pass --force to replace it)");
        Ok(CliHarness.Run("trace", "--sites", "mlp_act", "--k-points", "2", "--out", run, "--force"));
        Assert.False(File.Exists(Path.Combine(run, "stale.txt")));
        Assert.True(File.Exists(Path.Combine(run, "summary.json")));
        NoHiddenLeftovers(Path.GetDirectoryName(run)!);

        // attribute: an empty folder and its own scores folder, only with --force.
        string scores = Path.Combine(root, "scores");
        Directory.CreateDirectory(scores);
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--sites", "mlp_act", "--limit", "2", "--out", scores), 2, $"{scores} already exists (pass --force to replace it)");
        Ok(CliHarness.Run("attribute", "--sites", "mlp_act", "--limit", "2", "--out", scores, "--force"));
        KeepFile(scores, "stale.txt");
        Ok(CliHarness.Run("attribute", "--sites", "mlp_act", "--limit", "2", "--out", scores, "--force"));
        Assert.Equal(["scores.csv", "scores.f32", "scores.json", "scores.safetensors"], Directory.GetFiles(scores).Select(Path.GetFileName).Order());

        // convert: a folder it wrote (hf), any file (gguf), only with --force.
        string hf = Path.Combine(root, "hf");
        Ok(CliHarness.Run("convert", "--to", "hf", "--out", hf));
        CliHarness.AssertOneLineError(CliHarness.Run("convert", "--to", "hf", "--out", hf), 2, $"{hf} already exists (pass --force to replace it)");
        Ok(CliHarness.Run("convert", "--to", "hf", "--out", hf, "--force"));
        string gguf = KeepFile(root, "m.gguf");
        CliHarness.AssertOneLineError(CliHarness.Run("convert", "--to", "gguf", "--out", gguf), 2, $"{gguf} already exists (pass --force to replace it)");
        Assert.Equal(Keep, File.ReadAllText(gguf));
        Ok(CliHarness.Run("convert", "--to", "gguf", "--out", gguf, "--force"));
        Assert.NotEqual(Keep, File.ReadAllText(gguf));
        NoHiddenLeftovers(root);
    }

    [Fact]
    public void EdgesWithUnpairedPromptsWritesNothing()
    {
        string dir = RepoPaths.TempDir("policy-unpaired");
        string task = Path.Combine(dir, "unpaired.jsonl");
        // The run's own prompts without their counterfactuals, so the circuit's positions fit them and the refusal is
        // the unpaired one.
        File.WriteAllLines(task, File.ReadLines(fixture.TaskPath).Where(l => l.Trim().Length > 0).Select(l =>
        {
            var o = System.Text.Json.Nodes.JsonNode.Parse(l)!.AsObject();
            o.Remove("patch_prefix"); o.Remove("patch_answer");
            return o.ToJsonString();
        }));
        string outDir = Path.Combine(dir, "out");
        CliHarness.AssertOneLineError(CliHarness.Run("edges", "--run", fixture.Dir, "-t", task, "--top-nodes", "3", "-o", Path.Combine(outDir, "e.csv")), 2, "needs paired prompts");
        Assert.DoesNotContain("was written", CliHarness.Run("edges", "--run", fixture.Dir, "-t", task, "--top-nodes", "3", "-o", Path.Combine(outDir, "e.csv")).Err);
        Assert.False(Directory.Exists(outDir));
    }

    [Fact]
    public void BadOutputPathsAreNamedInOneLine()
    {
        foreach (var args in new string[][]
                 {
                     ["trace", "--out", ""], ["attribute", "--out", ""], ["convert", "--to", "gguf", "--out", ""],
                     ["convert", "--to", "hf", "-o", ""], ["view", "--run", fixture.Dir, "--examples", "0", "-o", ""],
                     ["edges", "--run", fixture.Dir, "--top-nodes", "3", "-o", ""],
                 })
            CliHarness.AssertOneLineError(CliHarness.Run(args), 2, "--out: empty path");

        string dir = RepoPaths.TempDir("policy-paths");
        CliHarness.AssertOneLineError(CliHarness.Run("view", "--run", fixture.Dir, "--examples", "0", "-o", dir, "--force"), 2, $"{dir} is a folder; --out takes a file");
        CliHarness.AssertOneLineError(CliHarness.Run("edges", "--run", fixture.Dir, "--top-nodes", "3", "-o", dir), 2, $"{dir} is a folder; --out takes a file");
        CliHarness.AssertOneLineError(CliHarness.Run("convert", "--to", "gguf", "-o", dir, "--force"), 2, $"{dir} is a folder; --out takes a file");

        string file = KeepFile(dir, "a-file");
        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--out", file), 2, $"{file} is a file; --out takes a folder");
        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--out", file, "--force"), 2, $"{file} is a file; --out takes a folder");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--out", file, "--force"), 2, $"{file} is a file; --out takes a folder");
        string below = Path.Combine(file, "run");
        CliHarness.AssertOneLineError(CliHarness.Run("trace", "--out", below), 1, $"{below}: cannot write ({file} is a file, not a folder)");
        CliHarness.AssertOneLineError(CliHarness.Run("view", "--run", fixture.Dir, "--examples", "0", "-o", Path.Combine(file, "v.html")), 1, $"cannot write ({file} is a file, not a folder)");
        Assert.Equal(Keep, File.ReadAllText(file));
        Assert.Equal(["a-file"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName));
    }
}
