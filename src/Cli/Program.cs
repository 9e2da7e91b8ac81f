using NeuronTrace.Cli;

return CliRunner.Run(NeuronTraceCli.CreateRoot(), args);
