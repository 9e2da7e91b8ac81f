using NeuronTrace.Bench;

// Benchmarks print ratios against a baseline measured in the same run (see bench/README.md).
string which = args.Length > 0 ? args[0] : "all";
try
{
    return BenchRunner.Run(which, args.Skip(1).ToArray());
}
catch (Exception e) when (e is InvalidOperationException or IOException or ArgumentException or NeuronTrace.Model.ModelFormatException)
{
    Console.Error.WriteLine($"bench: {e.Message}");
    return 1;
}
