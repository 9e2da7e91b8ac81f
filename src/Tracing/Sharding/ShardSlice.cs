using NeuronTrace.Runtime;
namespace NeuronTrace.Tracing.Sharding;

/// <summary>
/// Shard <see cref="Index"/> of <see cref="Count"/> (0-based, as Slurm's SLURM_ARRAY_TASK_ID and Kubernetes'
/// JOB_COMPLETION_INDEX count): a contiguous, deterministic slice of a list of work items (examples or circuits).
/// </summary>
internal readonly record struct ShardSlice(int Index, int Count)
{
    /// <summary>The most shards a run may be cut into.</summary>
    public const int MaxCount = 4096;

    /// <summary>Parses "I/N" with 0 ≤ I &lt; N ≤ <see cref="MaxCount"/>.</summary>
    public static ShardSlice Parse(string text)
    {
        var parts = text.Split('/');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int i) || !int.TryParse(parts[1], out int n))
            throw new ArgumentException($"shard {ErrorText.Quote(text)} is not I/N (e.g. 0/4: the first of four shards)");
        if (n < 1 || n > MaxCount) throw new ArgumentException($"shard {text}: the shard count must be in 1..{MaxCount}");
        if (i < 0 || i >= n) throw new ArgumentException($"shard {text}: the index must be in 0..{n - 1} (shards count from 0)");
        return new ShardSlice(i, n);
    }

    /// <summary>The items [Start, End) of <paramref name="total"/> this shard covers; shards differ in size by at most one.</summary>
    public (int Start, int End) Range(int total) =>
        ((int)((long)Index * total / Count), (int)((long)(Index + 1) * total / Count));

    public override string ToString() => $"{Index}/{Count}";

}
