using System.Globalization;
using System.Text;
using NeuronTrace.Tracing.Edges;
using static System.Net.WebUtility;

namespace NeuronTrace.Tracing.View;

/// <summary>
/// Renders a <see cref="CircuitGraph"/> as ONE self-contained HTML file (inline CSS, SVG and JS; nothing is fetched): the
/// graph over the drawn prompt's tokens with every node labelled, the causal edges of the run's edges.csv (or, without
/// one, co-attribution edges, labelled as such), a searchable and sortable table of the circuit, each node's dataset
/// examples, and the faithfulness/completeness sweep. All task text is HTML-escaped; the embedded JSON escapes
/// &lt; &gt; &amp; as \u003c \u003e \u0026, so no task text can end the script element or open a comment in it.
/// </summary>
internal static partial class CircuitView
{
    static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

    /// <summary>The self-contained HTML page (the CLI writes it atomically beside graph.json).</summary>
    /// <param name="g">The circuit's graph (nodes, labels, sweep) as graph.json holds it.</param>
    /// <param name="prompt">The prompt drawn along the position axis; null: positions from the end only.</param>
    /// <param name="causal">The run's edges.csv rows; null: co-attribution edges of <paramref name="g"/> are drawn, labelled as such.</param>
    /// <param name="edgesSource">The file <paramref name="causal"/> came from (shown on the page).</param>
    /// <param name="maxEdges">Draw and list at most this many causal edges among drawn nodes (largest |final_attr| first).</param>
    public static string Render(CircuitGraph g, ViewPrompt? prompt = null, IReadOnlyList<ViewEdge>? causal = null, string? edgesSource = null, int maxEdges = 300)
    {
        var sb = new StringBuilder();
        string title = $"{g.Method} {g.Site} circuit";
        sb.Append("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
        sb.Append($"<title>{HtmlEncode(title)} — NeuronTrace</title>\n<style>{Css}</style></head><body>\n");
        sb.Append($"<h1>{HtmlEncode(title)}</h1>\n<p class=\"meta\">run <code>{HtmlEncode(g.Run)}</code>");
        if (g.Task is not null) sb.Append($" · task <code>{HtmlEncode(g.Task)}</code>");
        sb.Append($"<br>circuit: {g.CircuitNodes} of {g.TotalNodes} nodes");
        if (g.Faithfulness is { } f) sb.Append($", faithfulness {F(f)}");
        if (g.Completeness is { } c) sb.Append($", completeness {F(c)}");
        sb.Append($"; drawn: the top {g.Nodes.Count} by |score|.</p>\n");
        if (prompt is not null)
        {
            sb.Append($"<p class=\"prompt\">prompt (task line {prompt.Line}): ");
            foreach (var t in prompt.Tokens) sb.Append($"<span class=\"ptok\">{HtmlEncode(t)}</span>");
            sb.Append($" → <span class=\"ptok answer\">{HtmlEncode(prompt.CleanAnswer)}</span>");
            if (prompt.PatchAnswer is { } pa) sb.Append($" (patch answer <span class=\"ptok\">{HtmlEncode(pa)}</span>)");
            sb.Append("</p>\n");
        }
        sb.Append("<p class=\"meta\">rows: layers (0 at the bottom) · columns: the prompt's tokens, start to end · each node: <b>L</b>ayer/<b>N</b>euron and its top-activating tokens on the task's clean prompts (click: its examples) · ");
        sb.Append("circle size: |score| · <span class=\"pos\">red</span>: score &gt; 0 (pushes towards the patch answer) · <span class=\"neg\">blue</span>: score &lt; 0.<br>");
        List<ViewEdge>? shown = null;
        if (causal is not null)
        {
            var drawnIds = g.Nodes.Select(n => (n.Layer, n.Position, n.Index)).ToHashSet();
            bool Drawn(EdgeEnd e) => e.Kind != EdgeEndKind.Neuron || drawnIds.Contains((e.Layer, e.Position, e.Unit));
            var joining = causal.Where(e => Drawn(e.Source) && Drawn(e.Target)).OrderByDescending(e => Math.Abs(e.FinalAttr)).ToList();
            shown = joining.Take(Math.Max(0, maxEdges)).ToList();
            sb.Append($"<b>Edges are causal edge attributions</b> from <code>{HtmlEncode(edgesSource ?? "edges.csv")}</code>: {joining.Count} of its {causal.Count} edges join drawn nodes (embeddings, neurons, the metric); the {shown.Count} strongest are drawn. ");
            sb.Append("Width: |flow to the metric| (final_attr); colour: its sign; the 8 strongest carry their weight w (the edge's share of the target's activation).</p>\n");
        }
        else
            sb.Append("<b>Edges are co-attribution (not causal edge weights)</b>: score(source)·score(target) for nodes of consecutive layers, the target at the same or a later token. The run has no edges.csv; <code>neurontrace edges --run RUN</code> computes causal edges.</p>\n");
        Graph(sb, g, prompt, shown);
        if (shown is not null) EdgeTable(sb, prompt, shown);
        sb.Append("<h2>Faithfulness and completeness by circuit size</h2>\n");
        Sweep(sb, g);
        NodeTable(sb, g, prompt);
        Examples(sb, g, prompt);
        sb.Append("<div id=\"tip\" class=\"tip\" hidden></div>\n");
        sb.Append($"<script type=\"application/json\" id=\"graph-data\">{ScriptSafe(g.ToJson(indented: false))}</script>\n");
        sb.Append($"<script>{Js}</script>\n</body></html>\n");
        return sb.ToString();
    }

    /// <summary>
    /// JSON made safe inside a script element: &lt; &gt; &amp; become \u003c \u003e \u0026 (they can occur only inside
    /// JSON strings, where the escape means the same character), so "&lt;/script&gt;" and "&lt;!--" cannot appear.
    /// </summary>
    internal static string ScriptSafe(string json) => json.Replace("<", "\\u003c").Replace(">", "\\u003e").Replace("&", "\\u0026");

    /// <summary>The token a position from the end falls on in the drawn prompt ("" when it has none).</summary>
    static string TokenAt(ViewPrompt? prompt, int positionFromEnd) =>
        prompt is not null && positionFromEnd < prompt.Tokens.Count ? prompt.Tokens[prompt.Tokens.Count - 1 - positionFromEnd] : "";

    static void NodeTable(StringBuilder sb, CircuitGraph g, ViewPrompt? prompt)
    {
        sb.Append("<h2>The circuit</h2>\n<p class=\"meta\"><input id=\"node-search\" type=\"search\" placeholder=\"filter rows (any text)\" size=\"32\"> click a column head to sort.</p>\n");
        sb.Append("<table id=\"nodes\" class=\"data sortable\"><thead><tr><th data-type=\"num\">rank</th><th>node</th><th data-type=\"num\">layer</th><th data-type=\"num\">neuron</th>" +
            "<th data-type=\"num\">position from end</th><th>token</th><th data-type=\"num\">score</th><th>top-activating tokens</th><th>examples</th></tr></thead><tbody>\n");
        foreach (var n in g.Nodes)
        {
            string tops = string.Join(" · ", n.Examples.Select(e => HtmlEncode(Shown(e.Token))));
            sb.Append($"<tr><td>{n.Rank}</td><td><code>{HtmlEncode(n.Id)}</code></td><td>{n.Layer}</td><td>{n.Index}</td><td>{n.Position}</td>" +
                $"<td class=\"tokcell\">{HtmlEncode(TokenAt(prompt, n.Position))}</td><td data-v=\"{n.Score.ToString("R", CultureInfo.InvariantCulture)}\">{G(n.Score)}</td>" +
                $"<td class=\"tokcell\">{tops}</td><td>{(n.Examples.Count > 0 ? $"<a href=\"#{AnchorOf(n.Id)}\">{n.Examples.Count} examples</a>" : "none")}</td></tr>\n");
        }
        sb.Append("</tbody></table>\n");
    }

    static void EdgeTable(StringBuilder sb, ViewPrompt? prompt, IReadOnlyList<ViewEdge> causal)
    {
        string End(EdgeEnd e) => e.Kind switch
        {
            EdgeEndKind.Neuron => $"{EndKey(e)} <span class=\"tokcell\">{HtmlEncode(TokenAt(prompt, e.Position))}</span>",
            EdgeEndKind.Embedding => $"{EndKey(e)} <span class=\"tokcell\">{HtmlEncode(TokenAt(prompt, e.Position))}</span>",
            _ => "logits",
        };
        sb.Append("<h2>Causal edges</h2>\n<details open><summary>the ").Append(causal.Count).Append(" drawn edges (largest |flow| first)</summary>\n");
        sb.Append("<table id=\"edges\" class=\"data sortable\"><thead><tr><th>source</th><th>target</th><th data-type=\"num\">weight</th><th data-type=\"num\">flow to the metric</th></tr></thead><tbody>\n");
        foreach (var e in causal.OrderByDescending(e => Math.Abs(e.FinalAttr)))
            sb.Append($"<tr><td>{End(e.Source)}</td><td>{End(e.Target)}</td><td data-v=\"{HtmlEncode(e.WeightText)}\">{HtmlEncode(e.WeightText)}</td><td data-v=\"{HtmlEncode(e.FinalAttrText)}\">{HtmlEncode(e.FinalAttrText)}</td></tr>\n");
        sb.Append("</tbody></table></details>\n");
    }

    static void Examples(StringBuilder sb, CircuitGraph g, ViewPrompt? prompt)
    {
        sb.Append("<h2>Dataset examples</h2>\n");
        if (g.Nodes.All(n => n.Examples.Count == 0)) { sb.Append("<p class=\"meta\">no dataset examples (mlp_act circuits only; --examples 0 turns them off).</p>\n"); return; }
        sb.Append("<p class=\"meta\">per node: the clean-prompt tokens where the neuron's |activation| is largest (the sign kept), with the prompt up to that token.</p>\n");
        foreach (var n in g.Nodes.Where(n => n.Examples.Count > 0))
        {
            sb.Append($"<section class=\"ex\" id=\"{AnchorOf(n.Id)}\"><h3>{HtmlEncode(NodeLabel(n))} <code>{HtmlEncode(n.Id)}</code> · score {G(n.Score)} · rank {n.Rank}</h3><table class=\"data\"><tr><th>token</th><th>activation</th><th>task line</th><th>prompt up to the token</th></tr>");
            foreach (var e in n.Examples)
                sb.Append($"<tr><td class=\"tokcell\">{HtmlEncode(e.Token)}</td><td>{e.Activation.ToString("F3", CultureInfo.InvariantCulture)}</td><td>{e.Line}</td><td class=\"tokcell\">{HtmlEncode(e.Snippet)}</td></tr>");
            sb.Append("</table></section>\n");
        }
    }

    static void Sweep(StringBuilder sb, CircuitGraph g)
    {
        const int w = 720, h = 360, l = 60, r = 170, t = 20, b = 50;
        var pts = g.Sweep.Where(p => p.K > 0).ToList();
        if (pts.Count == 0) { sb.Append("<p class=\"meta\">no sweep.csv rows for this circuit.</p>\n"); return; }
        double maxLog = Math.Max(1e-9, Math.Log10(pts.Max(p => p.K)));
        var all = pts.SelectMany(p => new[] { p.Faithfulness, p.Completeness, p.RandomFaithfulness, p.RandomCompleteness }).Where(double.IsFinite).ToList();
        double lo = Math.Min(0, all.DefaultIfEmpty(0).Min()), hi = Math.Max(1, all.DefaultIfEmpty(1).Max());
        double X(int k) => l + (w - l - r) * Math.Log10(k) / maxLog;
        double Y(double v) => t + (h - t - b) * (hi - v) / (hi - lo);
        sb.Append($"<svg id=\"sweep\" class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"sweep chart\">\n");
        foreach (double v in new[] { 0, 0.2, 0.4, 0.6, 0.8, 1.0 }.Where(v => v >= lo && v <= hi))
            sb.Append($"<line class=\"grid\" x1=\"{l}\" x2=\"{w - r}\" y1=\"{F(Y(v))}\" y2=\"{F(Y(v))}\"/><text class=\"axis\" x=\"{l - 6}\" y=\"{F(Y(v) + 4)}\" text-anchor=\"end\">{F(v)}</text>");
        for (int e = 0; e <= (int)Math.Floor(maxLog); e++)
        {
            int k = (int)Math.Pow(10, e);
            sb.Append($"<line class=\"grid\" x1=\"{F(X(k))}\" x2=\"{F(X(k))}\" y1=\"{t}\" y2=\"{h - b}\"/><text class=\"axis\" x=\"{F(X(k))}\" y=\"{h - b + 16}\" text-anchor=\"middle\">{k}</text>");
        }
        sb.Append($"<text class=\"axis\" x=\"{(l + w - r) / 2}\" y=\"{h - 10}\" text-anchor=\"middle\">k (nodes kept, log scale; {pts.Max(p => p.K)} = all)</text>\n");
        void Line(Func<GraphSweepPoint, double> f, string cls, string label, int row)
        {
            var coords = pts.Where(p => double.IsFinite(f(p))).Select(p => $"{F(X(p.K))},{F(Y(f(p)))}");
            sb.Append($"<polyline class=\"series {cls}\" points=\"{string.Join(" ", coords)}\"/>");
            foreach (var p in pts.Where(p => double.IsFinite(f(p))))
                sb.Append($"<circle class=\"dot {cls}\" cx=\"{F(X(p.K))}\" cy=\"{F(Y(f(p)))}\" r=\"2.5\"><title>{label}, k={p.K}: {f(p).ToString("F3", CultureInfo.InvariantCulture)}</title></circle>");
            int ly = t + 10 + row * 20;
            sb.Append($"<line class=\"series {cls}\" x1=\"{w - r + 10}\" x2=\"{w - r + 34}\" y1=\"{ly}\" y2=\"{ly}\"/><text class=\"legend\" x=\"{w - r + 40}\" y=\"{ly + 4}\">{label}</text>\n");
        }
        Line(p => p.Faithfulness, "faith", "faithfulness", 0);
        Line(p => p.Completeness, "compl", "completeness", 1);
        Line(p => p.RandomFaithfulness, "faith random", "random faithfulness", 2);
        Line(p => p.RandomCompleteness, "compl random", "random completeness", 3);
        sb.Append("</svg>\n<p class=\"meta\">faithfulness: share of the clean metric kept when only the top-k nodes are live (the rest mean-ablated); completeness: share kept when the top-k are ablated. Dashed: k random nodes.</p>\n");
    }
}
