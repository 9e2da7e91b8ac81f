using System.Runtime.CompilerServices;

// The attribution tests compare paired and separate forwards (Attributor.ScoreWithPairing).
[assembly: InternalsVisibleTo("NeuronTrace.Tracing.Tests")]
