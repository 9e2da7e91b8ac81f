namespace NeuronTrace.Tracing.Pipeline;

/// <summary>A unit of long work done: <paramref name="Done"/> of <paramref name="Total"/> for <paramref name="Stage"/>.</summary>
public readonly record struct WorkProgress(string Stage, long Done, long Total);
