using System.CommandLine;
using NeuronTrace.Tracing.Sharding;

namespace NeuronTrace.Cli.Commands;

/// <summary>
/// <c>merge</c>: joins shard folders into what the unsharded command writes. Attribution shards of <c>attribute</c>
/// give a scores folder; of <c>trace</c> the merged attribution that sweep shards rank (<c>trace --shard --scores</c>);
/// sweep shards give the whole trace run folder. The merge is the facade's (<see cref="TracedModel.MergeShards"/>); this
/// command checks <c>--out</c> and writes the folder atomically, with the sweep plots.
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
            var merged = TracedModel.MergeShards(dirs);
            var m = merged.Manifest;
            bool Ours(string d) => OutputPaths.IsScoresFolder(d) || OutputPaths.IsRunFolder(d) || File.Exists(Path.Combine(d, ShardManifest.FileName));
            string CheckOut() => OutputPaths.CheckFolder(outDir, r.GetValue(force), "a folder written by merge", Ours, dirs.Append(m.ModelPath).Append(m.TaskPath).ToArray());
            string full = CheckOut();
            OutputPaths.WriteFolder(outDir, full, temp =>
            {
                merged.Save(temp);
                if (merged.Trace is { } trace) SweepPlot.SaveAll(temp, trace.Sweep, merged.TaskName!);
            }, () => CheckOut());
            if (merged.Trace is { } t)
                Console.WriteLine($"merged {merged.Shards} sweep shards: {t.Sweep.Count} circuits of {m.Options["methods"]}; wrote {outDir}/ (sweep.csv, summary.json, circuits/, scores/)");
            else
                Console.WriteLine($"merged {merged.Shards} shards: {m.Total} examples, {string.Join(",", m.Methods)}; wrote {outDir}");
            return 0;
        });
        return cmd;
    }
}
