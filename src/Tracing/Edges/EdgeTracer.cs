using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Edges;

/// <summary>How <see cref="EdgeTracer"/> runs.</summary>
public sealed record EdgeOptions
{
    /// <summary>Backward rules of the Jacobians and of the target attributions C_k (RelP by default).</summary>
    public BackwardRules Rules { get; init; } = BackwardRules.RelP;
    /// <summary>Target neurons per multi-right-hand-side backward (prompt replicas per batch).</summary>
    public int Chunk { get; init; } = 50;
    /// <summary>Also trace embedding → neuron and neuron → logit edges (docs/method.md §6.2 item 5, direct effects).</summary>
    public bool EndpointEdges { get; init; } = true;
    /// <summary>The metric whose flow C_k = a_k·g̃_k weights the edges. Null: logit(clean) − logit(patch) when every example has a patch answer, else logit(clean).</summary>
    public Metric? Metric { get; init; }
}

/// <summary>
/// Neuron-to-neuron edges between chosen mlp_act nodes (TC "CLJA", docs/method.md §6.2), per example and averaged over a
/// task's examples (positions from the end; an edge's mean runs over the examples where both of its ends exist).
/// For every ordered layer pair src &lt; tgt, with the MLPs strictly between them stopped:
/// J[k,(t,j)] = ∂a_tgt,k/∂a_src,(t,j) under the RelP rules, w = J·a_src/(a_tgt + eps), eps = 1e-6·mean|a_tgt|
/// (mean over the target layer's activations of the prompt), and F = w·C_k with C_k = a_tgt,k·g̃_k, g̃ the full-model
/// RelP gradient of the metric (zero baseline).
/// </summary>
internal static class EdgeTracer
{
    public static EdgeGraph Trace(Llama model, PromptTask task, IReadOnlyList<EdgeEnd> neurons, EdgeOptions options,
        IProgress<WorkProgress>? progress = null)
    {
        var c = model.Config;
        if (neurons.Count == 0) throw new ArgumentException("no neurons to connect");
        foreach (var nd in neurons)
            if (nd.Kind != EdgeEndKind.Neuron || nd.Layer < 0 || nd.Layer >= c.Layers || nd.Unit < 0 || nd.Unit >= c.HiddenDim || nd.Position < 0)
                throw new ArgumentException($"node {nd} is not an mlp_act neuron of this model");
        if (options.Chunk < 1) throw new ArgumentException("chunk must be at least 1");
        var metric = options.Metric ?? Metric.EvaluationDefault(task);
        int N = neurons.Count, H = c.HiddenDim, maxLen = task.Pairs.Max(p => p.CleanIds.Length);
        var sumW = new double[N * N]; var sumF = new double[N * N]; var cnt = new int[N * N];
        var eW = new double[maxLen * N]; var eF = new double[maxLen * N]; var eCnt = new int[maxLen * N];
        var lW = new double[N]; var lF = new double[N]; var lCnt = new int[N];

        int ex = 0;
        foreach (var pair in task.Pairs)
        {
            var prompt = pair.CleanIds;
            int T = prompt.Length;
            // Nodes present in this prompt, by layer: (node index, row).
            var byLayer = Enumerable.Range(0, c.Layers).Select(_ => new List<(int Node, int Row)>()).ToArray();
            for (int i = 0; i < N; i++)
                if (neurons[i].Position < T) byLayer[neurons[i].Layer].Add((i, T - 1 - neurons[i].Position));

            // C_k and the metric value from the full-model RelP backward (batch 1).
            var (gTilde, metricValue) = MetricGradients(model, pair, metric, options.Rules, null, 0);
            using var jac = new EdgeJacobian(model, prompt, Math.Max(1, Math.Min(options.Chunk, byLayer.Max(b => b.Count))));
            var act = Enumerable.Range(0, c.Layers).Select(l => byLayer[l].Count > 0 ? jac.Activations(l) : null).ToArray();

            for (int tgt = 0; tgt < c.Layers; tgt++)
            {
                if (byLayer[tgt].Count == 0) continue;
                var aT = act[tgt]!;
                double eps = 1e-6 * aT.Average(v => Math.Abs((double)v));
                var targets = byLayer[tgt].Select(x => (x.Row, neurons[x.Node].Unit)).ToList();
                var cK = byLayer[tgt].Select(x => (double)aT[x.Row * H + neurons[x.Node].Unit] * gTilde[tgt]![x.Row * H + neurons[x.Node].Unit]).ToArray();
                var denom = byLayer[tgt].Select(x => aT[x.Row * H + neurons[x.Node].Unit] + eps).ToArray();
                for (int src = 0; src < tgt; src++)
                {
                    if (byLayer[src].Count == 0) continue;
                    var J = jac.Compute(src, tgt, targets, options.Rules, options.Chunk);
                    var aS = act[src]!;
                    for (int k = 0; k < targets.Count; k++)
                    {
                        int tn = byLayer[tgt][k].Node, tRow = byLayer[tgt][k].Row;
                        foreach (var (sn, sRow) in byLayer[src])
                        {
                            if (sRow > tRow) continue;   // causal: a later token cannot feed an earlier one
                            int at = sRow * H + neurons[sn].Unit;
                            double w = J[k][at] * aS[at] / denom[k];
                            int e = sn * N + tn;
                            sumW[e] += w; sumF[e] += w * cK[k]; cnt[e]++;
                        }
                    }
                }
                if (options.EndpointEdges)
                {
                    var Je = jac.ComputeEmbedding(tgt, targets, options.Rules, options.Chunk);
                    var x = jac.Embeddings();
                    int d = c.Dim;
                    for (int k = 0; k < targets.Count; k++)
                    {
                        int tn = byLayer[tgt][k].Node, tRow = byLayer[tgt][k].Row;
                        for (int t = 0; t <= tRow; t++)
                        {
                            double dot = 0;
                            for (int i = 0; i < d; i++) dot += (double)x[t * d + i] * Je[k][t * d + i];
                            double w = dot / denom[k];
                            int e = (T - 1 - t) * N + tn;
                            eW[e] += w; eF[e] += w * cK[k]; eCnt[e]++;
                        }
                    }
                }
                progress?.Report(new("edges", (long)ex * c.Layers + tgt + 1, (long)task.Count * c.Layers));
            }

            if (options.EndpointEdges)
                for (int src = 0; src < c.Layers; src++)
                {
                    if (byLayer[src].Count == 0) continue;
                    // Direct flow into the logits: the MLPs above src are stopped.
                    var (gDirect, _) = MetricGradients(model, pair, metric, options.Rules, l => l > src, src);
                    var aS = act[src]!;
                    foreach (var (sn, sRow) in byLayer[src])
                    {
                        int at = sRow * H + neurons[sn].Unit;
                        double cSrc = (double)aS[at] * gDirect[src]![at];
                        lW[sn] += metricValue == 0 ? 0 : cSrc / metricValue; lF[sn] += cSrc; lCnt[sn]++;
                    }
                }
            ex++;
            progress?.Report(new("edges", (long)ex * c.Layers, (long)task.Count * c.Layers));
        }

        var edges = new List<Edge>();
        for (int s = 0; s < N; s++)
            for (int t = 0; t < N; t++)
                if (cnt[s * N + t] is var n && n > 0)
                    edges.Add(new Edge(neurons[s], neurons[t], sumW[s * N + t] / n, sumF[s * N + t] / n, n));
        if (options.EndpointEdges)
        {
            for (int p = 0; p < maxLen; p++)
                for (int t = 0; t < N; t++)
                    if (eCnt[p * N + t] is var n && n > 0)
                        edges.Add(new Edge(EdgeEnd.Embedding(p), neurons[t], eW[p * N + t] / n, eF[p * N + t] / n, n));
            for (int s = 0; s < N; s++)
                if (lCnt[s] > 0) edges.Add(new Edge(neurons[s], EdgeEnd.Logit(c.Layers), lW[s] / lCnt[s], lF[s] / lCnt[s], lCnt[s]));
        }
        return new EdgeGraph(neurons, edges, c.Layers, options.EndpointEdges, task.Count, metric.Name);
    }

    /// <summary>RelP gradient of the metric at every layer's mlp_act ([T · hidden] per layer, null below lowest) and the metric value.</summary>
    static (float[]?[] Grads, double Value) MetricGradients(Llama model, PromptPair pair, Metric metric, BackwardRules rules,
        Func<int, bool>? stopMlp, int lowestLayer)
    {
        var c = model.Config;
        using var pass = model.Forward(new TokenBatch([pair.CleanIds]), LogitRows.Last);
        var logits = pass.HostLogits();
        var g = new float[logits.Length];
        metric.Gradient(logits, pair, g);
        double value = metric.Value(logits, pair);
        using var dLogits = model.Backend.Upload(g, 1, c.VocabSize);
        using var grads = model.Backward(pass, dLogits, rules, [NodeSite.MlpAct], lowestLayer: lowestLayer, stopMlp: stopMlp);
        var result = new float[]?[c.Layers];
        for (int l = lowestLayer; l < c.Layers; l++) result[l] = grads.Host(NodeSite.MlpAct, l);
        return (result, value);
    }
}
