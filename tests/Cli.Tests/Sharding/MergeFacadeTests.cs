using NeuronTrace.Formats;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Sharding;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli.Tests.Sharding;

/// <summary>
/// <c>merge</c> through the facade (<see cref="TracedModel.MergeShards"/>) writes, byte for byte, what the command wrote
/// when it called the sharding library itself: that path is kept here as the reference, for shards of <c>attribute</c>,
/// the attribution shards of <c>trace</c>, and its sweep shards (the whole run folder, plots included).
/// </summary>
public sealed class MergeFacadeTests : IDisposable
{
    readonly string _root = Path.Combine(Path.GetTempPath(), "nt-merge-facade-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { try { Directory.Delete(_root, true); } catch (IOException) { } }

    string P(string name) => Path.Combine(_root, name);

    [Fact]
    public void MergeWritesTheBytesOfTheLibraryPath()
    {
        Directory.CreateDirectory(_root);
        string[] attribute = ["attribute", "--task", "gender_name", "--sites", "mlp_act", "--quiet"];
        string[] trace = ["trace", "--sites", "mlp_act,attn", "--method", "relp,atp", "--k-points", "5", "--quiet"];
        for (int i = 0; i < 2; i++)
        {
            Run([.. attribute, "--shard", $"{i}/2", "--out", P($"a{i}")]);
            Run([.. trace, "--shard", $"{i}/2", "--out", P($"t{i}")]);
        }
        string[] attributeShards = [P("a1"), P("a0")], traceShards = [P("t0"), P("t1")]; // any order
        Run(["merge", .. attributeShards, "--out", P("attribute")]);
        ReferenceAttributionMerge(attributeShards, P("attribute-ref"));
        AssertSameFiles(P("attribute-ref"), P("attribute"));
        Run(["merge", .. traceShards, "--out", P("trace-scores")]);
        ReferenceAttributionMerge(traceShards, P("trace-scores-ref"));
        AssertSameFiles(P("trace-scores-ref"), P("trace-scores"));

        string[] sweepShards = [P("w0"), P("w1"), P("w2")];
        for (int i = 0; i < 3; i++) Run([.. trace, "--shard", $"{i}/3", "--scores", P("trace-scores"), "--out", sweepShards[i]]);
        var merged = Run(["merge", .. sweepShards, "--out", P("run")]);
        Assert.Contains("merged 3 sweep shards: ", merged);
        ReferenceSweepMerge(sweepShards, P("run-ref"));
        AssertSameFiles(P("run-ref"), P("run"));
        Assert.True(File.Exists(Path.Combine(P("run"), "summary.json")) && File.Exists(Path.Combine(P("run"), "sweep_attn.png")));
    }

    static string Run(string[] args)
    {
        var r = CliHarness.Run(args);
        Assert.True(r.Exit == 0, $"{string.Join(' ', args)}: exit {r.Exit}: {r.Err}");
        return r.Out;
    }

    /// <summary>The attribution half of the command before the facade: sums added by the library, means saved per command.</summary>
    static void ReferenceAttributionMerge(string[] dirs, string dir)
    {
        Directory.CreateDirectory(dir);
        var (merged, sums) = ShardMerge.Attribution(dirs);
        if (merged.Command == "attribute")
            sums.Means(merged.Methods[0]).Save(dir, merged.Methods[0], merged.Options["metric"], merged.Total);
        else
            foreach (var method in merged.Methods)
                sums.Means(method).Save(Path.Combine(dir, "scores", method), method, "logit(patch) - logit(clean)", merged.Total);
        ShardMerge.SaveMerged(dir, merged, sums);
    }

    /// <summary>The sweep half before the facade: the points in order, the circuits summarised as trace does, the report and plots.</summary>
    static void ReferenceSweepMerge(string[] dirs, string dir)
    {
        Directory.CreateDirectory(dir);
        var (first, points, clean) = SweepShard.Merge(dirs);
        var (o, allLengths, _) = ShardIdentity.TraceOptionsOf(first);
        var loaded = ModelLoader.Load(first.ModelPath);
        var scores = ShardIdentity.ReadMergedScores(first.ScoresDir!, ShardIdentity.Of("trace", loaded, first.TaskPath, first.Options));
        var task = PromptTask.Load(first.TaskPath, loaded.RequireTokenizer());
        if (!allLengths) task = task.OfMostCommonLength();
        var (train, eval) = TraceJob.Split(task, o.TrainExamples);
        var circuits = new List<CircuitSummary>();
        foreach (var method in o.Methods)
            foreach (var site in o.Sites)
                circuits.Add(TraceJob.Summarize(scores.ByMethod[method], new NodeRanking(scores.ByMethod[method], site), site, method,
                    points.Where(p => p.Site == site && p.Method == method.Name()), o.TargetFaithfulness));
        var result = new TraceResult(train, eval, scores.ByMethod, points, circuits, clean, TimeSpan.Zero);
        TraceReport.Write(dir, result, loaded, first.TaskPath);
        SweepPlot.SaveAll(dir, result.Sweep, task.Name);
    }

    static void AssertSameFiles(string want, string got)
    {
        string[] Files(string d) => Directory.GetFiles(d, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(d, f)).Order(StringComparer.Ordinal).ToArray();
        var files = Files(want);
        Assert.NotEmpty(files);
        Assert.Equal(files, Files(got));
        foreach (var f in files)
            Assert.True(File.ReadAllBytes(Path.Combine(want, f)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(got, f))), $"{f} differs from the library path's");
    }
}
