using System.CommandLine;
using NeuronTrace.Cli;
using NeuronTrace.Cli.Commands;

var root = new RootCommand("NeuronTrace: circuit tracing for Llama-family models (attribution in the neuron basis, mean-ablation circuits).")
{
    TraceCommand.Create(),
    AttributeCommand.Create(),
    GenerateCommand.Create(),
    InfoCommand.Create(),
    ConvertCommand.Create(),
    SteerCommand.Create(),
    ViewCommand.Create(),
};
return CliRunner.Run(root, args);
