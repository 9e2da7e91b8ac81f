using NeuronTrace.Runtime;
using System.CommandLine;
using NeuronTrace.Model;

namespace NeuronTrace.Cli;

/// <summary>
/// Parses, runs, and turns every expected failure into one line on stderr and a non-zero exit code:
/// 2 for bad flags, 1 for bad input files or data, 3 for anything unexpected (still one line, no stack trace).
/// </summary>
internal static class CliRunner
{
    public static int Run(RootCommand root, string[] args)
    {
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            Console.Error.WriteLine($"neurontrace: {ErrorText.Line(parsed.Errors[0].Message)} (see --help)");
            return 2;
        }
        ProgressBar.Quiet = parsed.GetValue(NeuronTraceCli.Quiet);
        // With --help the parser reports no error for an unknown command and would print the root help, exit 0.
        // (slurm trace passes the tokens it does not know on to trace, so only a command that refuses them counts)
        if (parsed.UnmatchedTokens.Count > 0 && parsed.CommandResult.Command.TreatUnmatchedTokensAsErrors)
        {
            Console.Error.WriteLine($"neurontrace: unrecognized command or argument {ErrorText.Quote(parsed.UnmatchedTokens[0])} (see --help)");
            return 2;
        }
        using var signals = Interruption.Install();
        try
        {
            return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (Exception e) when (Unwrap(e) is var inner && IsUserError(inner))
        {
            Console.Error.WriteLine($"neurontrace: error: {ErrorText.Line(inner.Message)}");
            return inner is UsageException ? 2 : 1;
        }
        catch (Exception e)
        {
            var inner = Unwrap(e);
            Console.Error.WriteLine($"neurontrace: internal error ({inner.GetType().Name}): {ErrorText.Line(inner.Message)}");
            return 3;
        }
    }

    static Exception Unwrap(Exception e) => e is AggregateException { InnerExceptions.Count: 1 } a ? Unwrap(a.InnerExceptions[0]) : e;

    static bool IsUserError(Exception e) =>
        e is ModelFormatException or UsageException or FormatException or ArgumentException or IOException or UnauthorizedAccessException
            or System.Text.Json.JsonException;
}

/// <summary>A flag combination that makes no sense; exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
