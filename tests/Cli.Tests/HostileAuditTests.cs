using System.Diagnostics;
using NeuronTrace.Formats;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// Issue 15's groups that the first tests left open: special files anywhere a model is read from (not only --model
/// itself), stale temporaries beside every kind of output (convert to both targets, attribute), and invalid UTF-8 in a
/// run's summary.json.
/// </summary>
[Collection("console")]
public class HostileAuditTests
{
    /// <summary>
    /// Runs <paramref name="args"/> in process, and when it has not finished in 30 s, opens <paramref name="fifo"/> for
    /// writing and closes it (the blocked reader sees end of file), so a hang fails this test without holding the
    /// console for the tests after it.
    /// </summary>
    static (int Exit, string Out, string Err) RunUnblocking(string fifo, params string[] args)
    {
        var run = Task.Run(() => CliHarness.Run(args));
        if (run.Wait(TimeSpan.FromSeconds(30))) return run.Result;
        using (new FileStream(fifo, FileMode.Open, FileAccess.Write)) { }
        run.Wait(TimeSpan.FromSeconds(30));
        Assert.Fail($"{string.Join(' ', args)} blocked on the FIFO {fifo}");
        return default;
    }

    static void MakeFifo(string path)
    {
        using var p = Process.Start("mkfifo", path)!;
        p.WaitForExit();
        Assert.True(p.ExitCode == 0 && File.Exists(path), $"mkfifo {path}");
    }

    [Theory]
    [InlineData("config.json")]
    [InlineData("model.safetensors")]
    [InlineData("tokenizer.json")]
    public void AFifoInsideAModelFolderIsRefusedWithoutBlocking(string name)
    {
        if (OperatingSystem.IsWindows()) { Assert.Fail("not run: FIFOs are a Unix test"); return; }
        string dir = Path.Combine(RepoPaths.TempDir("fifo-hf"), "hf");
        HfFolderWriter.Write(ModelLoader.Load(RepoPaths.Stories260KBin).Weights, dir, RepoPaths.Tok512);
        // tokenizer.json is not written (the folder has tok512.bin), but a tokenizer.json is the first tokenizer looked for
        string target = Path.Combine(dir, name);
        File.Delete(target);
        MakeFifo(target);
        var r = RunUnblocking(target, "generate", "--model", dir, "--steps", "2");
        CliHarness.AssertOneLineError(r, 1, Path.GetFileName(target), "not a regular file");
    }

    [Fact]
    public void AFifoTokenizerBesideALlama2cModelIsRefusedWithoutBlocking()
    {
        if (OperatingSystem.IsWindows()) { Assert.Fail("not run: FIFOs are a Unix test"); return; }
        string dir = RepoPaths.TempDir("fifo-tok"), model = Path.Combine(dir, "m.bin"), tok = Path.Combine(dir, "tok512.bin");
        File.Copy(RepoPaths.Stories260KBin, model);
        MakeFifo(tok);
        var r = RunUnblocking(tok, "generate", "--model", model, "--steps", "2");
        CliHarness.AssertOneLineError(r, 1, "tok512.bin", "not a regular file");
    }

    [Fact]
    public void AFifoAsTaskIsRefusedWithoutBlocking()
    {
        if (OperatingSystem.IsWindows()) { Assert.Fail("not run: FIFOs are a Unix test"); return; }
        string dir = RepoPaths.TempDir("fifo-task"), task = Path.Combine(dir, "t.jsonl"), output = Path.Combine(dir, "scores");
        MakeFifo(task);
        var r = RunUnblocking(task, "attribute", "--task", task, "--out", output);
        CliHarness.AssertOneLineError(r, 1, "t.jsonl", "not a regular file");
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public async Task ACharacterDeviceAsModelIsRefused()
    {
        if (!File.Exists("/dev/zero")) { Assert.Fail("not run: no /dev/zero"); return; }
        var run = Task.Run(() => CliHarness.Run("info", "--model", "/dev/zero"));
        var first = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(30)));
        Assert.True(first == run, "info --model /dev/zero does not return");
        CliHarness.AssertOneLineError(await run, 1, "/dev/zero", "not a regular file");
    }

    [Theory]
    [InlineData("hf")]
    [InlineData("gguf")]
    public void ConvertRemovesTheStaleTemporariesOfAKilledConvert(string to)
    {
        string parent = RepoPaths.TempDir("stale-convert");
        string output = Path.Combine(parent, to == "hf" ? "out-hf" : "out.gguf");
        string name = Path.GetFileName(output);
        string stale = Path.Combine(parent, $".{name}.{Guid.NewGuid():N}.{(to == "hf" ? "partial" : "tmp")}");
        if (to == "hf") { Directory.CreateDirectory(stale); File.WriteAllText(Path.Combine(stale, "config.json"), "{"); }
        else File.WriteAllBytes(stale, new byte[100]);
        var old = DateTime.UtcNow - Interruption.StaleAfter - TimeSpan.FromMinutes(1);
        if (to == "hf") Directory.SetLastWriteTimeUtc(stale, old); else File.SetLastWriteTimeUtc(stale, old);
        var r = CliHarness.Run("convert", "--model", RepoPaths.Stories260KBin, "--to", to, "--out", output);
        Assert.True(r.Exit == 0, r.Err);
        Assert.True(Path.Exists(output));
        Assert.False(Path.Exists(stale), $"{stale} is still there");
        Assert.Equal([name], Directory.GetFileSystemEntries(parent).Select(Path.GetFileName));
    }

    [Fact]
    public void AttributeRemovesTheStaleTemporariesOfAKilledAttribute()
    {
        string parent = RepoPaths.TempDir("stale-attribute");
        string output = Path.Combine(parent, "scores");
        string stale = Path.Combine(parent, $".scores.{Guid.NewGuid():N}.partial");
        Directory.CreateDirectory(stale);
        Directory.SetLastWriteTimeUtc(stale, DateTime.UtcNow - Interruption.StaleAfter - TimeSpan.FromMinutes(1));
        var r = CliHarness.Run("attribute", "--limit", "2", "--method", "atp", "--sites", "mlp_act", "--out", output);
        Assert.True(r.Exit == 0, r.Err);
        Assert.Equal(["scores"], Directory.GetFileSystemEntries(parent).Select(Path.GetFileName));
    }
}

[Collection("console")]
public class HostileRunFolderTests(SmallRunFixture run) : IClassFixture<SmallRunFixture>
{
    [Fact]
    public void InvalidUtf8InSummaryJsonNamesTheFileAndLine()
    {
        string copy = run.Copy("summary-utf8");
        string summary = Path.Combine(copy, "summary.json");
        var bytes = File.ReadAllBytes(summary).ToList();
        int quote = bytes.IndexOf((byte)'"', bytes.IndexOf((byte)':') + 1);   // inside the first string value
        bytes.Insert(quote + 1, 0xFF);
        File.WriteAllBytes(summary, bytes.ToArray());
        string html = Path.Combine(RepoPaths.TempDir("summary-utf8-view"), "view.html");
        var r = CliHarness.Run("view", "--run", copy, "--out", html);
        CliHarness.AssertOneLineError(r, 1, "summary.json", "invalid UTF-8");
        Assert.False(File.Exists(html));
    }
}

/// <summary>SIGINT/SIGTERM during attribute (the trace case is <see cref="InterruptionTests"/>): exit 130/143, one line, nothing left.</summary>
public class AttributeInterruptionTests
{
    [Theory]
    [InlineData("TERM", 143)]
    [InlineData("INT", 130)]
    public async Task ASignalDuringAttributeExitsWithItsCodeAndLeavesNothing(string signal, int exit)
    {
        if (OperatingSystem.IsWindows()) { Assert.Fail("not run: POSIX signals"); return; }
        string config = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        string cli = Path.Combine(RepoPaths.Root, "src", "Cli", "bin", config, "net10.0", "neurontrace.dll");
        Assert.True(File.Exists(cli), cli);
        string parent = RepoPaths.TempDir("signal-attribute");
        string outDir = Path.Combine(parent, "scores");
        // 1,000 IG steps over every layer take minutes here: the signal comes mid-run. On a pipe, attribute's first stderr
        // line is a plain progress line after 5 s of work, so the signal goes once that line is read: the handlers are
        // installed by then, whatever the machine's load (a fixed wait raced a loaded CI machine).
        var psi = new ProcessStartInfo("dotnet", [cli, "attribute", "--method", "ig", "--steps", "1000", "--sites", "mlp_act", "--out", outDir])
        { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string? first = await p.StandardError.ReadLineAsync();
        if (first is null || p.HasExited) { Assert.Fail($"not run: attribute ended before the signal (exit {(p.HasExited ? p.ExitCode : -1)})"); return; }
        Assert.StartsWith("progress: ", first);
        using (var k = Process.Start("kill", ["-" + signal, p.Id.ToString()])!) k.WaitForExit();
        string rest = await p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(60_000), "no exit after the signal");
        await stdout;
        Assert.Equal(exit, p.ExitCode);
        // After the signal: at most the progress lines already on their way, then the one error line, no stack trace.
        var lines = rest.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.All(lines[..^1], l => Assert.StartsWith("progress: ", l));
        Assert.Contains("interrupted", lines[^1]);
        Assert.DoesNotContain("   at ", rest);
        Assert.Empty(Directory.GetFileSystemEntries(parent));
    }
}
