using NeuronTrace.Bench;

// Benchmarks print ratios against a baseline measured in the same run (see bench/README.md).
string which = args.Length > 0 ? args[0] : "all";
return BenchRunner.Run(which, args.Skip(1).ToArray());
