using System.CommandLine;
using NeuronTrace.Cli.Commands;

namespace NeuronTrace.Cli;

/// <summary>The command tree (kept apart from Program so tests run the CLI in-process).</summary>
internal static class NeuronTraceCli
{
    /// <summary>No progress output on stderr (results and errors still print); every command takes it.</summary>
    public static readonly Option<bool> Quiet = new("--quiet", "-q") { Description = "no progress display or progress lines on stderr", Recursive = true };

    public static RootCommand CreateRoot() => new("NeuronTrace: circuit tracing for Llama-family models (attribution in the neuron basis, mean-ablation circuits).")
    {
        Quiet,
        TraceCommand.Create(),
        AttributeCommand.Create(),
        MergeCommand.Create(),
        SlurmCommand.Create(),
        GenerateCommand.Create(),
        InfoCommand.Create(),
        ConvertCommand.Create(),
        SteerCommand.Create(),
        ViewCommand.Create(),
        EdgesCommand.Create(),
        ExportCommand.Create(),
        PlanCommand.Create(),
    };
}
