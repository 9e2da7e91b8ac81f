using System.Diagnostics;
using NeuronTrace.TestSupport;
using Xunit;

namespace NeuronTrace.Cli.Tests;

/// <summary>
/// Memory follows the batch, not the task (issue 15): a whole trace of a task ten times the bundled one peaks within
/// 1.5× of the bundled task's peak. Before circuit evaluation ran in example batches, this test's two runs peaked at
/// 269 and 1,110 MB (4.1×; a 10,000-line task at 11.8 GB); now 211 and 213 MB. The peak is the child process's maximum
/// resident set, read by getrusage(RUSAGE_CHILDREN) in a Python wrapper (exact, no polling). IG's peak does not grow with
/// its step count either: 800 steps peak within 1.2× of 100.
/// </summary>
public class MemoryBoundTests
{
    [Fact]
    public void A_trace_of_a_ten_times_larger_task_peaks_within_one_and_a_half_times()
    {
        if (!OperatingSystem.IsLinux()) { Assert.Fail("not run: getrusage peak RSS is read on Linux"); return; }
        string dir = RepoPaths.TempDir("memory-bound");
        string bundled = Path.Combine(RepoPaths.Tasks, "pronoun_gender.jsonl");
        string tenTimes = Path.Combine(dir, "pronoun_gender_x10.jsonl");
        var lines = File.ReadAllLines(bundled).Where(l => l.Trim().Length > 0).ToArray();
        File.WriteAllLines(tenTimes, Enumerable.Range(0, 10).SelectMany(_ => lines));

        // --all-lengths keeps every example, so both tasks fill their batches and differ only in length.
        long small = PeakKib("trace", "--task", bundled, "--all-lengths", "--quiet", "--out", Path.Combine(dir, "run1"));
        long large = PeakKib("trace", "--task", tenTimes, "--all-lengths", "--quiet", "--out", Path.Combine(dir, "run10"));
        Assert.True(large <= 1.5 * small, $"10x task peaked at {large / 1024} MiB, the bundled task at {small / 1024} MiB (bound 1.5x)");
    }

    [Fact]
    public void Integrated_gradients_at_800_steps_peak_within_1_2_times_of_100_steps()
    {
        // The path runs in passes of at most AttributionOptions.IgRowsPerPass token rows. With 8,192 the cap bound only
        // past ~200 steps here (8 prompts in two halves of ~40 rows), so 100 steps ran one 4,000-row pass and 800 steps
        // 8,000-row passes: 445 vs 574 MB (1.29x, load ~60 on 2 cores). With 2,048 both run ~2,000-row passes: 204 vs 217 MB.
        if (!OperatingSystem.IsLinux()) { Assert.Fail("not run: getrusage peak RSS is read on Linux"); return; }
        string dir = RepoPaths.TempDir("memory-ig");
        long Peak(int steps) => PeakKib("attribute", "--method", "ig", "--steps", steps.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--limit", "8", "--sites", "mlp_act", "--quiet", "--out", Path.Combine(dir, "ig" + steps));
        long few = Peak(100), many = Peak(800);
        Assert.True(many <= 1.2 * few, $"IG at 800 steps peaked at {many / 1024} MiB, at 100 steps {few / 1024} MiB (bound 1.2x)");
    }

    /// <summary>The peak resident set of one CLI run in a child process, in KiB.</summary>
    static long PeakKib(params string[] args)
    {
        string config = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar)).Parent!.Name;
        string cli = Path.Combine(RepoPaths.Root, "src", "Cli", "bin", config, "net10.0", "neurontrace.dll");
        Assert.True(File.Exists(cli), cli);
        const string wrapper = "import resource, subprocess, sys\n" +
                               "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n" +
                               "sys.stderr.write(r.stderr.decode(errors='replace')[-2000:] if r.returncode else '')\n" +
                               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n" +
                               "sys.exit(r.returncode)\n";
        var psi = new ProcessStartInfo(File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3",
            ["-c", wrapper, "dotnet", cli, .. args])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd(), stderr = p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(300_000), $"{args[0]} did not finish in 5 minutes");
        Assert.True(p.ExitCode == 0, $"{string.Join(' ', args)} failed: {stderr}");
        return long.Parse(stdout.Trim(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
