using System.Text.Json;
using System.Text.Json.Serialization;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Runs;

namespace NeuronTrace.Tracing.View;

/// <summary>A node of the drawn graph (schema: docs/circuit-graph-schema.md).</summary>
internal sealed record GraphNode(
    [property: JsonPropertyName("id")] string Id,
    [property: JsonPropertyName("site")] string Site,
    [property: JsonPropertyName("layer")] int Layer,
    [property: JsonPropertyName("position")] int Position,
    [property: JsonPropertyName("index")] int Index,
    [property: JsonPropertyName("score")] float Score,
    [property: JsonPropertyName("rank")] int Rank,
    [property: JsonPropertyName("examples")] IReadOnlyList<GraphExample> Examples);

internal sealed record GraphExample(
    [property: JsonPropertyName("token")] string Token,
    [property: JsonPropertyName("snippet")] string Snippet,
    [property: JsonPropertyName("activation")] float Activation,
    [property: JsonPropertyName("line")] int Line,
    [property: JsonPropertyName("position")] int Position);

internal sealed record GraphEdge(
    [property: JsonPropertyName("source")] string Source,
    [property: JsonPropertyName("target")] string Target,
    [property: JsonPropertyName("weight")] float Weight);

internal sealed record GraphSweepPoint(
    [property: JsonPropertyName("k")] int K,
    [property: JsonPropertyName("faithfulness")] double Faithfulness,
    [property: JsonPropertyName("completeness")] double Completeness,
    [property: JsonPropertyName("random_faithfulness")] double RandomFaithfulness,
    [property: JsonPropertyName("random_completeness")] double RandomCompleteness);

/// <summary>
/// The circuit graph the viewer draws and <c>graph.json</c> holds: the top circuit nodes by |score| and
/// co-attribution edges between them (score(source) · score(target) for nodes of consecutive layers, the target at the
/// same or a later token). These edges are NOT causal edge attributions; true edge attribution is not computed yet.
/// </summary>
internal sealed record CircuitGraph(
    [property: JsonPropertyName("format")] string Format,
    [property: JsonPropertyName("run")] string Run,
    [property: JsonPropertyName("task")] string? Task,
    [property: JsonPropertyName("method")] string Method,
    [property: JsonPropertyName("site")] string Site,
    [property: JsonPropertyName("layers")] int Layers,
    [property: JsonPropertyName("positions")] int Positions,
    [property: JsonPropertyName("position_convention")] string PositionConvention,
    [property: JsonPropertyName("score_meaning")] string ScoreMeaning,
    [property: JsonPropertyName("circuit_nodes")] int CircuitNodes,
    [property: JsonPropertyName("total_nodes")] int TotalNodes,
    [property: JsonPropertyName("faithfulness")] double? Faithfulness,
    [property: JsonPropertyName("completeness")] double? Completeness,
    [property: JsonPropertyName("edge_kind")] string EdgeKind,
    [property: JsonPropertyName("nodes")] IReadOnlyList<GraphNode> Nodes,
    [property: JsonPropertyName("edges")] IReadOnlyList<GraphEdge> Edges,
    [property: JsonPropertyName("sweep")] IReadOnlyList<GraphSweepPoint> Sweep)
{
    public const string FormatName = "neurontrace-circuit-graph/1";
    public const string EdgeKindText = "co-attribution (not causal edge weights): weight = score(source) * score(target)";

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public string ToJson(bool indented = true) => JsonSerializer.Serialize(this, indented ? Json : new JsonSerializerOptions(Json) { WriteIndented = false });

    /// <summary>A node's id in graph.json: the one <see cref="NodeId"/> spelling.</summary>
    public static string NodeKey(NodeId n) => n.ToString();

    /// <param name="run">The run folder the circuit and its sweep come from.</param>
    /// <param name="circuit">The circuit to draw.</param>
    /// <param name="maxNodes">Nodes kept, largest |score| first; at most this many (0 or less: none).</param>
    /// <param name="maxEdges">Co-attribution edges kept between consecutive layers, largest |weight| first.</param>
    /// <param name="examples">Dataset examples per (layer, unit), or null (nodes then carry none).</param>
    /// <param name="layers">The model's layer count (null: one more than the deepest node).</param>
    /// <param name="task">The task file recorded in the graph; null: the run's.</param>
    public static CircuitGraph Build(RunFolder run, SavedCircuit circuit, int maxNodes, int maxEdges,
        IReadOnlyDictionary<(int Layer, int Unit), List<NeuronExample>>? examples, int? layers = null, string? task = null)
    {
        var shown = circuit.Nodes.Select((n, i) => (n, rank: i))
            .OrderByDescending(x => Math.Abs(x.n.Score)).ThenBy(x => x.rank).Take(Math.Max(0, maxNodes)).ToList();
        var nodes = shown.Select(x => new GraphNode(NodeKey(x.n.Node), x.n.Node.Site.Name(), x.n.Node.Layer, x.n.Node.Position, x.n.Node.Index,
            x.n.Score, x.rank + 1,
            examples is not null && examples.TryGetValue((x.n.Node.Layer, x.n.Node.Index), out var ex)
                ? ex.Select(e => new GraphExample(e.Token, e.Snippet, e.Activation, e.Line, e.PositionFromEnd)).ToList()
                : [])).ToList();

        var edges = new List<GraphEdge>();
        foreach (var s in nodes)
            foreach (var t in nodes)
                if (t.Layer == s.Layer + 1 && s.Position >= t.Position)
                    edges.Add(new GraphEdge(s.Id, t.Id, s.Score * t.Score));
        edges = edges.OrderByDescending(e => Math.Abs(e.Weight)).Take(Math.Max(0, maxEdges)).ToList();

        var sweep = run.Sweep.Where(r => r.Site == circuit.Site.Name() && r.Method == circuit.Method).OrderBy(r => r.K)
            .Select(r => new GraphSweepPoint(r.K, r.Faithfulness, r.Completeness, r.RandomFaithfulness, r.RandomCompleteness)).ToList();
        int maxLayer = circuit.Nodes.Count == 0 ? 0 : circuit.Nodes.Max(n => n.Node.Layer) + 1;
        int positions = nodes.Count == 0 ? 1 : nodes.Max(n => n.Position) + 1;
        return new CircuitGraph(FormatName, Path.GetFullPath(run.Dir), task ?? run.TaskPath, circuit.Method, circuit.Site.Name(),
            layers ?? maxLayer, positions,
            "position counts tokens back from the end of the prompt: 0 = the last prompt token (where the answer is predicted)",
            "example-mean attribution score of the node for logit(patch answer) - logit(clean answer); > 0: moving the node from its clean to its patch value pushes towards the patch answer",
            circuit.Nodes.Count, circuit.TotalNodes, circuit.Faithfulness, circuit.Completeness, EdgeKindText, nodes, edges, sweep);
    }
}
