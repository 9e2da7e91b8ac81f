using NeuronTrace.Model;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Evaluation;

/// <summary>One k of a sweep: the top-k circuit's faithfulness and completeness, and those of k random nodes.</summary>
/// <param name="Site">The site swept.</param>
/// <param name="Method">The attribution method's name (<c>relp</c>, <c>atp</c>, <c>ig</c>, <c>ig_inputs</c>).</param>
/// <param name="K">The circuit's size: the k nodes of largest |score|.</param>
/// <param name="Threshold">The k-th largest |score| (the cut).</param>
/// <param name="Faithfulness">Faithfulness of the top-k circuit.</param>
/// <param name="Completeness">Completeness of the top-k circuit.</param>
/// <param name="RandomFaithfulness">Faithfulness of k random nodes of the site (the control).</param>
/// <param name="RandomCompleteness">Completeness of the same random nodes.</param>
/// <param name="TotalNodes">How many nodes the site has.</param>
public sealed record SweepPoint(NodeSite Site, string Method, int K, float Threshold, double Faithfulness, double Completeness,
    double RandomFaithfulness, double RandomCompleteness, int TotalNodes);

/// <summary>Top-k circuits of one site swept over k and evaluated by mean ablation (docs/method.md §4–5).</summary>
internal static class CircuitSweep
{
    /// <summary>Log-spaced k from 1 to <paramref name="total"/> (both included), plus 0.</summary>
    public static int[] LogSpacedK(int total, int points = 24)
    {
        var ks = new SortedSet<int> { 0, total };
        for (int i = 0; i < points; i++)
            ks.Add((int)Math.Round(Math.Pow(total, (double)i / (points - 1))));
        return ks.Where(k => k <= total).ToArray();
    }

    /// <param name="model">The model on its backend.</param>
    /// <param name="scores">The attribution the circuits are ranked by.</param>
    /// <param name="site">The site whose nodes are kept or ablated.</param>
    /// <param name="method">The attribution method's name, recorded in each point.</param>
    /// <param name="evalTask">Evaluation prompts (clean prompts run, patch prompts give the means).</param>
    /// <param name="means">The site's ablation means over the evaluation patch prompts.</param>
    /// <param name="ks">The circuit sizes, each clamped to [0, nodes of the site]; null: <see cref="LogSpacedK"/> of the site's nodes.</param>
    /// <param name="masksPerForward">How many ablation masks share one batched forward, at least 1.</param>
    /// <param name="seed">Seed of the random control circuits (mixed with k, <see cref="RandomControlSeed"/>).</param>
    /// <param name="progress">Progress per batch of circuits; null for none.</param>
    /// <param name="path">Plain forwards (the reference) or the shortcut path.</param>
    /// <param name="planLog">Receives the shortcut planner's one-line description of each sweep; null for none.</param>
    public static IReadOnlyList<SweepPoint> Run(Llama model, NodeScores scores, NodeSite site, string method, PromptTask evalTask,
        SiteMeans means, IReadOnlyList<int>? ks = null, int masksPerForward = 8, int seed = 0, IProgress<WorkProgress>? progress = null,
        SweepPath path = SweepPath.Plain, Action<string>? planLog = null)
    {
        var ranking = new NodeRanking(scores, site);
        var kList = (ks ?? LogSpacedK(ranking.Count)).Select(k => Math.Clamp(k, 0, ranking.Count)).Distinct().ToArray();
        var metric = Metric.EvaluationDefault(evalTask);
        var evaluator = new Faithfulness(new SiteMeanAblation(model, evalTask, site, means, metric, ranking.Positions)
            { MasksPerForward = masksPerForward, Path = path, PlanLog = planLog, RankingOrder = ranking.Order });

        // Circuits per k: the top-k nodes, then k random nodes (the control).
        var circuits = new List<bool[]>();
        foreach (int k in kList) { circuits.Add(ranking.TopK(k)); circuits.Add(ranking.Random(k, RandomControlSeed(seed, k))); }
        var s = evaluator.Score(circuits, (done, total) => progress?.Report(new($"sweep {site.Name()}", done, total)));
        return kList.Select((k, j) => new SweepPoint(site, method, k, ranking.Threshold(k),
            s[2 * j].Faithfulness, s[2 * j].Completeness, s[2 * j + 1].Faithfulness, s[2 * j + 1].Completeness, ranking.Count)).ToList();
    }

    /// <summary>
    /// The seed of the k-node random control. A fixed arithmetic mix, not HashCode.Combine: that one is salted per
    /// process, so the same --seed drew different random circuits in every run (and made a test flaky).
    /// </summary>
    public static int RandomControlSeed(int seed, int k) => unchecked(seed * 1_000_003 + k);
}
