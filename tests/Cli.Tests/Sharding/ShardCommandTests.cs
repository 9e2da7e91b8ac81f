using System.Diagnostics;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Cli.Tests.Sharding;

/// <summary>Skips (visibly) unless a Slurm runs here: SLURM_CONF set, as .ci/run does after scripts/slurm/start.sh.</summary>
public sealed class SlurmFactAttribute : FactAttribute
{
    public SlurmFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("SLURM_CONF") is not { Length: > 0 } conf || !File.Exists(conf))
            Skip = "needs a running Slurm (SLURM_CONF from scripts/slurm/start.sh; .ci/run starts one): not run here";
    }
}

public sealed class ShardCommandTests : IDisposable
{
    readonly string _root = Path.Combine(Path.GetTempPath(), "nt-shard-cli-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { try { Directory.Delete(_root, true); } catch (IOException) { } }

    string P(string name) => Path.Combine(_root, name);

    [Fact]
    public void MergedAttributeShardsEqualTheUnshardedAttributeAndBadSetsAreOneLine()
    {
        Directory.CreateDirectory(_root);
        string[] common = ["attribute", "--task", "gender_name", "--sites", "mlp_act,resid"];
        Assert.Equal(0, CliHarness.Run([.. common, "--out", P("full")]).Exit);
        for (int i = 0; i < 3; i++)
            Assert.Equal(0, CliHarness.Run([.. common, "--shard", $"{i}/3", "--checkpoint-every", "5", "--out", P($"s{i}")]).Exit);
        var merged = CliHarness.Run("merge", P("s0"), P("s1"), P("s2"), "--out", P("merged"));
        Assert.True(merged.Exit == 0, merged.Err);
        var a = Floats(P("full")); var b = Floats(P("merged"));
        Assert.Equal(a.Length, b.Length);
        double scale = a.Max(x => Math.Abs((double)x));
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-6 * scale, $"[{i}] {a[i]} vs {b[i]}");

        CliHarness.AssertOneLineError(CliHarness.Run("merge", P("s0"), P("s2"), "--out", P("m2")), 1, "shard 1/3 is missing");
        CliHarness.AssertOneLineError(CliHarness.Run("merge", P("s0"), P("s1"), P("s1"), P("s2"), "--out", P("m3")), 1, "shard 1/3 given twice");
        Assert.Equal(0, CliHarness.Run([.. common, "--method", "atp", "--shard", "1/3", "--out", P("atp1")]).Exit);
        CliHarness.AssertOneLineError(CliHarness.Run("merge", P("s0"), P("atp1"), P("s2"), "--out", P("m4")), 1, "does not match", "method=atp");
        // --special-tokens changes the task's ids, so a shard read with it is another run's.
        Assert.Equal(0, CliHarness.Run([.. common, "--special-tokens", "--shard", "1/3", "--out", P("sp1")]).Exit);
        CliHarness.AssertOneLineError(CliHarness.Run("merge", P("s0"), P("sp1"), P("s2"), "--out", P("m5")), 1, "does not match", "special_tokens=true");
        CliHarness.AssertOneLineError(CliHarness.Run([.. common, "--shard", "3/3", "--out", P("bad")]), 2, "--shard", "0..2");
        CliHarness.AssertOneLineError(CliHarness.Run([.. common, "--shard", "0/3", "--checkpoint-every", "0", "--out", P("bad")]), 2, "--checkpoint-every");
        CliHarness.AssertOneLineError(CliHarness.Run([.. common, "--shard", "0/3", "--baseline", "mean", "--out", P("bad")]), 1, "mean baseline");
        Assert.False(Directory.Exists(P("m2")) || Directory.Exists(P("m3")) || Directory.Exists(P("m4")) || Directory.Exists(P("m5")));
    }

    static float[] Floats(string dir)
    {
        var bytes = File.ReadAllBytes(Path.Combine(dir, "scores.f32"));
        return System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray();
    }

    [Fact]
    public void SlurmTraceWritesAnArrayJobAndDependentMerges()
    {
        var r = CliHarness.Run("slurm", "trace", "--shards", "4", "--gpus-per-shard", "1", "--sbatch=--partition=gpu", "--out", P("run"),
            "--neurontrace", "/opt/nt/neurontrace", "--task", "pronoun_gender", "--device", "cuda");
        Assert.True(r.Exit == 0, r.Err);
        string work = P("run") + ".slurm";
        string attribute = File.ReadAllText(Path.Combine(work, "attribute.sbatch"));
        Assert.Contains("#SBATCH --array=0-3\n", attribute);
        Assert.Contains("#SBATCH --gpus-per-task=1\n", attribute);
        Assert.Contains("#SBATCH --partition=gpu\n", attribute);
        Assert.Contains("#SBATCH --signal=B:TERM@120\n", attribute);
        Assert.Contains($"#SBATCH --output={work}/logs/attribute-%a.log", attribute);
        Assert.Contains("exec /opt/nt/neurontrace trace --task pronoun_gender --device cuda --shard \"$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT\"", attribute);
        string sweep = File.ReadAllText(Path.Combine(work, "sweep.sbatch"));
        Assert.Contains($"--scores {work}/attribute/merged", sweep);
        string report = File.ReadAllText(Path.Combine(work, "report.sbatch"));
        Assert.Contains($"merge {work}/sweep/shard-0 {work}/sweep/shard-1 {work}/sweep/shard-2 {work}/sweep/shard-3 --out {P("run")}", report);
        string submit = File.ReadAllText(Path.Combine(work, "submit.sh"));
        Assert.Contains("--dependency=afterok:${a%%;*} merge-attribute.sbatch", submit);
        Assert.Contains("--dependency=afterok:${s%%;*} report.sbatch", submit);
        var status = CliHarness.Run("slurm", "status", work);
        Assert.Equal(1, status.Exit);
        Assert.Contains("attribute: 0 of 4 shards finished", status.Out);

        CliHarness.AssertOneLineError(CliHarness.Run("slurm", "trace", "--shards", "0", "--out", P("x")), 2, "--shards 0");
        CliHarness.AssertOneLineError(CliHarness.Run("slurm", "trace", "--shards", "2", "--out", P("y"), "--shard", "0/2"), 2, "--shard");
        CliHarness.AssertOneLineError(CliHarness.Run("slurm", "trace", "--shards", "2", "--out", P("z"), "--no-such-flag"), 2, "trace options");
    }

    /// <summary>
    /// The real thing (CI): a 3-shard trace submitted to Slurm, waited for, and compared with the unsharded trace: scores
    /// within 1e-6 of each array's scale, sweep.csv equal but for the thresholds (scores, to the same tolerance).
    /// </summary>
    [SlurmFact]
    public void ThreeShardTraceOnSlurmEqualsTheUnshardedTrace()
    {
        Directory.CreateDirectory(_root);
        string exe = Path.Combine(AppContext.BaseDirectory, "neurontrace");
        var submit = CliHarness.Run("slurm", "trace", "--shards", "3", "--submit", "--out", P("sharded"), "--neurontrace", exe);
        Assert.True(submit.Exit == 0, submit.Err);
        string ids = File.ReadAllText(P("sharded") + ".slurm/jobs.txt").Trim();
        string report = ids.Split(' ')[^1];
        var clock = Stopwatch.StartNew();
        while (Squeue(report) && clock.Elapsed < TimeSpan.FromSeconds(170)) Thread.Sleep(1000);
        Assert.True(File.Exists(Path.Combine(P("sharded"), "summary.json")),
            $"the report job {report} wrote no run folder in {clock.Elapsed.TotalSeconds:F0} s; logs: {P("sharded")}.slurm/logs");
        Assert.Equal(0, CliHarness.Run("slurm", "status", P("sharded") + ".slurm").Exit);

        Assert.Equal(0, CliHarness.Run("trace", "--out", P("unsharded")).Exit);
        foreach (var method in Directory.GetDirectories(Path.Combine(P("unsharded"), "scores")).Select(Path.GetFileName))
        {
            var a = Floats(Path.Combine(P("unsharded"), "scores", method!)); var b = Floats(Path.Combine(P("sharded"), "scores", method!));
            Assert.Equal(a.Length, b.Length);
            double scale = a.Max(x => Math.Abs((double)x));
            for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) <= 1e-6 * scale, $"{method} [{i}] {a[i]} vs {b[i]}");
        }
        var want = File.ReadAllLines(Path.Combine(P("unsharded"), "sweep.csv"));
        var got = File.ReadAllLines(Path.Combine(P("sharded"), "sweep.csv"));
        Assert.Equal(want.Length, got.Length);
        // The sweep's shortcut path (trace's default) plans its forwards from the circuits it is given, so a shard's
        // subset rounds differently from the whole sweep: text columns must match, numbers within 1e-5 (the shortcut
        // path's bound against the plain forward, as a fraction of the metric's range, which is ~1 for faithfulness).
        var invariant = System.Globalization.CultureInfo.InvariantCulture;
        for (int i = 0; i < want.Length; i++)
        {
            var (w, g) = (want[i].Split(','), got[i].Split(','));
            Assert.Equal(w.Length, g.Length);
            for (int c = 0; c < w.Length; c++)
                if (i == 0 || w[c] == g[c]) Assert.Equal(w[c], g[c]);
                else if (double.TryParse(w[c], invariant, out double x) && double.TryParse(g[c], invariant, out double y))
                    Assert.True(Math.Abs(x - y) <= 1e-5, $"sweep.csv line {i + 1} column {c + 1}: {w[c]} vs {g[c]}");
                else Assert.Equal(w[c], g[c]);
        }
    }

    static bool Squeue(string job)
    {
        using var p = Process.Start(new ProcessStartInfo("squeue", ["-h", "-j", job]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        string o = p.StandardOutput.ReadToEnd(); p.StandardError.ReadToEnd(); p.WaitForExit();
        return p.ExitCode == 0 && o.Trim().Length > 0;
    }
}

public sealed class DeviceOptionTests
{
    [Theory]
    [InlineData("cuda:x", "0..63")]
    [InlineData("cuda:64", "0..63")]
    [InlineData("cuda:-1", "0..63")]
    [InlineData("cuda:0,1", "done by attribute, trace and plan")]
    [InlineData("cuda:0,0", "named twice")]
    [InlineData("gpu", "cpu, cuda or cuda:N")]
    public void BadDevicesAreOneLine(string device, string expected) =>
        CliHarness.AssertOneLineError(CliHarness.Run("generate", "--steps", "2", "--device", device), 2, expected);

    [Fact]
    public void ALayerSplitParsesForAttributeAndOpensEachDevice()
    {
        // cuda:0,1 passes attribute's parser and fails (here, without a driver) opening the first GPU, in one line
        var r = CliHarness.Run("attribute", "--task", "gender_name", "--device", "cuda:0,1", "--out", Path.Combine(Path.GetTempPath(), "nt-split-" + Guid.NewGuid().ToString("N")));
        CliHarness.AssertOneLineError(r, 2, "--device cuda:0:");
        var plan = CliHarness.Run("plan", "--device", "cuda:0,1", "--tokens", "16");
        Assert.True(plan.Exit == 0, plan.Err);
        Assert.Contains("cuda:1: memory plan", plan.Out);
        CliHarness.AssertOneLineError(CliHarness.Run("plan", "--device", "cuda:0,1,2,3,4,5", "--tokens", "16"), 2, "6 GPUs", "5 layers");
    }

    [Fact]
    public void CudaNNamesTheDeviceItOpens()
    {
        // here without a GPU (or with fewer than 9) the one line names device 9; on a GPU machine the driver's count
        var r = CliHarness.Run("generate", "--steps", "2", "--device", "cuda:9");
        CliHarness.AssertOneLineError(r, 2, "--device cuda:9:");
    }
}
