using NeuronTrace.Cli;

namespace NeuronTrace.Cli.Tests;

/// <summary>Runs the CLI in-process, capturing stdout and stderr. Console is process-global, so callers serialise.</summary>
static class CliHarness
{
    static readonly object Gate = new();

    public static (int Exit, string Out, string Err) Run(params string[] args)
    {
        lock (Gate)
        {
            var oldOut = Console.Out; var oldErr = Console.Error;
            var o = new StringWriter(); var e = new StringWriter();
            Console.SetOut(o); Console.SetError(e);
            try { return (CliRunner.Run(NeuronTraceCli.CreateRoot(), args), o.ToString(), e.ToString()); }
            finally { Console.SetOut(oldOut); Console.SetError(oldErr); }
        }
    }

    /// <summary>
    /// The bad-input contract: exit code <paramref name="exit"/>, exactly one line on stderr holding every text, no stack
    /// trace and no internal error.
    /// </summary>
    public static void AssertOneLineError((int Exit, string Out, string Err) r, int exit, params string[] mustContain)
    {
        Assert.True(r.Exit == exit, $"exit {r.Exit}, expected {exit}; stderr: {r.Err}");
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, "expected one stderr line, got: " + r.Err);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.DoesNotContain("internal error", r.Err);
        foreach (var s in mustContain) Assert.Contains(s, r.Err);
    }
}
