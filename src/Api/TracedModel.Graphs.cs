using System.Text.Json.Nodes;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Tracing.View;

namespace NeuronTrace;

// A circuit on one prompt as an attribution graph, and neurons' dataset examples: what `export` and `view` run.
public sealed partial class TracedModel
{
    /// <summary>
    /// Each <c>mlp_act</c> neuron's top-activating tokens: the task's distinct clean prompts are run and, per (layer, unit),
    /// the <paramref name="perNeuron"/> token positions (BOS excluded) with the largest |activation| are kept, sign included.
    /// </summary>
    /// <param name="task">The prompts to search (every line, training lines included).</param>
    /// <param name="neurons">(layer, unit) of each neuron.</param>
    /// <param name="perNeuron">Examples kept per neuron.</param>
    /// <param name="cancellation">Observed before the search.</param>
    public IReadOnlyDictionary<(int Layer, int Unit), List<NeuronExample>> TopActivations(PromptTask task, IEnumerable<(int Layer, int Unit)> neurons,
        int perNeuron = 5, CancellationToken cancellation = default)
    {
        cancellation.ThrowIfCancellationRequested();
        return NeuronExamples.Collect(Llama, task, Tokenizer, neurons, perNeuron);
    }

    /// <summary>
    /// A run's <c>mlp_act</c> circuit on one prompt as the attribution-graph JSON that circuit-tracer's viewer and
    /// Neuronpedia open (docs/circuit-graph-schema.md, "Exported attribution graph"): an embedding node per prompt token,
    /// the circuit's neurons at their positions (counted from the start) with their activation on the prompt and a label
    /// naming their top-activating tokens, the answer's logit node with its probability, and the causal edges given.
    /// </summary>
    /// <param name="circuit">The circuit (an <c>mlp_act</c> circuit of a run folder, <see cref="RunFolder.ReadCircuit"/>).</param>
    /// <param name="task">The task holding the prompt; its clean prompts also give the neurons' top-activating tokens.</param>
    /// <param name="pair">The example whose clean prompt the graph shows.</param>
    /// <param name="options">Slug, scan, node and example counts, edges, and what the metadata records.</param>
    /// <exception cref="ArgumentException">The circuit holds nodes of another site.</exception>
    public AttributionGraph ExportGraph(SavedCircuit circuit, PromptTask task, PromptPair pair, GraphExportOptions options)
    {
        var tokenizer = Tokenizer;
        var shown = circuit.Nodes.OrderByDescending(n => Math.Abs(n.Score)).Take(options.MaxNodes).ToList();
        var ids = pair.CleanIds;
        var labels = options.Examples > 0 ? TopActivations(task, shown.Select(n => (n.Node.Layer, n.Node.Index)), options.Examples) : null;
        var neurons = new List<GraphNeuron>();
        float prob;
        using (var pass = Llama.Forward(new TokenBatch([ids]), LogitRows.Last))
        {
            var logits = pass.HostLogits();
            float max = logits.Max();
            double z = logits.Sum(v => Math.Exp(v - max));
            prob = (float)(Math.Exp(logits[pair.CleanAnswer] - max) / z);
            int w = Config.HiddenDim;
            var acts = new Dictionary<int, float[]>();
            foreach (var n in shown)
            {
                var id = n.Node;
                if (id.Position >= ids.Length) continue;
                if (!acts.TryGetValue(id.Layer, out var a)) acts[id.Layer] = a = pass.HostSite(NodeSite.MlpAct, id.Layer);
                float act = a[(ids.Length - 1 - id.Position) * w + id.Index];
                string clerp = $"mlp_act L{id.Layer} #{id.Index}";
                if (labels is not null && labels.TryGetValue((id.Layer, id.Index), out var ex) && ex.Count > 0)
                    clerp += ": " + string.Join(" ", ex.Select(e => "\"" + Visible(e.Token) + "\""));
                neurons.Add(new GraphNeuron(id, n.Score, act, clerp));
            }
        }
        var prompt = new GraphPrompt(pair.Line, ids, ids.Select((id, i) => i == 0 ? tokenizer.Piece(id).Trim() : tokenizer.Decode(ids[i - 1], id)).ToList(),
            tokenizer.Decode(ids), pair.CleanAnswer, tokenizer.Decode(ids[^1], pair.CleanAnswer), prob);
        var json = NeuronpediaGraph.Build(options.Slug, options.Scan ?? System.IO.Path.GetFileNameWithoutExtension(Path.TrimEnd('/')),
            prompt, Config.Layers, neurons, options.Edges, options.NodeThreshold, options.Generator, options.GeneratorVersion, options.Source);
        return new AttributionGraph(json, neurons.Count, ((JsonArray)json["links"]!).Count, ids.Length);
    }

    /// <summary>A token as a label shows it: line breaks and tabs spelled out (a bare newline would read as nothing).</summary>
    static string Visible(string token) => token.Replace("\n", "\\n").Replace("\t", "\\t");
}

/// <summary>What <see cref="TracedModel.ExportGraph"/> writes beside the circuit.</summary>
public sealed record GraphExportOptions
{
    /// <summary>The graph's slug (letters, digits, <c>-</c>, <c>_</c>, <c>.</c>); circuit-tracer's viewer loads <c>SLUG.json</c>.</summary>
    public required string Slug { get; init; }

    /// <summary>The Neuronpedia scan (model id) recorded; null: the model's file or folder name.</summary>
    public string? Scan { get; init; }

    /// <summary>Export at most this many circuit neurons, largest |score| first.</summary>
    public int MaxNodes { get; init; } = 200;

    /// <summary>Top-activating task tokens named in each neuron's label (0: none, and the dataset search is skipped).</summary>
    public int Examples { get; init; } = 3;

    /// <summary>Causal edges (edges.csv rows of <c>edges</c>), or null: the graph then has no links.</summary>
    internal IReadOnlyList<EdgeCsv.Row>? Edges { get; init; }

    /// <summary>What metadata.node_threshold records: the faithfulness the run's circuits had to reach.</summary>
    public double NodeThreshold { get; init; } = 0.8;

    /// <summary>The generator named in the metadata.</summary>
    public string Generator { get; init; } = "neurontrace";

    /// <summary>The generator's version named in the metadata.</summary>
    public string GeneratorVersion { get; init; } = typeof(TracedModel).Assembly
        .GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
        .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion ?? "unknown";

    /// <summary>Where the graph came from (the run folder), recorded in the metadata; null: not recorded.</summary>
    public string? Source { get; init; }
}

/// <summary>An exported attribution graph.</summary>
/// <param name="Json">The graph document (metadata, qParams, nodes, links).</param>
/// <param name="Neurons">Circuit neurons drawn (those whose position exists in the prompt).</param>
/// <param name="Links">Edges drawn.</param>
/// <param name="Tokens">Tokens of the prompt, BOS included.</param>
public sealed record AttributionGraph(JsonObject Json, int Neurons, int Links, int Tokens);
