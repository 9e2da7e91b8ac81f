using NeuronTrace.Model;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Edges;

/// <summary>One point of an edge sweep: the top percent of edges by |F| kept, and the neuron circuit they leave.</summary>
public sealed record EdgeSweepPoint(double Percent, int EdgesKept, int NodesKept, double Faithfulness, double Completeness);

/// <summary>
/// Edge-circuit evaluation (docs/method.md §6.3): keep the top p% of edges by |F|; a neuron stays iff it has at least one
/// kept incoming and one kept outgoing edge (embedding and logit edges count; when the graph has none, neurons of the
/// lowest circuit layer count as fed by the embeddings and those of the highest as feeding the logits); the kept
/// neurons are evaluated by mean ablation of mlp_act (<see cref="SiteMeanAblation"/>, <see cref="Faithfulness"/>).
/// </summary>
internal static class EdgeSweep
{
    public static readonly double[] DefaultPercents = [0, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 70, 100];

    /// <summary>The neurons a top-<paramref name="keepEdges"/> edge set keeps.</summary>
    public static HashSet<EdgeEnd> KeptNeurons(EdgeGraph graph, IReadOnlyList<Edge> ranked, int keepEdges)
    {
        var hasIn = new HashSet<EdgeEnd>();
        var hasOut = new HashSet<EdgeEnd>();
        foreach (var e in ranked.Take(keepEdges))
        {
            if (e.Target.Kind == EdgeEndKind.Neuron) hasIn.Add(e.Target);
            if (e.Source.Kind == EdgeEndKind.Neuron) hasOut.Add(e.Source);
        }
        if (!graph.HasEndpointEdges && graph.Neurons.Count > 0 && keepEdges > 0)
        {
            int low = graph.Neurons.Min(n => n.Layer), high = graph.Neurons.Max(n => n.Layer);
            foreach (var n in graph.Neurons)
            {
                if (n.Layer == low) hasIn.Add(n);
                if (n.Layer == high) hasOut.Add(n);
            }
        }
        hasIn.IntersectWith(hasOut);
        return hasIn;
    }

    public static IReadOnlyList<EdgeSweepPoint> Run(Llama model, EdgeGraph graph, PromptTask evalTask, SiteMeans means,
        IReadOnlyList<double>? percents = null, int masksPerForward = 8, IProgress<WorkProgress>? progress = null, SweepPath path = SweepPath.Shortcuts)
    {
        percents ??= DefaultPercents;
        var ranked = graph.Edges.OrderByDescending(e => Math.Abs(e.FinalAttr)).ToList();
        int positions = Math.Max(means.Positions, graph.Neurons.Max(n => n.Position) + 1);
        var metric = Metric.EvaluationDefault(evalTask);
        var ablation = new SiteMeanAblation(model, evalTask, NodeSite.MlpAct, means, metric, positions) { MasksPerForward = masksPerForward, Path = path };

        var circuits = new List<bool[]>();
        var kept = new List<(int Edges, int Nodes)>();
        foreach (double p in percents)
        {
            int k = (int)Math.Round(p / 100.0 * ranked.Count);
            var nodes = KeptNeurons(graph, ranked, k);
            var mask = new bool[ablation.NodeCount];
            foreach (var n in nodes) mask[ablation.Grid.Flat(n.Layer, n.Position, n.Unit)] = true;
            circuits.Add(mask);
            kept.Add((k, nodes.Count));
        }
        var s = new Faithfulness(ablation).Score(circuits, (done, total) => progress?.Report(new("edge sweep", done, total)));
        return percents.Select((p, i) => new EdgeSweepPoint(p, kept[i].Edges, kept[i].Nodes, s[i].Faithfulness, s[i].Completeness)).ToList();
    }

    public static string ToCsv(IEnumerable<EdgeSweepPoint> points)
    {
        var sb = new System.Text.StringBuilder("percent,edges_kept,nodes_kept,faithfulness,completeness\n");
        foreach (var p in points)
            sb.Append(System.Globalization.CultureInfo.InvariantCulture, $"{p.Percent:G6},{p.EdgesKept},{p.NodesKept},{p.Faithfulness:G9},{p.Completeness:G9}\n");
        return sb.ToString();
    }
}
