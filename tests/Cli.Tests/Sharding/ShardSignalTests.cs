using System.Diagnostics;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Sharding;

namespace NeuronTrace.Cli.Tests.Sharding;

/// <summary>
/// Real signals to a child <c>neurontrace</c> running a shard (Slurm's pre-emption path: SIGTERM, then SIGKILL if the
/// job overstays): after its first checkpoint the child gets the signal; SIGTERM must give exit 143, one line naming
/// the checkpoint and no temporaries; after either signal the same command run again must end with the bytes of an
/// uninterrupted shard. Attribution shards and sweep shards.
/// </summary>
public sealed class ShardSignalTests : IDisposable
{
    readonly string _root = RepoPaths.TempDir("shard-signal");
    public void Dispose() { try { Directory.Delete(_root, true); } catch (IOException) { } }

    string P(string name) => Path.Combine(_root, name);

    static readonly string[] Attribute = ["attribute", "--task", "gender_name", "--sites", "mlp_act", "--method", "relp", "--shard", "0/1", "--checkpoint-every", "1"];
    static readonly string[] Trace = ["trace", "--sites", "mlp_act", "--method", "relp", "--k-points", "8", "--shard", "0/1"];

    [Theory]
    [InlineData("TERM", 143)]
    [InlineData("KILL", 137)]
    public void AnAttributionShardSignalledMidRunResumesToIdenticalBytes(string signal, int exit)
    {
        Assert.Equal(0, CliHarness.Run([.. Attribute, "--out", P("whole")]).Exit);
        if (!Interrupt([.. Attribute, "--out", P("cut")], P("cut"), signal, exit)) return;
        var rerun = CliHarness.Run([.. Attribute, "--out", P("cut")]);
        Assert.True(rerun.Exit == 0, rerun.Err);
        var (a, b) = (ShardManifest.Read(P("whole")), ShardManifest.Read(P("cut")));
        Assert.Equal(a.Counts, b.Counts);
        Assert.Equal(File.ReadAllBytes(Path.Combine(P("whole"), a.SumsFile!)), File.ReadAllBytes(Path.Combine(P("cut"), b.SumsFile!)));
        Assert.Equal(["shard.json", b.SumsFile!], Directory.GetFiles(P("cut")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData("TERM", 143)]
    [InlineData("KILL", 137)]
    public void ASweepShardSignalledMidRunResumesToIdenticalBytes(string signal, int exit)
    {
        Assert.Equal(0, CliHarness.Run([.. Trace, "--out", P("attribution")]).Exit);
        var merged = CliHarness.Run("merge", P("attribution"), "--out", P("scores"));
        Assert.True(merged.Exit == 0, merged.Err);
        string[] sweep = [.. Trace, "--scores", P("scores"), "--checkpoint-every", "1"];
        Assert.Equal(0, CliHarness.Run([.. sweep, "--out", P("whole")]).Exit);
        if (!Interrupt([.. sweep, "--out", P("cut")], P("cut"), signal, exit)) return;
        var rerun = CliHarness.Run([.. sweep, "--out", P("cut")]);
        Assert.True(rerun.Exit == 0, rerun.Err);
        Assert.Equal(File.ReadAllBytes(Path.Combine(P("whole"), SweepShard.PointsFile)), File.ReadAllBytes(Path.Combine(P("cut"), SweepShard.PointsFile)));
        Assert.Equal(ShardManifest.Read(P("whole")).CleanMetric, ShardManifest.Read(P("cut")).CleanMetric);
        Assert.Equal(["shard.json", SweepShard.PointsFile], Directory.GetFiles(P("cut")).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    /// <summary>
    /// Runs the CLI as a child until <paramref name="dir"/> holds a checkpoint, sends SIGsignal, and checks the exit; false
    /// (with a visible failure) when the child finished first, so the test did not test the signal.
    /// </summary>
    static bool Interrupt(string[] args, string dir, string signal, int exit)
    {
        if (OperatingSystem.IsWindows()) { Assert.Fail("not run: POSIX signals"); return false; }
        // The CLI's own build output (with its runtimeconfig), in the configuration this test was built in.
        string config = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        string cli = Path.Combine(RepoPaths.Root, "src", "Cli", "bin", config, "net10.0", "neurontrace.dll");
        Assert.True(File.Exists(cli), cli);
        var psi = new ProcessStartInfo("dotnet", [cli, .. args]) { RedirectStandardError = true, RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        var err = new System.Text.StringBuilder();
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (err) err.AppendLine(e.Data); };
        p.OutputDataReceived += (_, _) => { };
        p.BeginErrorReadLine(); p.BeginOutputReadLine();
        var clock = Stopwatch.StartNew();
        ShardManifest? seen = null;
        while (!p.HasExited && clock.Elapsed < TimeSpan.FromSeconds(120))
        {
            try { seen = ShardManifest.TryRead(dir); } catch (Exception e) when (e is IOException or FormatException) { }
            if (seen is { Done: > 0 }) break;
            Thread.Sleep(10);
        }
        if (!p.HasExited) using (var k = Process.Start("kill", ["-" + signal, p.Id.ToString()])!) k.WaitForExit();
        Assert.True(p.WaitForExit(60_000), "no exit after the signal");
        p.WaitForExit();
        string stderr; lock (err) stderr = err.ToString();
        var m = ShardManifest.TryRead(dir);
        if (p.ExitCode == 0 && m is { Complete: true }) { Assert.Fail($"not run: the shard finished before SIG{signal} arrived"); return false; }
        Assert.True(p.ExitCode == exit, $"exit {p.ExitCode}, expected {exit}; stderr: {stderr}");
        Assert.NotNull(m);
        Assert.False(m!.Complete);
        if (signal == "TERM")
        {
            string last = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1];
            Assert.Contains("stopped by SIGTERM after", last);
            Assert.Contains("checkpoint in", last);
            Assert.DoesNotContain("no output written", stderr);
            Assert.Empty(Directory.GetFiles(dir, ".*"));
        }
        return true;
    }
}
