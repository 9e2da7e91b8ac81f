using NeuronTrace.Model;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Cli.Tests;

[Collection("console")]
public class ProgressTests
{
    sealed class FakeClock { public TimeSpan Now; }

    static (PlainProgressLog Log, StringWriter Out, FakeClock Clock) NewLog()
    {
        var clock = new FakeClock();
        var o = new StringWriter();
        return (new PlainProgressLog(o, () => clock.Now, TimeSpan.FromSeconds(5)), o, clock);
    }

    static string[] Lines(StringWriter o) => o.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);

    [Fact]
    public void ShortWorkPrintsNothing()
    {
        var (log, o, clock) = NewLog();
        for (int i = 1; i <= 10; i++) { clock.Now = TimeSpan.FromSeconds(0.3 * i); log.Report(new("attribute", i, 10)); }
        Assert.Empty(o.ToString());
    }

    [Fact]
    public void LongWorkPrintsAtTheIntervalWithRateAndEtaAndItsEnd()
    {
        var (log, o, clock) = NewLog();
        // 1 unit per second for 20 s: lines at 5 s, 10 s, 15 s and the end line at 20 s.
        for (int i = 1; i <= 20; i++) { clock.Now = TimeSpan.FromSeconds(i); log.Report(new("ig", i, 20)); }
        var lines = Lines(o);
        Assert.Equal(4, lines.Length);
        Assert.Equal("progress: ig 5/20 (25%), 1/s, eta 15s, elapsed 5.0s", lines[0].TrimEnd('\r'));
        Assert.Equal("progress: ig 20/20 (100%), 1/s, eta 0s, elapsed 20.0s", lines[3].TrimEnd('\r'));
    }

    [Fact]
    public void CountsNeverPassTheirTotal()
    {
        var (log, o, clock) = NewLog();
        clock.Now = TimeSpan.FromSeconds(6);
        log.Report(new("ig", 80, 40));
        Assert.Equal("progress: ig 40/40 (100%), 6.67/s, eta 0s, elapsed 6.0s", Lines(o).Single().TrimEnd('\r'));
        Assert.Equal(40, ProgressMath.Clamped(new("x", 80, 40)));
        Assert.Equal(0, ProgressMath.Clamped(new("x", -3, 40)));
    }

    [Fact]
    public void QuietIsAcceptedByEveryCommand()
    {
        var r = CliHarness.Run("info", "--quiet");
        Assert.True(r.Exit == 0, r.Err);
        Assert.Contains("dim", r.Out);
    }

    sealed class Recorder : IProgress<WorkProgress>
    {
        public readonly List<WorkProgress> Seen = [];
        public void Report(WorkProgress value) { lock (Seen) Seen.Add(value); }
    }

    /// <summary>
    /// What the library reports, not only what the display clamps: integrated gradients on the CPU backend, whose batches
    /// of two or more run as two threads reporting each (site, layer) step, counts 1, 2, ... up to exactly its total;
    /// so do AtP (per batch) and the SAE attribution.
    /// </summary>
    [Theory]
    [InlineData(AttributionMethod.IG, 6)]
    [InlineData(AttributionMethod.IG, 1)]
    [InlineData(AttributionMethod.AtP, 4)]
    public void TheLibraryCountsUpToItsTotalAndNeverPast(AttributionMethod method, int batch)
    {
        using var model = TracedModel.Open(RepoPaths.Stories260KBin);
        var task = model.LoadTask("pronoun_gender").Take(14);
        var seen = new Recorder();
        model.Attribute(task, method, [NodeSite.MlpAct, NodeSite.Attn], new AttributionOptions { IgSteps = 3, BatchSize = batch }, seen);
        Assert.NotEmpty(seen.Seen);
        long total = seen.Seen[0].Total;
        Assert.All(seen.Seen, p => Assert.Equal(total, p.Total));
        Assert.Equal(Enumerable.Range(1, (int)total).Select(i => (long)i), seen.Seen.Select(p => p.Done));
        Assert.Equal(method == AttributionMethod.IG ? "ig" : "attribute", seen.Seen[0].Stage);
    }

    /// <summary>--quiet reaches the progress display of any command (it is a recursive root option) and is off without it.</summary>
    [Fact]
    public void QuietReachesTheProgressDisplayOfACommand()
    {
        string dir = RepoPaths.TempDir("quiet");
        try
        {
            var r = CliHarness.Run("attribute", "--limit", "4", "--sites", "mlp_act", "--quiet", "--out", Path.Combine(dir, "a"));
            Assert.True(r.Exit == 0, r.Err);
            Assert.True(ProgressBar.Quiet);
            Assert.Equal("", r.Err);
            r = CliHarness.Run("attribute", "--limit", "4", "--sites", "mlp_act", "--out", Path.Combine(dir, "b"));
            Assert.True(r.Exit == 0, r.Err);
            Assert.False(ProgressBar.Quiet);
        }
        finally { ProgressBar.Quiet = false; }
    }
}
