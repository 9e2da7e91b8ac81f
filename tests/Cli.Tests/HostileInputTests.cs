using System.Diagnostics;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// Issue 15's CLI-level failures reproduced: prompts too long for the context refused before they cost memory, numeric
/// options with upper bounds, invalid UTF-8 and repeated keys in task lines, mixed paired and unpaired lines, a FIFO as
/// --model, an unknown command with --help, and the view's embedded JSON escaped for its script element.
/// </summary>
[Collection("console")]
public class HostileInputTests
{
    const string Line = "{\"clean_prefix\": \"Lily was sad.\", \"patch_prefix\": \"Tim was sad.\", \"clean_answer\": \" She\", \"patch_answer\": \" He\"}";

    static string TaskFile(string name, string text)
    {
        string path = Path.Combine(RepoPaths.TempDir("hostile"), name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void AFiveMegabytePromptIsRefusedBeforeItIsTokenized()
    {
        string big = string.Concat(Enumerable.Repeat("Once upon a time there was a dog. ", 150_000)); // 5.1 MB
        string path = TaskFile("big.jsonl", Line + "\n" + Line.Replace("Lily was sad.", big) + "\n");
        string outDir = Path.Combine(RepoPaths.TempDir("hostile-out"), "scores");
        long before = GC.GetTotalAllocatedBytes(precise: true);
        var watch = Stopwatch.StartNew();
        var r = CliHarness.Run("attribute", "--task", path, "--out", outDir);
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - before;
        CliHarness.AssertOneLineError(r, 1, path, "line 2: clean_prefix", "exceeds the model's context of 512");
        Assert.False(Directory.Exists(outDir));
        // Reading and parsing the 5 MB line costs tens of MB; tokenizing it (what happened before) costs gigabytes.
        Assert.True(allocated < 300L << 20, $"{allocated >> 20} MB allocated");
        Assert.True(watch.Elapsed.TotalSeconds < 60, $"{watch.Elapsed.TotalSeconds:F0} s");
    }

    [Theory]
    [InlineData("trace", "--k-points", "1000000000", "--k-points 1000000000: must be at most 1000")]
    [InlineData("trace", "--steps", "3000", "--steps 3000: must be at most 1000")]
    [InlineData("attribute", "--steps", "3000", "--steps 3000: must be at most 1000")]
    [InlineData("attribute", "--batch", "100000", "--batch 100000: must be at most 4096")]
    [InlineData("trace", "--masks-per-forward", "100000", "must be at most 256")]
    public void NumericOptionsHaveUpperBoundsCheckedBeforeWork(string command, string option, string value, string message)
    {
        string dir = Path.Combine(RepoPaths.TempDir("bounds"), "out");
        var r = CliHarness.Run(command, option, value, "--out", dir);
        CliHarness.AssertOneLineError(r, 2, message);
        Assert.Equal("", r.Out);
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public void ALoneSurrogateInATaskLineNamesTheLine()
    {
        string path = TaskFile("surrogate.jsonl", Line + "\n" + Line.Replace("Lily", "Li\\ud800ly") + "\n");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--task", path, "--out", Path.Combine(RepoPaths.TempDir("o"), "s")), 1,
            path, "line 2: invalid UTF-8 or a lone surrogate", "clean_prefix");
    }

    [Fact]
    public void InvalidUtf8BytesInATaskNameTheLine()
    {
        string path = Path.Combine(RepoPaths.TempDir("hostile"), "bytes.jsonl");
        var bytes = System.Text.Encoding.UTF8.GetBytes(Line + "\n" + Line + "\n").ToList();
        bytes.Insert(Line.Length + 1 + 20, 0xFF); // inside the second line's clean_prefix
        File.WriteAllBytes(path, bytes.ToArray());
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--task", path, "--out", Path.Combine(RepoPaths.TempDir("o"), "s")), 1, path, "line 2: invalid UTF-8");
    }

    [Fact]
    public void RepeatedKeysAndMixedPairedAndUnpairedLinesAreRefused()
    {
        string dup = TaskFile("dup.jsonl", Line.Replace("}", ", \"clean_answer\": \" He\"}") + "\n");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--task", dup, "--out", Path.Combine(RepoPaths.TempDir("o"), "s")), 1, "line 1: key \"clean_answer\" appears twice");
        string unpaired = "{\"clean_prefix\": \"Lily was sad.\", \"clean_answer\": \" She\"}";
        string mixed = TaskFile("mixed.jsonl", Line + "\n" + unpaired + "\n");
        CliHarness.AssertOneLineError(CliHarness.Run("attribute", "--task", mixed, "--out", Path.Combine(RepoPaths.TempDir("o"), "s")), 1,
            "line 2 is unpaired (no patch_prefix) but line 1 is paired");
    }

    [Fact]
    public async Task AFifoAsModelIsRefusedWithoutBlocking()
    {
        if (OperatingSystem.IsWindows()) { Assert.Fail("not run: FIFOs are a Unix test"); return; }
        string fifo = Path.Combine(RepoPaths.TempDir("fifo"), "model.bin");
        using (var p = Process.Start("mkfifo", fifo)) p.WaitForExit();
        Assert.True(File.Exists(fifo));
        var run = Task.Run(() => CliHarness.Run("info", "--model", fifo));
        Assert.True(await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(30))) == run, "info --model FIFO hangs");
        CliHarness.AssertOneLineError(await run, 1, fifo, "not a regular file");
    }

    [Fact]
    public void AnUnknownCommandWithHelpIsAnError()
    {
        var r = CliHarness.Run("NOSUCHCOMMAND", "--help");
        Assert.NotEqual(0, r.Exit);
        CliHarness.AssertOneLineError(r, 2, "NOSUCHCOMMAND");
    }
}

[Collection("console")]
public class HostileViewTests(SmallRunFixture run) : IClassFixture<SmallRunFixture>
{
    [Fact]
    public void ACommentOpenerInAnEmbeddedPathCannotBreakTheScript()
    {
        string dir = Path.Combine(RepoPaths.TempDir("view-hostile"), "<!--<script>");
        Directory.CreateDirectory(dir);
        string copy = run.Copy("view-hostile-run");
        string task = Path.Combine(dir, "task.jsonl");
        File.Copy(run.TaskPath, task);
        string html = Path.Combine(dir, "view.html");
        var (rc, _, err) = CliHarness.Run("view", "--run", copy, "--out", html, "--task", task);
        Assert.True(rc == 0, err);
        string page = File.ReadAllText(html);
        const string open = "<script type=\"application/json\" id=\"graph-data\">";
        int data = page.IndexOf(open, StringComparison.Ordinal) + open.Length;
        string json = page[data..page.IndexOf("</script>", data, StringComparison.Ordinal)];
        Assert.DoesNotContain("<", json);
        using var doc = System.Text.Json.JsonDocument.Parse(json); // still the same JSON, the path intact
        Assert.Contains(task, Strings(doc.RootElement));
    }

    static IEnumerable<string> Strings(System.Text.Json.JsonElement e) => e.ValueKind switch
    {
        System.Text.Json.JsonValueKind.String => [e.GetString()!],
        System.Text.Json.JsonValueKind.Array => e.EnumerateArray().SelectMany(Strings),
        System.Text.Json.JsonValueKind.Object => e.EnumerateObject().SelectMany(p => Strings(p.Value)),
        _ => [],
    };
}

/// <summary>SIGINT/SIGTERM clean up and exit 130/143; stale temporaries of a killed run are removed by the next run.</summary>
public class InterruptionTests
{
    [Fact]
    public void StaleTemporariesOfTheSameOutputAreRemovedAndFreshOnesKept()
    {
        string parent = RepoPaths.TempDir("stale");
        string full = Path.Combine(parent, "run");
        string stale = Path.Combine(parent, $".run.{Guid.NewGuid():N}.partial");
        string fresh = Path.Combine(parent, $".run.{Guid.NewGuid():N}.partial");
        string staleFile = Path.Combine(parent, $".run.{Guid.NewGuid():N}.tmp");
        string other = Path.Combine(parent, $".other.{Guid.NewGuid():N}.partial");
        foreach (var d in new[] { stale, fresh, other }) Directory.CreateDirectory(d);
        File.WriteAllText(staleFile, "x");
        var old = DateTime.UtcNow - Interruption.StaleAfter - TimeSpan.FromMinutes(1);
        Directory.SetLastWriteTimeUtc(stale, old); File.SetLastWriteTimeUtc(staleFile, old); Directory.SetLastWriteTimeUtc(other, old);
        Interruption.Watch(full);
        Assert.False(Directory.Exists(stale));
        Assert.False(File.Exists(staleFile));
        Assert.True(Directory.Exists(fresh), "a concurrent run's temporary must survive");
        Assert.True(Directory.Exists(other), "another output's temporaries are not ours to remove");
    }

    [Theory]
    [InlineData("TERM", 143)]
    [InlineData("INT", 130)]
    public void ASignalDuringTraceExitsWithItsCodeAndLeavesNothing(string signal, int exit)
    {
        if (OperatingSystem.IsWindows()) { Assert.Fail("not run: POSIX signals"); return; }
        // The CLI's own build output (with its runtimeconfig), in the configuration this test was built in.
        string config = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        string cli = Path.Combine(RepoPaths.Root, "src", "Cli", "bin", config, "net10.0", "neurontrace.dll");
        Assert.True(File.Exists(cli), cli);
        string parent = RepoPaths.TempDir("signal");
        string outDir = Path.Combine(parent, "run");
        var psi = new ProcessStartInfo("dotnet", [cli, "trace", "--sites", "mlp_act", "--out", outDir]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        // Wait until the command is past parsing (its first stderr line names the model), then interrupt it.
        string? first = p.StandardError.ReadLine();
        Assert.NotNull(first);
        using (var k = Process.Start("kill", ["-" + signal, p.Id.ToString()])) k.WaitForExit();
        string rest = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), "no exit after the signal");
        if (p.ExitCode == 0) { Assert.Fail("not run: trace finished before the signal arrived"); return; }
        Assert.Equal(exit, p.ExitCode);
        Assert.Contains("interrupted", rest);
        Assert.False(Directory.Exists(outDir));
        Assert.Empty(Directory.GetFileSystemEntries(parent));
    }
}
