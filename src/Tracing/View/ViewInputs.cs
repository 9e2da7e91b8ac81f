using System.Globalization;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Edges;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.View;

/// <summary>
/// The prompt drawn along the view's position axis: its tokens start to end (index 0 is BOS) as the model's tokenizer
/// splits them, and the answers the metric compares at its last token.
/// </summary>
public sealed record ViewPrompt(int Line, IReadOnlyList<string> Tokens, string CleanAnswer, string? PatchAnswer)
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

/// <summary>One causal edge of a run's edges.csv (written by <c>neurontrace edges</c>; ends as in <see cref="EdgeEnd"/>).</summary>
public sealed record ViewEdge(EdgeEnd Source, EdgeEnd Target, double Weight, double FinalAttr, string WeightText, string FinalAttrText);

/// <summary>
/// Reads edges.csv by its header names (src_layer, src_pos, src_unit, tgt_layer, tgt_pos, tgt_unit, weight, final_attr):
/// layer −1 is a token embedding, layer = <paramref name="layers"/> the logits. Any malformed line is a
/// <see cref="ModelFormatException"/> naming the file, the line and the field.
/// </summary>
public static class EdgesCsv
{
    static readonly string[] Columns = ["src_layer", "src_pos", "src_unit", "tgt_layer", "tgt_pos", "tgt_unit", "weight", "final_attr"];

    public static List<ViewEdge> Read(string path, int layers)
    {
        using var reader = new StreamReader(path);
        string header = reader.ReadLine() ?? throw new ModelFormatException(path, "empty file (no header line)");
        var names = header.Trim().Split(',');
        var at = new int[Columns.Length];
        for (int c = 0; c < Columns.Length; c++)
            if ((at[c] = Array.IndexOf(names, Columns[c])) < 0)
                throw new ModelFormatException(path, $"header has no column {Columns[c]} (header: \"{Short(header)}\")");
        var edges = new List<ViewEdge>();
        int lineNo = 1;
        for (string? text; (text = reader.ReadLine()) is not null;)
        {
            lineNo++;
            if (text.Length == 0) continue;
            var f = text.Split(',');
            if (f.Length != names.Length) throw new ModelFormatException(path, $"line {lineNo}: {f.Length} fields, the header has {names.Length}");
            int Int(int c)
            {
                string s = f[at[c]];
                return int.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v) && v >= -1
                    ? v : throw new ModelFormatException(path, $"line {lineNo}, field {Columns[c]}: \"{Short(s)}\" is not an integer ≥ -1");
            }
            double Real(int c)
            {
                string s = f[at[c]];
                return double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && double.IsFinite(v)
                    ? v : throw new ModelFormatException(path, $"line {lineNo}, field {Columns[c]}: \"{Short(s)}\" is not a finite number");
            }
            EdgeEnd End(int layer, int pos, int unit, string side)
            {
                if (layer == -1) return EdgeEnd.Embedding(pos);
                if (layer == layers) return EdgeEnd.Logit(layers);
                if (layer > layers) throw new ModelFormatException(path, $"line {lineNo}, field {side}_layer: {layer} is past the {layers} layers of the run's model");
                if (pos < 0 || unit < 0) throw new ModelFormatException(path, $"line {lineNo}: a neuron end ({side}) needs a position and unit ≥ 0");
                return EdgeEnd.Neuron(layer, pos, unit);
            }
            var src = End(Int(0), Int(1), Int(2), "src");
            var tgt = End(Int(3), Int(4), Int(5), "tgt");
            edges.Add(new ViewEdge(src, tgt, Real(6), Real(7), f[at[6]], f[at[7]]));
        }
        return edges;
    }

    static string Short(string s) => s.Length <= 60 ? s : s[..60] + "…";
}
