namespace NeuronTrace.Tracing.Sharding;

/// <summary>
/// Checks that a set of shard folders is one whole run: the manifests agree, every shard is finished, and each work
/// item is covered exactly once. Each refusal is one line naming the shard at fault.
/// </summary>
internal static class ShardMerge
{
    /// <summary>The shards' manifests ordered by shard index, after the checks.</summary>
    public static IReadOnlyList<(string Dir, ShardManifest Manifest)> CheckComplete(IReadOnlyList<string> dirs, string kind)
    {
        if (dirs.Count == 0) throw new ArgumentException("no shard folders given");
        var shards = dirs.Select(d => (Dir: d, Manifest: ShardManifest.Read(d))).ToList();
        var (firstDir, first) = shards[0];
        foreach (var (d, m) in shards)
        {
            if (m.Kind != kind) throw new ArgumentException($"{m.Describe(d)} is a {m.Kind} shard, not a {kind} shard");
            if (m.MergedFrom > 0) throw new ArgumentException($"{d} is already a merge of {m.MergedFrom} shards; give the shard folders");
            if (first.Disagreement(m) is { } why)
                throw new ArgumentException($"{m.Describe(d)} does not match {first.Describe(firstDir)}: {why}");
        }
        var byIndex = new (string Dir, ShardManifest Manifest)?[first.ShardCount];
        foreach (var (d, m) in shards)
        {
            if (byIndex[m.ShardIndex] is { } other)
                throw new ArgumentException($"shard {m.ShardIndex}/{m.ShardCount} given twice: {other.Dir} and {d} (each item must be covered once)");
            var (start, end) = new ShardSlice(m.ShardIndex, m.ShardCount).Range(m.Total);
            if (m.First != start || m.End != end)
                throw new ArgumentException($"{m.Describe(d)} covers items {m.First}..{m.End - 1}, but shard {m.ShardIndex}/{m.ShardCount} of {m.Total} is {start}..{end - 1} (overlapping or foreign slice)");
            if (!m.Complete)
                throw new ArgumentException($"{m.Describe(d)} is unfinished: {m.Done} of {m.End - m.First} items done (re-run it to resume)");
            byIndex[m.ShardIndex] = (d, m);
        }
        for (int i = 0; i < byIndex.Length; i++)
            if (byIndex[i] is null)
            {
                var (start, end) = new ShardSlice(i, first.ShardCount).Range(first.Total);
                throw new ArgumentException($"shard {i}/{first.ShardCount} is missing: items {start}..{end - 1} of {first.Total} are not covered");
            }
        return byIndex.Select(x => x!.Value).ToList();
    }

    /// <summary>Adds the sums of complete attribution shards; the result's manifest covers every example.</summary>
    public static (ShardManifest Manifest, PartialScores Sums) Attribution(IReadOnlyList<string> dirs)
    {
        var shards = CheckComplete(dirs, ShardManifest.AttributionKind);
        PartialScores? total = null;
        foreach (var (d, m) in shards)
        {
            var p = PartialScores.Load(d, m);
            if (total is null) total = p; else total.Add(p);
        }
        var f = shards[0].Manifest;
        var merged = new ShardManifest
        {
            Kind = f.Kind, Command = f.Command, ModelPath = f.ModelPath, ModelSha256 = f.ModelSha256, TaskPath = f.TaskPath, TaskSha256 = f.TaskSha256,
            Options = f.Options, ShardIndex = 0, ShardCount = 1, Total = f.Total, First = 0, End = f.Total, Done = f.Total, Complete = true,
            MergedFrom = shards.Count, ModelConfig = f.ModelConfig, Methods = f.Methods, Sites = f.Sites, Positions = f.Positions,
        };
        return (merged, total!);
    }

    /// <summary>Writes a merged attribution (manifest and sums) so that sweep shards can rank its scores.</summary>
    public static void SaveMerged(string dir, ShardManifest merged, PartialScores sums) => AttributionShard.Save(dir, merged, sums);
}
