using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Sharding;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests.Sharding;

/// <summary>Shards of the bundled tasks on the bundled model merge to the unsharded scores and sweep; bad sets are refused.</summary>
public sealed class ShardMergeTests : IDisposable
{
    readonly string _root = Path.Combine(Path.GetTempPath(), "nt-shard-tests-" + Guid.NewGuid().ToString("N"));
    public void Dispose() { try { Directory.Delete(_root, true); } catch (IOException) { } }

    static readonly LoadedModel Loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
    static readonly NodeSite[] Sites = [NodeSite.MlpAct, NodeSite.Attn, NodeSite.Resid];

    static PromptTask Task(string name) => PromptTask.Load(Path.Combine(RepoPaths.Tasks, name + ".jsonl"), Loaded.RequireTokenizer());

    static ShardManifest Identity(string option = "a") => new()
    {
        Command = "attribute", ModelSha256 = "model", TaskSha256 = "task",
        Options = new(StringComparer.Ordinal) { ["option"] = option },
    };

    static (string, AttributionOptions)[] RelP(PromptTask t, int batch = 32) =>
        [("relp", new AttributionOptions { Method = AttributionMethod.RelP, Sites = Sites, Baseline = Baseline.Patch, Metric = Metric.AttributionDefault(t), BatchSize = batch })];

    string[] RunShards(Llama model, PromptTask task, int n, string tag, int checkpoint = 16, ShardManifest? identity = null) =>
        Enumerable.Range(0, n).Select(i =>
        {
            string dir = Path.Combine(_root, $"{tag}-{i}of{n}");
            var m = AttributionShard.Run(model, task, RelP(task), identity ?? Identity(), new ShardSlice(i, n), dir, checkpoint);
            Assert.True(m.Complete);
            return dir;
        }).ToArray();

    /// <summary>Per array, |merged − unsharded| ≤ 1e-6 · max |unsharded|: the unsharded float32 sums carry that rounding themselves.</summary>
    static void AssertClose(NodeScores expected, NodeScores actual)
    {
        foreach (var s in expected.Sites)
            for (int l = 0; l < expected.Config.Layers; l++)
            {
                var a = expected.Get(s, l); var b = actual.Get(s, l);
                Assert.Equal(a.Length, b.Length);
                double scale = a.Max(x => Math.Abs((double)x));
                Assert.True(scale > 0, $"{s.Name()} layer {l}: all-zero reference");
                for (int i = 0; i < a.Length; i++)
                    Assert.True(Math.Abs(a[i] - b[i]) <= 1e-6 * scale, $"{s.Name()} layer {l} [{i}]: {a[i]} vs {b[i]} (scale {scale})");
            }
    }

    [Theory]
    [InlineData("pronoun_gender")]
    [InlineData("possessive_gender")]
    [InlineData("gender_name")]
    [InlineData("name_copy")]
    public void MergeOf1And2And3And7ShardsEqualsTheUnshardedScores(string name)
    {
        using var model = new Llama(Loaded.Weights, CpuBackend.Instance);
        var task = Task(name);
        var reference = Attributor.Score(model, task, RelP(task)[0].Item2);
        foreach (int n in new[] { 1, 2, 3, 7 })
        {
            var (merged, sums) = ShardMerge.Attribution(RunShards(model, task, n, name));
            Assert.Equal(task.Count, merged.Total);
            Assert.Equal(n, merged.MergedFrom);
            AssertClose(reference, sums.Means("relp"));
        }
    }

    [Fact]
    public void SweepShardsMergeToTheUnshardedSweep()
    {
        using var model = new Llama(Loaded.Weights, CpuBackend.Instance);
        var task = Task("pronoun_gender").OfMostCommonLength();
        var o = new TraceOptions { Methods = [AttributionMethod.RelP, AttributionMethod.AtP], Sites = [NodeSite.MlpAct, NodeSite.Resid], KPoints = 6 };
        var full = TraceJob.Run(model, task, o);
        var identity = new ShardManifest { Command = "trace", ModelSha256 = "m", TaskSha256 = "t", ScoresSha256 = "s" };
        int circuits = SweepShard.Circuits(full.Scores, o).Count;
        Assert.Equal(full.Sweep.Count, circuits);
        foreach (int n in new[] { 1, 3, 5 })
        {
            // merge in a shuffled order: the merge orders by shard index
            var dirs = Enumerable.Range(0, n).Reverse().Select(i =>
            {
                string dir = Path.Combine(_root, $"sweep-{i}of{n}");
                SweepShard.Run(model, task, o, full.Scores, identity, new ShardSlice(i, n), dir);
                return dir;
            }).ToArray();
            var (_, points, clean) = SweepShard.Merge(dirs);
            Assert.Equal(full.CleanMetric, clean, 12);
            Assert.Equal(full.Sweep.Count, points.Count);
            for (int i = 0; i < points.Count; i++)
            {
                var (e, a) = (full.Sweep[i], points[i]);
                Assert.Equal((e.Site, e.Method, e.K, e.Threshold, e.TotalNodes), (a.Site, a.Method, a.K, a.Threshold, a.TotalNodes));
                // batching of the masks differs between shards: the GEMM's summation order may change the last bits
                Assert.Equal(e.Faithfulness, a.Faithfulness, 1e-6);
                Assert.Equal(e.Completeness, a.Completeness, 1e-6);
                Assert.Equal(e.RandomFaithfulness, a.RandomFaithfulness, 1e-6);
                Assert.Equal(e.RandomCompleteness, a.RandomCompleteness, 1e-6);
            }
        }
    }

    [Fact]
    public void MissingDuplicatedMismatchedAndUnfinishedShardsAreRefused()
    {
        using var model = new Llama(Loaded.Weights, CpuBackend.Instance);
        var task = Task("gender_name");
        var dirs = RunShards(model, task, 3, "set");

        var missing = Assert.Throws<ArgumentException>(() => ShardMerge.Attribution([dirs[0], dirs[2]]));
        var (s1, e1) = new ShardSlice(1, 3).Range(task.Count);
        Assert.Equal($"shard 1/3 is missing: items {s1}..{e1 - 1} of {task.Count} are not covered", missing.Message);

        var twice = Assert.Throws<ArgumentException>(() => ShardMerge.Attribution([dirs[0], dirs[1], dirs[1], dirs[2]]));
        Assert.Contains("shard 1/3 given twice", twice.Message);

        var other = RunShards(model, task, 3, "other", identity: Identity("b"));
        var mismatch = Assert.Throws<ArgumentException>(() => ShardMerge.Attribution([dirs[0], other[1], dirs[2]]));
        Assert.Contains(other[1], mismatch.Message);
        Assert.Contains("options: \"option=a\" vs \"option=b\"", mismatch.Message);

        var fewer = RunShards(model, task, 2, "two");
        Assert.Contains("shard count: 3 vs 2", Assert.Throws<ArgumentException>(() => ShardMerge.Attribution([dirs[0], dirs[1], fewer[1]])).Message);

        string partial = Path.Combine(_root, "partial");
        using (var stop = new CancellationTokenSource())
        {
            stop.Cancel();
            var m = AttributionShard.Run(model, task, RelP(task), Identity(), new ShardSlice(1, 3), partial, 4, stop.Token);
            Assert.False(m.Complete);
        }
        Assert.Contains("is unfinished: 4 of", Assert.Throws<ArgumentException>(() => ShardMerge.Attribution([dirs[0], partial, dirs[2]])).Message);

        // a shard folder of another run is not resumed into
        Assert.Contains("of another run", Assert.Throws<ArgumentException>(() =>
            AttributionShard.Run(model, task, RelP(task), Identity("b"), new ShardSlice(1, 3), dirs[1], 16)).Message);
    }

    [Fact]
    public void AStoppedOrKilledShardResumesToIdenticalBytes()
    {
        using var model = new Llama(Loaded.Weights, CpuBackend.Instance);
        var task = Task("possessive_gender");
        var slice = new ShardSlice(1, 2);
        string whole = Path.Combine(_root, "whole");
        AttributionShard.Run(model, task, RelP(task), Identity(), slice, whole, 5);

        // SIGTERM path: the token is set, the shard stops after a checkpoint; then twice more, a chunk each
        string resumed = Path.Combine(_root, "resumed");
        using var stop = new CancellationTokenSource();
        stop.Cancel();
        var first = AttributionShard.Run(model, task, RelP(task), Identity(), slice, resumed, 5, stop.Token);
        Assert.Equal(5, first.Done);
        var second = AttributionShard.Run(model, task, RelP(task), Identity(), slice, resumed, 5, stop.Token);
        Assert.Equal(10, second.Done);
        // SIGKILL path: a write cut short leaves a temporary file and the previous checkpoint; a different batch size on
        // the re-run does not change the checkpoint chunks (the manifest keeps them)
        File.WriteAllBytes(NeuronTrace.Formats.OutputFiles.TempPathBeside(Path.Combine(resumed, "sums-15.f64"), "tmp"), new byte[7]);  // a kill mid-write leaves the atomic writer's temporary
        var done = AttributionShard.Run(model, task, [(RelP(task)[0].Item1, RelP(task)[0].Item2 with { BatchSize = 32 })], Identity(), slice, resumed, 3);
        Assert.True(done.Complete);

        var a = ShardManifest.Read(whole); var b = ShardManifest.Read(resumed);
        Assert.Equal(a.SumsFile, b.SumsFile);
        Assert.Equal(File.ReadAllBytes(Path.Combine(whole, a.SumsFile!)), File.ReadAllBytes(Path.Combine(resumed, b.SumsFile!)));
        Assert.Equal(a.Counts, b.Counts);
        Assert.Equal(new[] { "shard.json", a.SumsFile }, Directory.GetFiles(resumed).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());
        // a finished shard re-run does nothing
        var again = AttributionShard.Run(model, task, RelP(task), Identity(), slice, resumed, 5);
        Assert.True(again.Complete);
    }

    [Fact]
    public void AStoppedOrKilledSweepShardResumesToIdenticalBytes()
    {
        using var model = new Llama(Loaded.Weights, CpuBackend.Instance);
        var task = Task("pronoun_gender").OfMostCommonLength();
        var o = new TraceOptions { Methods = [AttributionMethod.RelP], Sites = [NodeSite.MlpAct], KPoints = 6 };
        var (train, _) = TraceJob.Split(task, o.TrainExamples);
        var scores = new Dictionary<AttributionMethod, NodeScores>
        {
            [AttributionMethod.RelP] = Attributor.Score(model, train, new AttributionOptions { Method = AttributionMethod.RelP, Sites = o.Sites, Baseline = Baseline.Patch }),
        };
        var identity = new ShardManifest { Command = "trace", ModelSha256 = "m", TaskSha256 = "t", ScoresSha256 = "s" };
        var slice = new ShardSlice(0, 1);
        int circuits = SweepShard.Circuits(scores, o).Count;
        Assert.True(circuits >= 5, $"{circuits} circuits");
        string whole = Path.Combine(_root, "sweep-whole");
        Assert.True(SweepShard.Run(model, task, o, scores, identity, slice, whole, checkpointCircuits: 2).Complete);

        // SIGTERM path: the token is set, the shard stops after each checkpoint of two circuits
        string resumed = Path.Combine(_root, "sweep-resumed");
        using var stop = new CancellationTokenSource();
        stop.Cancel();
        var first = SweepShard.Run(model, task, o, scores, identity, slice, resumed, checkpointCircuits: 2, stop: stop.Token);
        Assert.Equal((2, false), (first.Done, first.Complete));
        Assert.Null(first.CleanMetric);
        // SIGKILL paths: a kill after the points were written but before the manifest (one chunk more in the points
        // file), and one mid-write (the atomic writer's temporary); a different interval on the re-run is not used
        var second = SweepShard.Run(model, task, o, scores, identity, slice, resumed, checkpointCircuits: 2, stop: stop.Token);
        Assert.Equal(4, second.Done);
        first.Write(resumed);
        File.WriteAllBytes(OutputFiles.TempPathBeside(Path.Combine(resumed, SweepShard.PointsFile), "tmp"), new byte[5]);
        var done = SweepShard.Run(model, task, o, scores, identity, slice, resumed, checkpointCircuits: 3);
        Assert.True(done.Complete);
        Assert.Equal(File.ReadAllBytes(Path.Combine(whole, SweepShard.PointsFile)), File.ReadAllBytes(Path.Combine(resumed, SweepShard.PointsFile)));
        Assert.Equal(ShardManifest.Read(whole).CleanMetric, done.CleanMetric);
        Assert.Equal(new[] { "shard.json", SweepShard.PointsFile }, Directory.GetFiles(resumed).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray());
        Assert.Equal(circuits, SweepShard.Merge([resumed]).Points.Count);
    }

    [Fact]
    public void ShardSlicesCoverEveryItemOnceAndBadTextIsRefused()
    {
        foreach (int total in new[] { 0, 1, 5, 96 })
            foreach (int n in new[] { 1, 2, 3, 7, 100 })
            {
                var covered = Enumerable.Range(0, n).SelectMany(i => { var (s, e) = new ShardSlice(i, n).Range(total); return Enumerable.Range(s, e - s); }).ToArray();
                Assert.Equal(Enumerable.Range(0, total), covered);
            }
        Assert.Equal(new ShardSlice(2, 4), ShardSlice.Parse("2/4"));
        foreach (var bad in new[] { "4/4", "-1/3", "1", "a/b", "0/0", "0/5000" })
            Assert.Throws<ArgumentException>(() => ShardSlice.Parse(bad));
    }
}
