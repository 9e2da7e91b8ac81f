using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Evaluation;

/// <summary>How a sweep's mean-ablated forwards run: every mask in full, or with the exact shortcuts of issue 18.</summary>
public enum SweepPath
{
    /// <summary>Every mask's forward in full: the reference.</summary>
    Plain,
    /// <summary>The exact shortcuts (docs/streaming-attention.md): equal to <see cref="Plain"/> up to rounding, faster.</summary>
    Shortcuts,
}

/// <summary>The names of <see cref="SweepPath"/> as the CLI, summary.json and shard manifests spell them.</summary>
internal static class SweepPaths
{
    public static string Name(this SweepPath path) => path == SweepPath.Plain ? "plain" : "shortcuts";

    /// <summary>plain or shortcuts (exact, lower case); false for anything else.</summary>
    public static bool TryParse(string? text, out SweepPath path)
    {
        path = text == "shortcuts" ? SweepPath.Shortcuts : SweepPath.Plain;
        return text is "plain" or "shortcuts";
    }
}

/// <summary>
/// Node circuits of one site (neurons, or the kept neurons of an edge circuit): a node whose mask entry is true keeps the
/// value the (partly ablated) forward computes for it; every other node of the site, in every layer, is replaced by its
/// mean (docs/method.md §5). Masks are laid out on <see cref="Grid"/>; positions the grid does not cover are ablated.
/// </summary>
internal sealed class SiteMeanAblation : CircuitAblation
{
    readonly NodeSite _site;
    readonly SiteMeans _means;
    Tensor[]? _deviceMeans;

    /// <param name="model">The model on its backend.</param>
    /// <param name="task">The evaluation prompts (their clean prompts run).</param>
    /// <param name="site">The site the masks keep or ablate.</param>
    /// <param name="means">The site's ablation means per layer and position from the end.</param>
    /// <param name="metric">The metric each forward is scored by.</param>
    /// <param name="nodePositions">The positions-from-end the masks cover (the ranking's); later positions count as not in the mask.</param>
    public SiteMeanAblation(Llama model, PromptTask task, NodeSite site, SiteMeans means, Metric metric, int nodePositions)
        : base(model, task, metric)
    {
        _site = site; _means = means;
        Grid = new NodeGrid(model.Config.Layers, nodePositions, site.Width(model.Config));
        task.RequireAnswersWithin(model.Config.VocabSize);
        if (means.Positions < task.Pairs.Max(p => p.CleanIds.Length))
            throw new ArgumentException("the means do not cover every position of the evaluation prompts");
    }

    public NodeGrid Grid { get; }
    public override int NodeCount => Grid.Count;

    /// <summary>
    /// Plain: every mask is a full mean-ablated forward (the reference). Shortcuts: <see cref="MeanAblationSweep"/>'s
    /// shared prefix and keep-k MLP, equal to the plain path up to rounding (issue 18).
    /// </summary>
    public SweepPath Path { get; init; } = SweepPath.Plain;
    /// <summary>Gets the planner's one-line description of each shortcut sweep.</summary>
    public Action<string>? PlanLog { get; init; }
    /// <summary>The shortcut path's sparse threshold (<see cref="MeanAblationSweep.SparseFraction"/>); 0 disables the keep-k MLP.</summary>
    public double SparseFraction { get; init; } = 0.125;

    /// <summary>
    /// The ranking the sweep's top-k masks come from (<see cref="NodeRanking.Order"/>): the shortcut path then builds
    /// those masks and their complements on the backend from it and k; null: only keep-all and keep-none are.
    /// </summary>
    public IReadOnlyList<int>? RankingOrder { get; init; }

    protected override double[] EvaluateMasks(IReadOnlyList<bool[]> keepMasks, Action<int>? masksDone)
    {
        if (Path == SweepPath.Plain || !MeanAblationSweep.Supports(Model)) return base.EvaluateMasks(keepMasks, masksDone);
        var c = Model.Config;
        var means = Enumerable.Range(0, c.Layers).Select(l => _means.Get(_site, l)).ToList();
        var sums = new double[keepMasks.Count];
        var batches = ExampleBatches().ToList();
        // Masks and means go to the backend once per sweep; one shortcut sweep per example batch (its cached clean
        // residuals are the batch's, not the task's), each planning the masks for its own prompts; the sums run on over
        // the batches in order. A metric linear in the logits is reduced on the backend (one download per batch).
        using var masks = new MeanAblationMasks(Model, _site, means, _means.Positions, Grid.Positions, keepMasks, RankingOrder);
        for (int e = 0; e < batches.Count; e++)
        {
            var examples = batches[e];
            var prompts = examples.Select(p => p.CleanIds).ToList();
            var terms = examples.Select(p => Metric.ConstantGradient(p)).ToList();
            bool linear = terms.All(t => t is not null);
            using var sweep = new MeanAblationSweep(masks, prompts, linear ? terms.Select(t => t!).ToList() : null) { SparseFraction = SparseFraction };
            var chunks = sweep.Plan(MasksPerForward);
            PlanLog?.Invoke(sweep.Describe(chunks));
            PromptForwards += (long)keepMasks.Count * prompts.Count;
            if (linear)
            {
                var batchSums = sweep.MetricSums(chunks);
                for (int i = 0; i < sums.Length; i++) sums[i] += batchSums[i];
                masksDone?.Invoke((int)((long)(e + 1) * keepMasks.Count / batches.Count));
                continue;
            }
            int done = 0;
            foreach (var chunk in chunks)
            {
                var logits = sweep.LastLogits(chunk);
                var chunkSums = new double[chunk.Masks.Length];
                for (int j = 0; j < chunkSums.Length; j++) chunkSums[j] = sums[chunk.Masks[j]];
                Metric.AddPerReplica(logits, c.VocabSize, examples, chunkSums);
                for (int j = 0; j < chunkSums.Length; j++) sums[chunk.Masks[j]] = chunkSums[j];
                done += chunk.Masks.Length;
                masksDone?.Invoke((int)(((long)e * keepMasks.Count + done) / batches.Count));
            }
        }
        return sums.Select(x => x / Task.Count).ToArray();
    }

    // The means go to the backend once per Evaluate call and are shared by every chunk's plan.
    protected override IDisposable? BeginSweep()
    {
        var c = Model.Config;
        var means = new Tensor[c.Layers];
        for (int l = 0; l < c.Layers; l++) means[l] = Model.LayerBackend(l).Upload(_means.Get(_site, l), _means.Positions, Grid.Width);
        _deviceMeans = means;
        return new Release(this);
    }

    sealed class Release(SiteMeanAblation owner) : IDisposable
    {
        public void Dispose()
        {
            foreach (var m in owner._deviceMeans ?? []) m.Dispose();
            owner._deviceMeans = null;
        }
    }

    // Every layer of the site is mean-ablated on the device from one bit per node and mask row. Rows: (r·B + b)·T + t,
    // right-padded; position p from the end of example b is t = len − 1 − p. A padding row keeps its value, a position
    // the masks do not cover is ablated.
    protected override void AddChunk(IReadOnlyList<bool[]> masks, IReadOnlyList<PromptPair> examples, double[] sums)
    {
        var c = Model.Config;
        var pairs = examples;
        int B = pairs.Count, R = masks.Count;
        var batch = ReplicatedBatch(examples, R);
        int T = batch.SeqLen, W = Grid.Width, P = Grid.Positions, words = AblationMask.WordsPerRow(W);
        var keepRow = new int[batch.Rows];
        var meanRow = new int[batch.Rows];
        Array.Fill(keepRow, -1);
        Array.Fill(meanRow, -1);
        for (int r = 0; r < R; r++)
            for (int b = 0; b < B; b++)
            {
                int len = pairs[b].CleanIds.Length;
                for (int p = 0; p < len; p++)
                {
                    int row = (r * B + b) * T + len - 1 - p;
                    meanRow[row] = p;
                    if (p < P) keepRow[row] = r * P + p;
                }
            }
        using var plan = new InterventionPlan();
        for (int l = 0; l < c.Layers; l++)
        {
            var bits = new uint[R * P * words];
            for (int r = 0; r < R; r++)
                for (int p = 0; p < P; p++)
                    AblationMask.PackRow(masks[r].AsSpan(Grid.Flat(l, p, 0), W), bits.AsSpan((r * P + p) * words, words));
            plan.SetMeanAblation(_site, l, new MeanAblation(_deviceMeans![l], bits, keepRow, meanRow));
        }
        AddMetricPerReplica(batch, plan, examples, sums);
    }
}
