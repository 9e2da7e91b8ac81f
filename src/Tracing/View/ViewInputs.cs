using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Edges;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.View;

/// <summary>
/// The prompt drawn along the view's position axis: its tokens start to end (index 0 is BOS) as the model's tokenizer
/// splits them, and the answers the metric compares at its last token.
/// </summary>
internal sealed record ViewPrompt(int Line, IReadOnlyList<string> Tokens, string CleanAnswer, string? PatchAnswer)
{
    public const string BosLabel = "<bos>";

    /// <summary>
    /// The prompt of <paramref name="task"/> to draw: the task line <paramref name="line"/> when given (an error when the
    /// task has no such line), else the first of the longest clean prompts, so every node position of the run has a column.
    /// </summary>
    public static ViewPrompt Draw(PromptTask task, ITextTokenizer tokenizer, int? line = null)
    {
        if (task.Count == 0) throw new ArgumentException("the task has no examples", nameof(task));
        PromptPair pair;
        if (line is { } l)
            pair = task.Pairs.FirstOrDefault(p => p.Line == l)
                ?? throw new ArgumentException($"the task has no example on line {l} (lines {task.Pairs.Min(p => p.Line)}..{task.Pairs.Max(p => p.Line)})", nameof(line));
        else
        {
            int longest = task.Pairs.Max(p => p.CleanIds.Length);
            pair = task.Pairs.First(p => p.CleanIds.Length == longest);
        }
        var ids = pair.CleanIds;
        var tokens = new string[ids.Length];
        for (int i = 0; i < ids.Length; i++)
            tokens[i] = i == 0 ? BosLabel : tokenizer.Decode(ids[i - 1], ids[i]);
        int last = ids[^1];
        return new ViewPrompt(pair.Line, tokens, tokenizer.Decode(last, pair.CleanAnswer),
            pair.PatchAnswer is { } pa ? tokenizer.Decode(last, pa) : null);
    }
}

/// <summary>One causal edge of a run's edges.csv (read by <see cref="EdgeCsv"/>; ends as in <see cref="EdgeEnd"/>).</summary>
internal sealed record ViewEdge(EdgeEnd Source, EdgeEnd Target, double Weight, double FinalAttr)
{
    /// <summary>The weight as edges.csv spells it (<see cref="Csv.D"/>: the same text the file holds).</summary>
    public string WeightText => Csv.D(Weight);
    public string FinalAttrText => Csv.D(FinalAttr);

    /// <summary>The edges of <paramref name="path"/> (edges.csv) as drawable ends; <paramref name="layers"/> places the logits.</summary>
    public static List<ViewEdge> Read(string path, int layers) =>
        EdgeCsv.Read(path).Select(r => new ViewEdge(End(r.SourceKind, r.Source, r.SourcePosition, layers), End(r.TargetKind, r.Target, null, layers), r.Weight, r.FinalAttr)).ToList();

    static EdgeEnd End(EdgeEndKind kind, NodeId? node, int? position, int layers) => kind switch
    {
        EdgeEndKind.Embedding => EdgeEnd.Embedding(position ?? 0),
        EdgeEndKind.Logit => EdgeEnd.Logit(layers),
        _ => EdgeEnd.Neuron(node!.Value.Layer, node.Value.Position, node.Value.Index),
    };
}
