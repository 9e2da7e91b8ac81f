using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Tracing.View;

namespace NeuronTrace;

/// <summary>
/// The single-file HTML page of a run's circuit that <c>view</c> writes: nodes laid out by layer and by the tokens of a
/// prompt of the run's task, each labelled with its layer/neuron and top-activating tokens; causal edges of an
/// <c>edges.csv</c> with their weights (or co-attribution edges, labelled as not causal); a searchable, sortable table
/// of the circuit; the faithfulness/completeness sweep with its random control. All task text is escaped; the page
/// needs no network. Also the page's data as graph.json (docs/circuit-graph-schema.md).
/// </summary>
internal static class RunView
{
    /// <summary>Draws a run's circuit.</summary>
    /// <param name="run">The run folder (<see cref="RunFolder.Open"/>).</param>
    /// <param name="circuit">One of its circuits (<see cref="RunFolder.ReadCircuit"/>).</param>
    /// <param name="options">What to draw (node and edge caps, prompt, examples, edges).</param>
    /// <exception cref="ArgumentException">Causal edges are asked for a circuit of another site than <c>mlp_act</c>.</exception>
    /// <exception cref="NeuronTrace.Model.ModelFormatException">The edges file is malformed.</exception>
    public static RunViewPage Render(RunFolder run, SavedCircuit circuit, RunViewOptions? options = null)
    {
        var o = options ?? new RunViewOptions();
        var prompt = o.Task is { } task && o.Tokenizer is { } tokenizer ? ViewPrompt.Draw(task, tokenizer, o.PromptLine) : null;
        var graph = CircuitGraph.Build(run, circuit, o.MaxNodes, o.MaxEdges, o.Examples, o.Layers, o.TaskPath);
        List<ViewEdge>? causal = null;
        if (o.EdgesPath is { } edgesPath)
        {
            if (circuit.Site != NodeSite.MlpAct) throw new ArgumentException($"edges.csv holds mlp_act edges; the {circuit.Site.Name()} circuit cannot show them");
            causal = ViewEdge.Read(edgesPath, graph.Layers);
        }
        return new RunViewPage(graph, CircuitView.Render(graph, prompt, causal, o.EdgesPath, o.MaxEdges), causal);
    }
}

/// <summary>What <see cref="RunView.Render"/> draws.</summary>
internal sealed record RunViewOptions
{
    /// <summary>Draw at most this many circuit nodes, largest |score| first.</summary>
    public int MaxNodes { get; init; } = 60;

    /// <summary>Draw at most this many edges: causal ones by largest |final_attr|, else co-attribution ones by largest |weight|.</summary>
    public int MaxEdges { get; init; } = 300;

    /// <summary>The task whose prompt labels the position axis (with <see cref="Tokenizer"/>); null: positions from the end.</summary>
    public PromptTask? Task { get; init; }

    /// <summary>The tokenizer that splits the drawn prompt into the axis tokens (the model's).</summary>
    public ITextTokenizer? Tokenizer { get; init; }

    /// <summary>The task line whose clean prompt is drawn; null: the first of the longest prompts.</summary>
    public int? PromptLine { get; init; }

    /// <summary>The task file named on the page and in graph.json.</summary>
    public string? TaskPath { get; init; }

    /// <summary>The model's layer count; null: one more than the deepest node.</summary>
    public int? Layers { get; init; }

    /// <summary>Dataset examples per (layer, unit) (<see cref="TracedModel.TopActivations"/>); null: none.</summary>
    public IReadOnlyDictionary<(int Layer, int Unit), List<NeuronExample>>? Examples { get; init; }

    /// <summary>The causal edges file (<c>edges.csv</c> of <c>edges</c>, mlp_act circuits only); null: co-attribution edges.</summary>
    public string? EdgesPath { get; init; }
}

/// <summary>A rendered view.</summary>
/// <param name="Graph">The page's data (write <see cref="CircuitGraph.ToJson"/> as graph.json).</param>
/// <param name="Html">The self-contained page.</param>
/// <param name="CausalEdges">The edges read from <see cref="RunViewOptions.EdgesPath"/>, or null when co-attribution edges were drawn.</param>
internal sealed record RunViewPage(CircuitGraph Graph, string Html, IReadOnlyList<ViewEdge>? CausalEdges);
