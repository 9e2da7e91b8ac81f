using NeuronTrace.Model;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Pipeline;

/// <summary>What a trace run does: which methods and sites, how the task is split, which k.</summary>
public sealed record TraceOptions
{
    /// <summary>The attribution methods run, each swept on its own (default: RelP).</summary>
    public IReadOnlyList<AttributionMethod> Methods { get; init; } = [AttributionMethod.RelP];
    /// <summary>The node sites scored and swept (default: mlp_act, mlp_out, attn, resid).</summary>
    public IReadOnlyList<NodeSite> Sites { get; init; } = [NodeSite.MlpAct, NodeSite.MlpOut, NodeSite.Attn, NodeSite.Resid];
    /// <summary>Examples used for attribution; the rest evaluate the circuits. Null: the first half.</summary>
    public int? TrainExamples { get; init; }
    /// <summary>How many circuit sizes k the sweep evaluates, log-spaced up to all of a site's nodes.</summary>
    public int KPoints { get; init; } = 24;
    /// <summary>Riemann steps of the integrated-gradients methods.</summary>
    public int IgSteps { get; init; } = 10;
    /// <summary>The rule set RelP uses (default: the authors' released code).</summary>
    public Runtime.BackwardRules RelPRules { get; init; } = Runtime.BackwardRules.RelP;
    /// <summary>How many ablation masks share one batched forward of the sweep (memory, not results).</summary>
    public int MasksPerForward { get; init; } = 8;
    /// <summary>Prompt pairs per attribution forward/backward (<see cref="AttributionOptions.BatchSize"/>): lowered by the memory plan when the default does not fit.</summary>
    public int AttributionBatchSize { get; init; } = new AttributionOptions().BatchSize;
    /// <summary>Activation checkpointing in the attribution (<see cref="AttributionOptions.CheckpointLayers"/>).</summary>
    public bool CheckpointLayers { get; init; }
    /// <summary>
    /// How the k-sweep's mean-ablated forwards run: the exact shortcuts (issue 18; equal to the plain path up to
    /// rounding, tests/Tracing.Tests/SweepShortcutTests) unless a run asks for the plain reference.
    /// </summary>
    public SweepPath SweepPath { get; init; } = SweepPath.Shortcuts;
    /// <summary>Seed of the random-node control circuits (one seed draws the same nodes every run).</summary>
    public int Seed { get; init; }
    /// <summary>The faithfulness a reported circuit must reach.</summary>
    public double TargetFaithfulness { get; init; } = 0.8;
}

/// <summary>The circuit of one site and method: the smallest swept k whose top-k circuit reaches the target faithfulness.</summary>
/// <param name="Site">The site.</param>
/// <param name="Method">The attribution method that ranked the nodes.</param>
/// <param name="TotalNodes">How many nodes the site has.</param>
/// <param name="AtTarget">The smallest swept k reaching the target faithfulness; null when none does.</param>
/// <param name="Nodes">That circuit's nodes with their scores, largest |score| first (empty when none reaches the target).</param>
public sealed record CircuitSummary(NodeSite Site, AttributionMethod Method, int TotalNodes, SweepPoint? AtTarget, IReadOnlyList<(NodeId Node, float Score)> Nodes);

/// <summary>What a trace computed (the library form of a run folder's contents).</summary>
/// <param name="Train">The examples attributed.</param>
/// <param name="Eval">The examples the circuits are evaluated on.</param>
/// <param name="Scores">Each method's node scores on <paramref name="Train"/>.</param>
/// <param name="Sweep">Every (method, site, k) point of the sweeps on <paramref name="Eval"/>.</param>
/// <param name="Circuits">Each (method, site)'s circuit at the target faithfulness.</param>
/// <param name="CleanMetric">The evaluation metric of the unablated model on <paramref name="Eval"/> (example mean).</param>
/// <param name="Elapsed">Wall time of the run.</param>
public sealed record TraceResult(PromptTask Train, PromptTask Eval, IReadOnlyDictionary<AttributionMethod, NodeScores> Scores,
    IReadOnlyList<SweepPoint> Sweep, IReadOnlyList<CircuitSummary> Circuits, double CleanMetric, TimeSpan Elapsed);

/// <summary>The main job: attribute, sweep top-k circuits per site and method, and pick the circuits (library form of <c>trace</c>).</summary>
internal static class TraceJob
{
    public static TraceResult Run(Llama model, PromptTask task, TraceOptions o, IProgress<WorkProgress>? progress = null)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Validate(task, o);
        var (trainTask, evalTask) = Split(task, o.TrainExamples);
        var means = AblationMeans(model, evalTask, o.Sites);

        var scores = new Dictionary<AttributionMethod, NodeScores>();
        var sweep = new List<SweepPoint>();
        var circuits = new List<CircuitSummary>();
        foreach (var method in o.Methods)
        {
            var s = Attributor.Score(model, trainTask, new AttributionOptions
            {
                Method = method, Sites = o.Sites, IgSteps = o.IgSteps, RelPRules = o.RelPRules, BatchSize = o.AttributionBatchSize,
                CheckpointLayers = o.CheckpointLayers,
            }, Stage(progress, $"attribute {method.Name()}"));
            scores[method] = s;
            foreach (var site in o.Sites)
            {
                var ranking = new NodeRanking(s, site);
                var points = CircuitSweep.Run(model, s, site, method.Name(), evalTask, means, CircuitSweep.LogSpacedK(ranking.Count, o.KPoints),
                    o.MasksPerForward, o.Seed, Stage(progress, $"sweep {method.Name()} {site.Name()}"), o.SweepPath);
                sweep.AddRange(points);
                circuits.Add(Summarize(s, ranking, site, method, points, o.TargetFaithfulness));
            }
        }
        var metric = Metric.EvaluationDefault(evalTask);
        double clean = MeanMetric(model, evalTask, metric);
        return new TraceResult(trainTask, evalTask, scores, sweep, circuits, clean, clock.Elapsed);
    }

    /// <summary>The task and options a trace can run on; one line naming the problem otherwise.</summary>
    public static void Validate(PromptTask task, TraceOptions o)
    {
        if (task.Count < 2) throw new ArgumentException($"{task.Name}: a trace needs at least 2 examples (one to attribute, one to evaluate)");
        if (o.TrainExamples is { } asked && (asked < 1 || asked >= task.Count))
            throw new ArgumentException($"{task.Name}: {asked} training examples asked, but the task has {task.Count}: between 1 and {task.Count - 1} can be attributed (the rest evaluate the circuits)");
        if (!(double.IsFinite(o.TargetFaithfulness) && o.TargetFaithfulness > 0 && o.TargetFaithfulness <= 1))
            throw new ArgumentException($"target faithfulness {o.TargetFaithfulness} is not in (0, 1]");
    }

    /// <summary>
    /// The split a trace uses: the first <paramref name="trainExamples"/> examples (default: the first half, rounded up)
    /// are attributed, the rest evaluate the circuits, so a circuit is never judged on the prompts that chose it.
    /// </summary>
    public static (PromptTask Train, PromptTask Eval) Split(PromptTask task, int? trainExamples = null)
    {
        int train = trainExamples ?? (task.Count + 1) / 2;
        return (new PromptTask(task.Name + ":train", task.Pairs.Take(train).ToList()),
            new PromptTask(task.Name + ":eval", task.Pairs.Skip(train).ToList()));
    }

    /// <summary>The means a trace ablates to: each site's mean over the evaluation examples' patch prompts (clean where unpaired).</summary>
    public static SiteMeans AblationMeans(Llama model, PromptTask evalTask, IReadOnlyList<NodeSite> sites) =>
        SiteMeans.Compute(model, evalTask.Pairs.Select(p => p.PatchIds ?? p.CleanIds).ToList(), sites);

    /// <summary>The circuit of one site and method: the smallest swept k &gt; 0 reaching the target, and its top-k nodes.</summary>
    public static CircuitSummary Summarize(NodeScores s, NodeRanking ranking, NodeSite site, AttributionMethod method, IEnumerable<SweepPoint> points, double target)
    {
        var hit = points.Where(p => p.Faithfulness >= target && p.K > 0).OrderBy(p => p.K).FirstOrDefault();
        int k = hit?.K ?? 0;
        var nodes = ranking.Order.Take(k).Select(f => { var n = ranking.Node(f); return (n, s[n]); }).ToList();
        return new CircuitSummary(site, method, ranking.Count, hit, nodes);
    }

    /// <summary>
    /// The example mean of a metric on the unmodified model, <paramref name="batchSize"/> examples per forward (the sum
    /// runs on over the batches in example order, as one forward over the task would add it).
    /// </summary>
    public static double MeanMetric(Llama model, PromptTask task, Metric metric, int batchSize = 32)
    {
        var sum = new double[1];
        for (int start = 0; start < task.Count; start += Math.Max(1, batchSize))
        {
            var pairs = task.Pairs.Skip(start).Take(Math.Max(1, batchSize)).ToList();
            using var pass = model.Forward(new TokenBatch(pairs.Select(p => p.CleanIds).ToList()), LogitRows.Last);
            metric.AddPerReplica(pass.HostLogits(), model.Config.VocabSize, pairs, sum);
        }
        return sum[0] / task.Count;
    }

    static IProgress<WorkProgress>? Stage(IProgress<WorkProgress>? p, string stage) =>
        p is null ? null : new StageProgress(p, stage);

    sealed class StageProgress(IProgress<WorkProgress> inner, string stage) : IProgress<WorkProgress>
    {
        public void Report(WorkProgress value) => inner.Report(value with { Stage = stage });
    }
}
