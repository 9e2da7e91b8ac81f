using System.Globalization;
using System.Text;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Edges;

/// <summary>What an edge end is: an mlp_act neuron, a token embedding (one per position) or the metric's logits.</summary>
public enum EdgeEndKind
{
    /// <summary>An mlp_act neuron (layer, position, unit).</summary>
    Neuron,
    /// <summary>The token embedding at a position.</summary>
    Embedding,
    /// <summary>The metric's logits.</summary>
    Logit,
}

/// <summary>
/// One end of an edge. Position counts from the end of the prompt (0 = last token). Embedding ends have Layer −1 and
/// Unit −1; the logit end has Layer = number of layers, Position 0, Unit −1.
/// </summary>
public readonly record struct EdgeEnd(EdgeEndKind Kind, int Layer, int Position, int Unit)
{
    /// <summary>The mlp_act neuron <paramref name="unit"/> of <paramref name="layer"/> at <paramref name="position"/> from the end.</summary>
    public static EdgeEnd Neuron(int layer, int position, int unit) => new(EdgeEndKind.Neuron, layer, position, unit);
    /// <summary>The token embedding at <paramref name="position"/> from the end.</summary>
    public static EdgeEnd Embedding(int position) => new(EdgeEndKind.Embedding, -1, position, -1);
    /// <summary>The logit end of a model with <paramref name="layers"/> layers.</summary>
    public static EdgeEnd Logit(int layers) => new(EdgeEndKind.Logit, layers, 0, -1);
    /// <summary>The end as edges.csv spells it: a node id, <c>embedding/P-n</c> or <c>logits</c>.</summary>
    public override string ToString() => Kind switch
    {
        EdgeEndKind.Embedding => $"embedding/P-{Position}",
        EdgeEndKind.Logit => "logits",
        _ => new NeuronTrace.Model.NodeId(NeuronTrace.Model.NodeSite.MlpAct, Layer, Position, Unit).ToString(),
    };
}

/// <summary>
/// One edge, averaged over the examples where both ends exist: Weight is the relative edge weight
/// w = J·a_src/(a_tgt + eps) and FinalAttr the flow to the metric F = w·C_tgt (docs/method.md §6.2).
/// </summary>
public readonly record struct Edge(EdgeEnd Source, EdgeEnd Target, double Weight, double FinalAttr, int Examples);

/// <summary>The edges among a set of mlp_act neurons (and, when traced, from the embeddings and to the logits).</summary>
public sealed record EdgeGraph(IReadOnlyList<EdgeEnd> Neurons, IReadOnlyList<Edge> Edges, int Layers, bool HasEndpointEdges, int Examples, string Metric)
{
    /// <summary>The edges between two neurons (neither end an embedding or the logits).</summary>
    public IEnumerable<Edge> NeuronEdges => Edges.Where(e => e.Source.Kind == EdgeEndKind.Neuron && e.Target.Kind == EdgeEndKind.Neuron);

    /// <summary>The text of edges.csv (columns and end spellings: <see cref="Runs.EdgeCsv"/>).</summary>
    public string ToCsv() => Runs.EdgeCsv.Write(this);
}
