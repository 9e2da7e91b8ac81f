using System.Globalization;
using System.Text;
using static System.Net.WebUtility;

namespace NeuronTrace.Tracing.View;

/// <summary>
/// Renders a <see cref="CircuitGraph"/> as ONE self-contained HTML file (inline CSS, SVG and JS; nothing is fetched):
/// the graph (layer on y, position on x), hover tooltips with dataset examples, and the faithfulness/completeness sweep.
/// </summary>
public static class CircuitView
{
    const int W = 1100, H = 560, Left = 70, Right = 20, Top = 30, Bottom = 50;

    static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);

    /// <summary>The self-contained HTML page (the CLI writes it atomically beside graph.json).</summary>
    public static string Render(CircuitGraph g)
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
        sb.Append($"; drawn: the top {g.Nodes.Count} by |score|, {g.Edges.Count} edges.</p>\n");
        sb.Append("<p class=\"meta\">y: layer (0 at the bottom) · x: token position counted from the end of the prompt (P0 = last token, right) · ");
        sb.Append("size: |score| · <span class=\"pos\">red</span>: score &gt; 0 (pushes towards the patch answer) · <span class=\"neg\">blue</span>: score &lt; 0.<br>");
        sb.Append("<b>Edges are co-attribution (not causal edge weights)</b>: score(source)·score(target) for nodes of consecutive layers, the target at the same or a later token. True edge attribution is not computed yet.</p>\n");
        Graph(sb, g);
        sb.Append("<h2>Faithfulness and completeness by circuit size</h2>\n");
        Sweep(sb, g);
        sb.Append("<div id=\"tip\" class=\"tip\" hidden></div>\n");
        // In a <script> element "<!--" and "</script" change how the HTML parser reads on; '<' occurs in JSON only
        // inside strings, where \u003c is the same character.
        string json = g.ToJson(indented: false).Replace("<", "\\u003c");
        sb.Append($"<script type=\"application/json\" id=\"graph-data\">{json}</script>\n");
        sb.Append($"<script>{Js}</script>\n</body></html>\n");
        return sb.ToString();
    }

    static void Graph(StringBuilder sb, CircuitGraph g)
    {
        int layers = Math.Max(1, g.Layers), positions = Math.Max(1, g.Positions);
        double plotW = W - Left - Right, plotH = H - Top - Bottom;
        double colW = plotW / positions, rowH = plotH / layers;
        double X(int position) => Left + (positions - 1 - position + 0.5) * colW;
        double Y(int layer) => Top + (layers - 1 - layer + 0.5) * rowH;
        float maxScore = g.Nodes.Count == 0 ? 1f : Math.Max(1e-12f, g.Nodes.Max(n => Math.Abs(n.Score)));
        var pos = new Dictionary<string, (double X, double Y, double R)>();
        foreach (var cell in g.Nodes.GroupBy(n => (n.Layer, n.Position)))
        {
            var list = cell.OrderByDescending(n => Math.Abs(n.Score)).ToList();
            int perRow = Math.Max(1, (int)(colW * 0.9 / 22));
            for (int i = 0; i < list.Count; i++)
            {
                int row = i / perRow, col = i % perRow, inRow = Math.Min(perRow, list.Count - row * perRow);
                double x = X(cell.Key.Position) + (col - (inRow - 1) / 2.0) * Math.Min(22, colW * 0.9 / inRow);
                double y = Y(cell.Key.Layer) + (row % 2 == 0 ? 1 : -1) * ((row + 1) / 2) * 16;
                pos[list[i].Id] = (x, y, 3 + 9 * Math.Sqrt(Math.Abs(list[i].Score) / maxScore));
            }
        }
        sb.Append($"<svg id=\"graph\" class=\"graph\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"circuit graph\">\n");
        for (int l = 0; l < layers; l++)
        {
            sb.Append($"<line class=\"grid\" x1=\"{Left}\" x2=\"{W - Right}\" y1=\"{F(Y(l))}\" y2=\"{F(Y(l))}\"/>");
            sb.Append($"<text class=\"axis\" x=\"{Left - 8}\" y=\"{F(Y(l) + 4)}\" text-anchor=\"end\">L{l}</text>\n");
        }
        for (int p = 0; p < positions; p++)
            sb.Append($"<text class=\"axis\" x=\"{F(X(p))}\" y=\"{H - Bottom + 20}\" text-anchor=\"middle\">P{p}</text>");
        sb.Append($"<text class=\"axis\" x=\"{Left + plotW / 2}\" y=\"{H - 8}\" text-anchor=\"middle\">position from the end of the prompt (P0 = last token)</text>\n");
        float maxEdge = g.Edges.Count == 0 ? 1f : Math.Max(1e-12f, g.Edges.Max(e => Math.Abs(e.Weight)));
        sb.Append("<g class=\"edges\">");
        foreach (var e in g.Edges)
        {
            var (a, b) = (pos[e.Source], pos[e.Target]);
            double frac = Math.Abs(e.Weight) / maxEdge;
            sb.Append($"<line class=\"edge {(e.Weight >= 0 ? "pos" : "neg")}\" x1=\"{F(a.X)}\" y1=\"{F(a.Y)}\" x2=\"{F(b.X)}\" y2=\"{F(b.Y)}\" " +
                $"stroke-width=\"{F(0.4 + 3.6 * frac)}\" stroke-opacity=\"{F(0.15 + 0.6 * frac)}\" data-source=\"{e.Source}\" data-target=\"{e.Target}\"/>");
        }
        sb.Append("</g>\n<g class=\"nodes\">");
        for (int i = 0; i < g.Nodes.Count; i++)
        {
            var n = g.Nodes[i];
            var p = pos[n.Id];
            sb.Append($"<circle class=\"node {(n.Score >= 0 ? "pos" : "neg")}\" cx=\"{F(p.X)}\" cy=\"{F(p.Y)}\" r=\"{F(p.R)}\" data-i=\"{i}\" data-id=\"{n.Id}\">" +
                $"<title>{n.Id} score {n.Score.ToString("G4", CultureInfo.InvariantCulture)}</title></circle>");
        }
        sb.Append("</g>\n</svg>\n");
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

    const string Css = """
        body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:20px;color:#222;background:#fff}
        h1{font-size:20px;margin:0 0 6px} h2{font-size:16px;margin:24px 0 6px}
        .meta{color:#555;max-width:1100px} code{font-size:12px}
        .pos{color:#c0392b} .neg{color:#2166ac}
        svg{display:block;background:#fcfcfc;border:1px solid #ddd}
        .grid{stroke:#e6e6e6;stroke-width:1} .axis,.legend{font-size:11px;fill:#555}
        .edge.pos{stroke:#c0392b} .edge.neg{stroke:#2166ac} .edge.hl{stroke-opacity:.95}
        .node{stroke:#333;stroke-width:.6;cursor:pointer} .node.pos{fill:#e74c3c} .node.neg{fill:#3d85c6} .node:hover,.node.hl{stroke:#000;stroke-width:2}
        .series{fill:none;stroke-width:2} .faith{stroke:#2c7fb8;fill:#2c7fb8} .compl{stroke:#d95f0e;fill:#d95f0e}
        polyline.series,line.series{fill:none} .random{stroke-dasharray:5 4;opacity:.7}
        .tip{position:fixed;z-index:10;max-width:420px;background:#fff;border:1px solid #888;border-radius:4px;padding:8px 10px;box-shadow:0 2px 8px rgba(0,0,0,.2);font-size:12px;pointer-events:none}
        .tip table{border-collapse:collapse;margin-top:4px} .tip td{padding:1px 6px 1px 0;vertical-align:top} .tip .tok{font-weight:bold;white-space:pre}
        """;

    const string Js = """
        (function () {
          "use strict";
          var data = JSON.parse(document.getElementById("graph-data").textContent);
          var tip = document.getElementById("tip");
          function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c]; }); }
          function show(ev, n) {
            var h = "<b>" + esc(n.site) + " layer " + n.layer + ", neuron " + n.index + "</b> at P" + n.position +
              " (position " + n.position + " from the end)<br>score " + n.score.toPrecision(4) + " · rank " + n.rank;
            if (n.examples.length) {
              h += "<br>fires most on (|activation|, task clean prompts):<table>";
              n.examples.forEach(function (e) {
                h += "<tr><td class=\"tok\">" + esc(JSON.stringify(e.token)) + "</td><td>" + e.activation.toFixed(3) + "</td><td>" + esc(e.snippet) + "</td></tr>";
              });
              h += "</table>";
            }
            tip.innerHTML = h;
            tip.hidden = false;
            move(ev);
          }
          function move(ev) {
            var x = ev.clientX + 14, y = ev.clientY + 14;
            if (x + tip.offsetWidth > window.innerWidth) x = ev.clientX - tip.offsetWidth - 14;
            if (y + tip.offsetHeight > window.innerHeight) y = ev.clientY - tip.offsetHeight - 14;
            tip.style.left = Math.max(0, x) + "px"; tip.style.top = Math.max(0, y) + "px";
          }
          var edges = document.querySelectorAll("#graph .edge");
          document.querySelectorAll("#graph .node").forEach(function (c) {
            var n = data.nodes[+c.getAttribute("data-i")];
            c.addEventListener("mouseenter", function (ev) {
              show(ev, n);
              edges.forEach(function (e) { if (e.getAttribute("data-source") === n.id || e.getAttribute("data-target") === n.id) e.classList.add("hl"); });
            });
            c.addEventListener("mousemove", move);
            c.addEventListener("mouseleave", function () {
              tip.hidden = true;
              edges.forEach(function (e) { e.classList.remove("hl"); });
            });
          });
          if (data.nodes.length !== document.querySelectorAll("#graph .node").length) console.error("neurontrace view: node count mismatch");
        })();
        """;
}
