using System.Text.Json;
using System.Text.Json.Nodes;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Edges;
using NeuronTrace.Tracing.Runs;

namespace NeuronTrace.Tracing.View;

/// <summary>The one prompt a graph shows: its tokens from the start (BOS included), and the answer whose logit the graph explains.</summary>
internal sealed record GraphPrompt(int Line, int[] Ids, IReadOnlyList<string> Tokens, string Text, int Answer, string AnswerToken, float AnswerProbability);

/// <summary>A circuit neuron in the exported graph: its run score, its activation on the graph's prompt, and its label.</summary>
internal sealed record GraphNeuron(NodeId Node, float Score, float Activation, string Clerp);

/// <summary>
/// The attribution-graph JSON that circuit-tracer's local viewer and Neuronpedia open (metadata, qParams, nodes,
/// links; field meanings for neurons: docs/circuit-graph-schema.md ("Exported attribution graph")). One prompt per graph; ctx_idx counts positions from
/// the START of the prompt (our <see cref="NodeId.Position"/> counts from the end and is converted here).
/// </summary>
internal static class NeuronpediaGraph
{
    public const int SchemaVersion = 1;
    public const string NeuronFeatureType = "cross layer transcoder";
    public const string EmbeddingFeatureType = "embedding";
    public const string LogitFeatureType = "logit";
    public const string MetadataFile = "graph-metadata.json";

    /// <summary>circuit-tracer's feature number: a Cantor pairing of (layer, unit), unique per neuron over all layers.</summary>
    public static long Feature(int layer, int unit) => ((long)layer + unit) * (layer + unit + 1) / 2 + unit;

    public static string NeuronNodeId(int layer, int unit, int ctx) => $"{layer}_{unit}_{ctx}";
    public static string EmbeddingNodeId(int token, int ctx) => $"E_{token}_{ctx}";
    public static string LogitNodeId(int layers, int token, int ctx) => $"{layers + 1}_{token}_{ctx}";

    /// <param name="slug">The graph's slug (letters, digits, -, _, .): circuit-tracer's viewer loads SLUG.json.</param>
    /// <param name="scan">The Neuronpedia scan (model id) recorded in the metadata.</param>
    /// <param name="prompt">The prompt the graph shows, with its answer.</param>
    /// <param name="layers">The model's layer count (the logit node is numbered layer layers + 1).</param>
    /// <param name="neurons">The circuit's neurons shown, with their activations on the prompt and labels.</param>
    /// <param name="edges">edges.csv rows (averaged over the run's examples), or null: the graph then has no links.</param>
    /// <param name="nodeThreshold">What metadata.node_threshold records: the faithfulness the run's circuits had to reach.</param>
    /// <param name="generator">The generator named in the metadata.</param>
    /// <param name="generatorVersion">The generator's version named in the metadata.</param>
    /// <param name="source">Where the graph came from (the run folder), recorded in the metadata; null: not recorded.</param>
    public static JsonObject Build(string slug, string scan, GraphPrompt prompt, int layers, IReadOnlyList<GraphNeuron> neurons,
        IReadOnlyList<EdgeCsv.Row>? edges, double nodeThreshold, string generator, string generatorVersion, string? source)
    {
        int n = prompt.Ids.Length, last = n - 1;
        int Ctx(int fromEnd) => last - fromEnd;
        var nodes = new JsonArray();
        for (int t = 0; t < n; t++)
            nodes.Add(Node(EmbeddingNodeId(prompt.Ids[t], t), t, "E", t, EmbeddingFeatureType, $"E_{prompt.Ids[t]}-{t}",
                $"Embedding \"{prompt.Tokens[t]}\"", null, null));
        var ids = new HashSet<string>();
        foreach (var g in neurons)
        {
            var id = g.Node;
            if (id.Site != NodeSite.MlpAct) throw new ArgumentException($"{id}: only mlp_act neurons are graph nodes");
            if (id.Position > last) continue; // the node's position does not exist in this (shorter) prompt
            string nid = NeuronNodeId(id.Layer, id.Index, Ctx(id.Position));
            if (!ids.Add(nid)) continue;
            var node = Node(nid, Feature(id.Layer, id.Index), id.Layer.ToString(System.Globalization.CultureInfo.InvariantCulture), Ctx(id.Position),
                NeuronFeatureType, $"{id.Layer}_{id.Index}-0", g.Clerp, g.Score, g.Activation);
            node["neurontrace_id"] = id.ToString();
            nodes.Add(node);
        }
        string logitId = LogitNodeId(layers, prompt.Answer, last);
        var logit = Node(logitId, prompt.Answer, (layers + 1).ToString(System.Globalization.CultureInfo.InvariantCulture), last, LogitFeatureType,
            $"L_{prompt.Answer}-{last}", $"Output \"{prompt.AnswerToken}\" (p={prompt.AnswerProbability:F3})", null, null);
        logit["token_prob"] = prompt.AnswerProbability;
        logit["is_target_logit"] = true;
        nodes.Add(logit);

        var links = new JsonArray();
        foreach (var e in edges ?? [])
        {
            string? s = End(e.SourceKind, e.Source, e.SourcePosition), t = End(e.TargetKind, e.Target, null);
            if (s is not null && t is not null) links.Add(new JsonObject { ["source"] = s, ["target"] = t, ["weight"] = e.Weight });
        }

        var metadata = new JsonObject
        {
            ["slug"] = slug,
            ["scan"] = scan,
            ["transcoder_list"] = new JsonArray(),
            ["prompt_tokens"] = new JsonArray(prompt.Tokens.Select(x => (JsonNode?)JsonValue.Create(x)).ToArray()),
            ["prompt"] = prompt.Text,
            ["node_threshold"] = nodeThreshold,
            ["schema_version"] = SchemaVersion,
            ["info"] = new JsonObject
            {
                ["generator"] = new JsonObject { ["name"] = generator, ["version"] = generatorVersion },
                ["source"] = source,
                ["basis"] = "mlp_act neurons (down_proj inputs), not transcoder features",
                ["task_line"] = prompt.Line,
            },
        };
        var qParams = new JsonObject
        {
            ["pinnedIds"] = new JsonArray(), ["supernodes"] = new JsonArray(), ["linkType"] = "both", ["clickedId"] = "", ["sg_pos"] = "",
        };
        return new JsonObject { ["metadata"] = metadata, ["qParams"] = qParams, ["nodes"] = nodes, ["links"] = links };

        string? End(EdgeEndKind kind, NodeId? node, int? embeddingPosition) => kind switch
        {
            EdgeEndKind.Logit => logitId,
            EdgeEndKind.Embedding when embeddingPosition is { } p && p <= last => EmbeddingNodeId(prompt.Ids[Ctx(p)], Ctx(p)),
            EdgeEndKind.Neuron when node is { } id && id.Position <= last && ids.Contains(NeuronNodeId(id.Layer, id.Index, Ctx(id.Position)))
                => NeuronNodeId(id.Layer, id.Index, Ctx(id.Position)),
            _ => null,
        };
    }

    static JsonObject Node(string id, long feature, string layer, int ctx, string type, string jsId, string clerp, double? influence, double? activation) => new()
    {
        ["node_id"] = id, ["feature"] = feature, ["layer"] = layer, ["ctx_idx"] = ctx, ["feature_type"] = type,
        ["token_prob"] = 0.0, ["is_target_logit"] = false, ["run_idx"] = 0, ["reverse_ctx_idx"] = 0,
        ["jsNodeId"] = jsId, ["clerp"] = clerp, ["influence"] = influence, ["activation"] = activation,
    };

    static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string ToJson(JsonObject graph) => graph.ToJsonString(Indented);

    /// <summary>
    /// circuit-tracer's graph-metadata.json (the list of graphs its local server offers): the entries of
    /// <paramref name="existing"/> (the file already there, parsed, or null) with this graph's metadata added,
    /// replacing an entry of the same slug.
    /// </summary>
    public static string MetadataIndex(JsonObject graph, JsonNode? existing)
    {
        var list = new JsonArray();
        string slug = graph["metadata"]!["slug"]!.GetValue<string>();
        if (existing?["graphs"] is JsonArray graphs)
            foreach (var g in graphs)
                if (!(g is JsonObject o && o["slug"] is JsonValue v && v.GetValueKind() == JsonValueKind.String && v.GetValue<string>() == slug))
                    list.Add(g?.DeepClone());
        list.Add(graph["metadata"]!.DeepClone());
        return new JsonObject { ["graphs"] = list }.ToJsonString(Indented);
    }
}
