using System.CommandLine;
using NeuronTrace.Cli.Commands;

namespace NeuronTrace.Cli;

/// <summary>The command tree (kept apart from Program so tests run the CLI in-process).</summary>
public static class NeuronTraceCli
{
    public static RootCommand CreateRoot() => new("NeuronTrace: circuit tracing for Llama-family models (attribution in the neuron basis, mean-ablation circuits).")
    {
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
    };
}
