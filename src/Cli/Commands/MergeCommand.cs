using System.CommandLine;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Sharding;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Commands;

/// <summary>
/// <c>merge</c>: joins shard folders into what the unsharded command writes. Attribution shards of <c>attribute</c>
/// give a scores folder; of <c>trace</c> the merged attribution that sweep shards rank (<c>trace --shard --scores</c>);
/// sweep shards give the whole trace run folder.
/// </summary>
internal static class MergeCommand
{
    public static Command Create()
    {
        var shards = new Argument<string[]>("shards") { Description = "Shard folders (every shard of one run, each once).", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--out", "-o") { Description = "Folder to write. Must not exist unless --force.", Required = true };
        var force = new Option<bool>("--force") { Description = "Replace an existing output folder (only one written by merge, attribute or trace)." };
        var cmd = new Command("merge", """
            Merge the shards of a sharded run (attribute/trace --shard I/N). The manifests must agree (model and task
            SHA-256, options, shard count) and the shards must cover every example (or circuit) exactly once. Attribution
            sums add in fp64 and are divided once by the example counts, so the scores equal the unsharded run's.
            """)
        { shards, output, force };
        cmd.SetAction(r =>
        {
            var dirs = r.GetValue(shards)!;
            string outDir = r.GetValue(output)!;
            var first = ShardManifest.Read(dirs[0]);
            bool Ours(string d) => OutputPaths.IsScoresFolder(d) || OutputPaths.IsRunFolder(d) || File.Exists(Path.Combine(d, ShardManifest.FileName));
            string CheckOut() => OutputPaths.CheckFolder(outDir, r.GetValue(force), "a folder written by merge", Ours, dirs.Append(first.ModelPath).Append(first.TaskPath).ToArray());
            string full = CheckOut();
            if (first.Kind == ShardManifest.SweepKind) return MergeSweep(dirs, outDir, full, CheckOut);

            var (merged, sums) = ShardMerge.Attribution(dirs);
            OutputPaths.WriteFolder(outDir, full, temp =>
            {
                if (merged.Command == "attribute")
                    sums.Means(merged.Methods[0]).Save(temp, merged.Methods[0], merged.Options["metric"], merged.Total);
                else
                    foreach (var method in merged.Methods)
                        sums.Means(method).Save(Path.Combine(temp, "scores", method), method, "logit(patch) - logit(clean)", merged.Total);
                ShardMerge.SaveMerged(temp, merged, sums);
            }, () => CheckOut());
            Console.WriteLine($"merged {dirs.Length} shards: {merged.Total} examples, {string.Join(",", merged.Methods)}; wrote {outDir}");
            return 0;
        });
        return cmd;
    }

    /// <summary>Sweep shards: the points in order, the circuits picked as trace picks them, the run folder trace writes.</summary>
    static int MergeSweep(string[] dirs, string outDir, string full, Func<string> checkOut)
    {
        var (first, points, clean) = SweepShard.Merge(dirs);
        var (o, allLengths) = ShardRun.TraceOptionsOf(first);
        var loaded = ModelLoader.Load(first.ModelPath);
        if (ShardManifest.Sha256Of(loaded.Path) != first.ModelSha256) throw new ArgumentException($"{first.ModelPath} changed since the shards ran (SHA-256 differs)");
        var identity = ShardRun.Identity("trace", loaded, first.TaskPath, first.Options);
        if (identity.TaskSha256 != first.TaskSha256) throw new ArgumentException($"{first.TaskPath} changed since the shards ran (SHA-256 differs)");
        var scores = ShardRun.ReadMergedScores(first.ScoresDir!, identity);
        if (scores.Sha256 != first.ScoresSha256) throw new ArgumentException($"{first.ScoresDir}: the merged attribution changed since the sweep shards ranked it");
        var task = PromptTask.Load(first.TaskPath, loaded.RequireTokenizer());
        if (!allLengths) task = task.OfMostCommonLength();
        var (train, eval) = TraceJob.Split(task, o.TrainExamples);
        var circuits = new List<CircuitSummary>();
        foreach (var method in o.Methods)
            foreach (var site in o.Sites)
                circuits.Add(TraceJob.Summarize(scores.ByMethod[method], new Tracing.Circuits.NodeRanking(scores.ByMethod[method], site), site, method,
                    points.Where(p => p.Site == site && p.Method == method.Name()), o.TargetFaithfulness));
        var result = new TraceResult(train, eval, scores.ByMethod, points, circuits, clean, TimeSpan.Zero);
        OutputPaths.WriteFolder(outDir, full, temp =>
        {
            TraceReport.Write(temp, result, loaded, first.TaskPath);
            SweepPlot.SaveAll(temp, result.Sweep, task.Name);
        }, () => checkOut());
        Console.WriteLine($"merged {dirs.Length} sweep shards: {points.Count} circuits of {string.Join(",", o.Methods.Select(m => m.Name()))}; wrote {outDir}/ (sweep.csv, summary.json, circuits/, scores/)");
        return 0;
    }
}
