using NeuronTrace.Model;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Sae;

/// <summary>
/// The smallest top-k circuit reaching the target faithfulness, for SAE nodes (features + error nodes) at one (site, layer)
/// and for neurons (mlp_act, every layer). K = −1 when even the full node set misses the target.
/// </summary>
internal sealed record CircuitSizeComparison(string Task, AttributionMethod Method, double Target,
    int NeuronK, int NeuronTotal, double NeuronFaithfulness, int SaeK, int SaeTotal, double SaeFaithfulness, int SaeErrorNodesInCircuit)
{
    public override string ToString() =>
        $"{Task} {Method.Name()}: {Target:P0} faithfulness needs k = {NeuronK} of {NeuronTotal} neurons (F {NeuronFaithfulness:F3}) " +
        $"vs k = {SaeK} of {SaeTotal} SAE nodes (F {SaeFaithfulness:F3}, {SaeErrorNodesInCircuit} error nodes among them)";
}

/// <summary>"Neuron vs SAE circuit sizes at equal faithfulness" (library form; no CLI).</summary>
internal static class SaeCircuitComparison
{
    /// <summary>
    /// Splits the task like <see cref="Pipeline.TraceJob"/> (first half attributes, second half evaluates; means over the evaluation
    /// patch prompts), scores neurons and SAE nodes with <paramref name="method"/>, and finds for each the smallest k whose
    /// top-k circuit reaches <paramref name="target"/> faithfulness: a 40-point log grid, then bisection below the first hit.
    /// </summary>
    public static CircuitSizeComparison Run(Llama model, PromptTask task, SparseAutoencoder sae, NodeSite site, int layer,
        AttributionMethod method = AttributionMethod.RelP, double target = 0.8, int? trainExamples = null)
    {
        if (task.Count < 2) throw new ArgumentException($"{task.Name}: needs at least 2 examples");
        int train = Math.Clamp(trainExamples ?? (task.Count + 1) / 2, 1, task.Count - 1);
        var trainTask = new PromptTask(task.Name + ":train", task.Pairs.Take(train).ToList());
        var evalTask = new PromptTask(task.Name + ":eval", task.Pairs.Skip(train).ToList());
        var ablationPrompts = evalTask.Pairs.Select(p => p.PatchIds ?? p.CleanIds).ToList();
        var metric = Metric.EvaluationDefault(evalTask);
        var options = new AttributionOptions { Method = method, Sites = [NodeSite.MlpAct] };

        // Neurons.
        var neuronScores = Attributor.Score(model, trainTask, options);
        var ranking = new NodeRanking(neuronScores, NodeSite.MlpAct);
        var means = SiteMeans.Compute(model, ablationPrompts, [NodeSite.MlpAct]);
        var nEval = new Faithfulness(new SiteMeanAblation(model, evalTask, NodeSite.MlpAct, means, metric, ranking.Positions));
        var (nk, nf) = SmallestK(ranking.Count, target, ks => nEval.FaithfulnessOf(ks.Select(ranking.TopK).ToList()));

        // SAE nodes.
        var saeScores = SaeAttributor.Score(model, trainTask, sae, site, layer, options);
        var saeMeans = SaeSiteMeans.Compute(model, sae, site, layer, ablationPrompts);
        var sEval = new Faithfulness(new SaeMeanAblation(model, evalTask, sae, site, layer, saeMeans, metric, saeScores.Positions));
        var order = SaeCircuitSweep.Ranking(saeScores);
        var (sk, sf) = SmallestK(order.Count, target, ks => sEval.FaithfulnessOf(ks.Select(order.TopK).ToList()));
        int errors = sk < 0 ? 0 : order.Order.Take(sk).Count(i => i % saeScores.NodesPerPosition == sae.Features);

        return new CircuitSizeComparison(task.Name, method, target, nk, ranking.Count, nf, sk, order.Count, sf, errors);
    }

    /// <summary>Smallest k with faithfulness ≥ target: log grid, then bisection between the last miss and the first hit.</summary>
    public static (int K, double Faithfulness) SmallestK(int total, double target, Func<IReadOnlyList<int>, double[]> faithfulness)
    {
        var grid = CircuitSweep.LogSpacedK(total, 40).Where(k => k > 0).ToArray();
        var f = faithfulness(grid);
        int idx = Array.FindIndex(f, v => v >= target);
        if (idx < 0) return (-1, double.NaN);
        int hi = grid[idx], lo = idx == 0 ? 0 : grid[idx - 1];
        double fHi = f[idx];
        while (hi - lo > 1)
        {
            int mid = lo + (hi - lo) / 2;
            double fm = faithfulness([mid])[0];
            if (fm >= target) { hi = mid; fHi = fm; } else lo = mid;
        }
        return (hi, fHi);
    }
}
