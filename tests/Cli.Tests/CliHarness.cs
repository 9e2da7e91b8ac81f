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
}
