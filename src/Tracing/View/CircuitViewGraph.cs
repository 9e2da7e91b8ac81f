using System.Globalization;
using System.Text;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Edges;
using NeuronTrace.Tracing.Runs;
using static System.Net.WebUtility;

namespace NeuronTrace.Tracing.View;

/// <summary>
/// The circuit graph SVG: one column per prompt token (start to end) plus an answer column, one row per layer (the
/// token embeddings below, the logits above when causal edges reach them). Every node is a labelled row of its cell
/// (layer/neuron and its top-activating tokens), so the graph reads without hovering.
/// </summary>
internal static partial class CircuitView
{
    const int ColW = 138, GraphLeft = 56, GraphRight = 16, NodeRowH = 14, TokenRowH = 46, PlotTop = 30;

    /// <summary>Text on the graph: tokens longer than this are shortened (the whole token is in its title and the table).</summary>
    const int TokenChars = 14, ExampleTokenChars = 8;

    static string Clip(string s, int n) => s.Length <= n ? s : s[..(n - 1)] + "…";

    /// <summary>How a token is shown on a label: its text, with an empty or all-blank token spelled out.</summary>
    internal static string Shown(string token) => token.Trim().Length == 0 ? $"⟨{token.Replace(" ", "␣").Replace("\n", "\\n")}⟩" : token;

    internal static string NodeLabel(GraphNode n)
    {
        var sb = new StringBuilder($"L{n.Layer}/N{n.Index}");
        // The two strongest distinct tokens (a neuron's top examples often repeat one token in several prompts).
        var tops = n.Examples.Select(e => Clip(Shown(e.Token).Trim(), ExampleTokenChars)).Distinct().Take(2).ToList();
        if (tops.Count > 0) sb.Append(' ').Append(string.Join(" · ", tops));
        return sb.ToString();
    }

    static void Graph(StringBuilder sb, CircuitGraph g, ViewPrompt? prompt, IReadOnlyList<ViewEdge>? causal)
    {
        int layers = Math.Max(1, g.Layers);
        // Columns: the prompt's tokens start to end (position from the end p is column T-1-p), then the answer.
        // A drawn prompt shorter than the run's positions (another --task) gets blank leading columns.
        int tokens = Math.Max(prompt?.Tokens.Count ?? 0, Math.Max(1, g.Positions));
        int pad = tokens - (prompt?.Tokens.Count ?? tokens);
        int columns = tokens + (prompt is null ? 0 : 1);
        double ColX(int column) => GraphLeft + column * ColW;
        int ColumnOf(int positionFromEnd) => tokens - 1 - positionFromEnd;

        bool logitRow = causal?.Any(e => e.Target.Kind == EdgeEndKind.Logit) == true;
        bool embRow = causal?.Any(e => e.Source.Kind == EdgeEndKind.Embedding) == true;
        var cells = g.Nodes.Select((n, i) => (n, i)).GroupBy(x => (x.n.Layer, x.n.Position))
            .ToDictionary(c => c.Key, c => c.OrderByDescending(x => Math.Abs(x.n.Score)).ToList());
        // Row heights: each layer as tall as its fullest cell.
        var rowTop = new Dictionary<int, double>(); // layer (−1 emb, layers = logits) → top y
        var rowH = new Dictionary<int, double>();
        double y = PlotTop;
        if (logitRow) { rowTop[layers] = y; rowH[layers] = 30; y += 30; }
        for (int l = layers - 1; l >= 0; l--)
        {
            int most = cells.Where(c => c.Key.Layer == l).Select(c => c.Value.Count).DefaultIfEmpty(0).Max();
            rowTop[l] = y; rowH[l] = Math.Max(30, most * NodeRowH + 12); y += rowH[l];
        }
        if (embRow) { rowTop[-1] = y; rowH[-1] = 30; y += 30; }
        double plotBottom = y;
        int width = (int)Math.Ceiling(ColX(columns) + GraphRight), height = (int)Math.Ceiling(plotBottom + TokenRowH + 24);

        float maxScore = g.Nodes.Count == 0 ? 1f : Math.Max(1e-12f, g.Nodes.Max(n => Math.Abs(n.Score)));
        var at = new Dictionary<(int Layer, int Position, int Index), (double X, double Y)>();
        foreach (var (key, list) in cells)
            for (int k = 0; k < list.Count; k++)
                at[(key.Layer, key.Position, list[k].n.Index)] = (ColX(ColumnOf(key.Position)) + 10, rowTop[key.Layer] + 6 + k * NodeRowH + NodeRowH / 2.0);

        var idAt = g.Nodes.ToDictionary(n => (n.Layer, n.Position, n.Index), n => n.Id);
        string Key(EdgeEnd e) => e.Kind == EdgeEndKind.Neuron && idAt.TryGetValue((e.Layer, e.Position, e.Unit), out var id) ? id : EndKey(e);
        sb.Append($"<div class=\"scroll\"><svg id=\"graph\" class=\"graph\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"circuit graph\">\n");
        // Grid: row bands and their labels, column separators.
        foreach (var (row, top) in rowTop)
        {
            string label = row == layers ? "logits" : row == -1 ? "emb" : $"L{row}";
            sb.Append($"<rect class=\"band{((row & 1) == 0 ? "" : " odd")}\" x=\"{GraphLeft}\" y=\"{F(top)}\" width=\"{F(ColX(columns) - GraphLeft)}\" height=\"{F(rowH[row])}\"/>");
            sb.Append($"<text class=\"axis\" x=\"{GraphLeft - 8}\" y=\"{F(top + rowH[row] / 2 + 4)}\" text-anchor=\"end\">{label}</text>\n");
        }
        for (int c = 0; c <= columns; c++)
            sb.Append($"<line class=\"grid\" x1=\"{F(ColX(c))}\" x2=\"{F(ColX(c))}\" y1=\"{PlotTop}\" y2=\"{F(plotBottom)}\"/>");
        sb.Append('\n');
        // The position axis: the prompt's tokens (or, with no prompt, positions from the end).
        for (int c = 0; c < tokens; c++)
        {
            int p = tokens - 1 - c;
            double cx = ColX(c) + ColW / 2.0;
            if (prompt is not null && c >= pad)
            {
                string tok = prompt.Tokens[c - pad];
                string shown = HtmlEncode(Clip(Shown(tok), TokenChars)), full = HtmlEncode(System.Text.Json.JsonSerializer.Serialize(tok));
                sb.Append($"<text class=\"tok\" x=\"{F(cx)}\" y=\"{F(plotBottom + 18)}\" text-anchor=\"middle\" xml:space=\"preserve\" data-col=\"{c}\" data-token=\"{HtmlEncode(tok)}\">" +
                    $"<title>token {c}: {full}</title>{shown}</text>");
                // The same tokens above the plot, so a tall graph reads without scrolling back down.
                sb.Append($"<text class=\"tok top\" x=\"{F(cx)}\" y=\"{PlotTop - 9}\" text-anchor=\"middle\" xml:space=\"preserve\"><title>token {c}: {full}</title>{shown}</text>");
            }
            sb.Append($"<text class=\"axis\" x=\"{F(cx)}\" y=\"{F(plotBottom + 34)}\" text-anchor=\"middle\">{(prompt is null || c < pad ? $"P{p}" : $"{c - pad} · P{p}")}</text>\n");
        }
        if (prompt is not null)
        {
            double cx = ColX(tokens) + ColW / 2.0;
            sb.Append($"<text class=\"tok answer\" x=\"{F(cx)}\" y=\"{F(plotBottom + 18)}\" text-anchor=\"middle\" xml:space=\"preserve\" data-answer=\"clean\">→{HtmlEncode(Clip(Shown(prompt.CleanAnswer), TokenChars))}</text>");
            string sub = prompt.PatchAnswer is { } pa ? $"answer · patch:{HtmlEncode(Clip(Shown(pa), TokenChars))}" : "answer";
            sb.Append($"<text class=\"axis\" x=\"{F(cx)}\" y=\"{F(plotBottom + 34)}\" text-anchor=\"middle\" xml:space=\"preserve\" data-answer=\"patch\">{sub}</text>\n");
        }
        string axis = prompt is null
            ? "position from the end of the prompt (P0 = last token); no prompt tokens: the run's task was not loaded"
            : $"the prompt on line {prompt.Line} of the task, start to end (index · P = position from the end; P0 is where the answer is predicted)";
        sb.Append($"<text class=\"axis\" x=\"{GraphLeft}\" y=\"{height - 6}\">{HtmlEncode(axis)}</text>\n");

        // Edges under the nodes.
        sb.Append("<g class=\"edges\">");
        (double X, double Y)? EndAt(EdgeEnd e) => e.Kind switch
        {
            EdgeEndKind.Embedding when ColumnOf(e.Position) >= 0 => (ColX(ColumnOf(e.Position)) + ColW / 2.0, rowTop[-1] + 15),
            EdgeEndKind.Logit => (ColX(prompt is null ? tokens - 1 : tokens) + ColW / 2.0, rowTop[layers] + 15),
            EdgeEndKind.Neuron when at.TryGetValue((e.Layer, e.Position, e.Unit), out var p) => p,
            _ => null,
        };
        if (causal is not null)
        {
            var drawn = causal.Select(e => (e, a: EndAt(e.Source), b: EndAt(e.Target))).Where(x => x.a is not null && x.b is not null).ToList();
            double maxF = drawn.Count == 0 ? 1 : Math.Max(1e-30, drawn.Max(x => Math.Abs(x.e.FinalAttr)));
            int labelled = 0;
            foreach (var (e, a, b) in drawn.OrderBy(x => Math.Abs(x.e.FinalAttr)))
            {
                double frac = Math.Abs(e.FinalAttr) / maxF;
                sb.Append($"<line class=\"edge {(e.FinalAttr >= 0 ? "pos" : "neg")}\" x1=\"{F(a!.Value.X)}\" y1=\"{F(a.Value.Y)}\" x2=\"{F(b!.Value.X)}\" y2=\"{F(b.Value.Y)}\" " +
                    $"stroke-width=\"{F(0.5 + 4 * frac)}\" stroke-opacity=\"{F(0.2 + 0.6 * frac)}\" data-source=\"{HtmlEncode(Key(e.Source))}\" data-target=\"{HtmlEncode(Key(e.Target))}\" data-weight=\"{HtmlEncode(e.WeightText)}\">" +
                    $"<title>{HtmlEncode(Key(e.Source))} → {HtmlEncode(Key(e.Target))}: weight {G(e.Weight)}, flow to the metric {G(e.FinalAttr)}</title></line>");
            }
            // The strongest edges carry their weight on the graph itself.
            foreach (var (e, a, b) in drawn.OrderByDescending(x => Math.Abs(x.e.FinalAttr)).Take(8))
            {
                double mx = (a!.Value.X + b!.Value.X) / 2, my = (a.Value.Y + b.Value.Y) / 2;
                sb.Append($"<text class=\"ew\" x=\"{F(mx)}\" y=\"{F(my)}\" text-anchor=\"middle\">w {G(e.Weight)}</text>");
                labelled++;
            }
            sb.Append($"<!-- {labelled} edge weights labelled -->");
        }
        else
        {
            float maxEdge = g.Edges.Count == 0 ? 1f : Math.Max(1e-12f, g.Edges.Max(e => Math.Abs(e.Weight)));
            var byId = g.Nodes.ToDictionary(n => n.Id);
            foreach (var e in g.Edges)
            {
                var (s, t) = (byId[e.Source], byId[e.Target]);
                var (a, b) = (at[(s.Layer, s.Position, s.Index)], at[(t.Layer, t.Position, t.Index)]);
                double frac = Math.Abs(e.Weight) / maxEdge;
                sb.Append($"<line class=\"edge coattr {(e.Weight >= 0 ? "pos" : "neg")}\" x1=\"{F(a.X)}\" y1=\"{F(a.Y)}\" x2=\"{F(b.X)}\" y2=\"{F(b.Y)}\" " +
                    $"stroke-width=\"{F(0.4 + 2.6 * frac)}\" stroke-opacity=\"{F(0.12 + 0.45 * frac)}\" data-source=\"{HtmlEncode(e.Source)}\" data-target=\"{HtmlEncode(e.Target)}\"/>");
            }
        }
        sb.Append("</g>\n<g class=\"ends\">");
        if (embRow)
            foreach (int p in causal!.Where(e => e.Source.Kind == EdgeEndKind.Embedding).Select(e => e.Source.Position).Distinct())
                if (EndAt(EdgeEnd.Embedding(p)) is { } q)
                    sb.Append($"<rect class=\"endnode\" x=\"{F(q.X - 5)}\" y=\"{F(q.Y - 5)}\" width=\"10\" height=\"10\"><title>embedding at P{p}</title></rect>");
        if (logitRow && EndAt(EdgeEnd.Logit(layers)) is { } lq)
            sb.Append($"<rect class=\"endnode\" x=\"{F(lq.X - 5)}\" y=\"{F(lq.Y - 5)}\" width=\"10\" height=\"10\"/><text class=\"nlabel\" x=\"{F(lq.X - 9)}\" y=\"{F(lq.Y + 4)}\" text-anchor=\"end\">metric (logit difference)</text>");
        sb.Append("</g>\n<g class=\"nodes\">");
        for (int i = 0; i < g.Nodes.Count; i++)
        {
            var n = g.Nodes[i];
            var p = at[(n.Layer, n.Position, n.Index)];
            double r = 2 + 4.5 * Math.Sqrt(Math.Abs(n.Score) / maxScore);
            sb.Append($"<a href=\"#{AnchorOf(n.Id)}\"><circle class=\"node {(n.Score >= 0 ? "pos" : "neg")}\" cx=\"{F(p.X)}\" cy=\"{F(p.Y)}\" r=\"{F(r)}\" data-i=\"{i}\" data-id=\"{HtmlEncode(n.Id)}\">" +
                $"<title>{HtmlEncode(n.Id)} score {G(n.Score)}</title></circle>" +
                $"<text class=\"nlabel\" x=\"{F(p.X + 9)}\" y=\"{F(p.Y + 3.5)}\" xml:space=\"preserve\">{HtmlEncode(NodeLabel(n))}</text></a>");
        }
        sb.Append("</g>\n</svg></div>\n");
    }

    /// <summary>The spelling of an edge end on the page: as edges.csv spells it (neurons: the <see cref="NodeId"/> spelling of graph.json).</summary>
    internal static string EndKey(EdgeEnd e) => e.Kind switch
    {
        EdgeEndKind.Embedding => $"{EdgeCsv.EmbeddingSite}/P-{e.Position}",
        EdgeEndKind.Logit => EdgeCsv.LogitSite,
        _ => new NodeId(NodeSite.MlpAct, e.Layer, e.Position, e.Unit).ToString(),
    };

    /// <summary>An HTML id for a node's examples (node ids may hold characters an id or URL fragment should not).</summary>
    internal static string AnchorOf(string nodeId)
    {
        var sb = new StringBuilder("ex-");
        foreach (char c in nodeId) sb.Append(char.IsAsciiLetterOrDigit(c) ? c : '-');
        return sb.ToString();
    }

    static string G(double v) => v.ToString("G3", CultureInfo.InvariantCulture);
}
