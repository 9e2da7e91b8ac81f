using NeuronTrace.Model;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Evaluation;

/// <summary>One k of a sweep: the top-k circuit's faithfulness and completeness, and those of k random nodes.</summary>
public sealed record SweepPoint(NodeSite Site, string Method, int K, float Threshold, double Faithfulness, double Completeness,
    double RandomFaithfulness, double RandomCompleteness, int TotalNodes);

/// <summary>Top-k circuits of one site swept over k and evaluated by mean ablation (docs/method.md §4–5).</summary>
public static class CircuitSweep
{
    /// <summary>Log-spaced k from 1 to <paramref name="total"/> (both included), plus 0.</summary>
    public static int[] LogSpacedK(int total, int points = 24)
    {
        var ks = new SortedSet<int> { 0, total };
        for (int i = 0; i < points; i++)
            ks.Add((int)Math.Round(Math.Pow(total, (double)i / (points - 1))));
        return ks.Where(k => k <= total).ToArray();
    }

    /// <param name="evalTask">Evaluation prompts (clean prompts run, patch prompts give the means).</param>
    public static IReadOnlyList<SweepPoint> Run(Llama model, NodeScores scores, NodeSite site, string method, PromptTask evalTask,
        SiteMeans means, IReadOnlyList<int>? ks = null, int masksPerForward = 8, int seed = 0, IProgress<WorkProgress>? progress = null)
    {
        var ranking = new NodeRanking(scores, site);
        var kList = (ks ?? LogSpacedK(ranking.Count)).Select(k => Math.Clamp(k, 0, ranking.Count)).Distinct().ToArray();
        var metric = Metric.EvaluationDefault(evalTask);
        var evaluator = new AblationEvaluator(model, evalTask, site, means, metric, ranking.Positions) { MasksPerForward = masksPerForward };

        // Masks: the full model, the empty circuit, then per k: circuit kept, circuit ablated, random kept, random ablated.
        var masks = new List<bool[]> { Filled(ranking.Count, true), Filled(ranking.Count, false) };
        foreach (int k in kList)
        {
            var top = ranking.TopK(k);
            var rnd = ranking.Random(k, RandomControlSeed(seed, k));
            masks.Add(top); masks.Add(Not(top)); masks.Add(rnd); masks.Add(Not(rnd));
        }
        var m = evaluator.Evaluate(masks, done => progress?.Report(new($"sweep {site.Name()}", done, masks.Count)));
        double full = m[0], empty = m[1], range = full - empty;
        var points = new List<SweepPoint>();
        for (int j = 0; j < kList.Length; j++)
        {
            int o = 2 + 4 * j;
            points.Add(new SweepPoint(site, method, kList[j], ranking.Threshold(kList[j]),
                (m[o] - empty) / range, (m[o + 1] - empty) / range, (m[o + 2] - empty) / range, (m[o + 3] - empty) / range, ranking.Count));
        }
        return points;
    }

    /// <summary>
    /// The seed of the k-node random control. A fixed arithmetic mix, not HashCode.Combine: that one is salted per
    /// process, so the same --seed drew different random circuits in every run (and made a test flaky).
    /// </summary>
    public static int RandomControlSeed(int seed, int k) => unchecked(seed * 1_000_003 + k);

    static bool[] Filled(int n, bool v) { var a = new bool[n]; Array.Fill(a, v); return a; }
    static bool[] Not(bool[] a) => a.Select(x => !x).ToArray();
}
