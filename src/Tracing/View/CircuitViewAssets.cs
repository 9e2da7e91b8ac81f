namespace NeuronTrace.Tracing.View;

/// <summary>The page's inline stylesheet and script (nothing is fetched: the page works offline from one file).</summary>
internal static partial class CircuitView
{
    const string Css = """
        body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:20px;color:#222;background:#fff}
        h1{font-size:20px;margin:0 0 6px} h2{font-size:16px;margin:24px 0 6px} h3{font-size:13px;margin:12px 0 4px}
        .meta{color:#555;max-width:1100px} code{font-size:12px}
        .pos{color:#c0392b} .neg{color:#2166ac}
        .prompt{font-size:15px} .ptok{white-space:pre;background:#eef3f8;border:1px solid #c9d6e3;border-radius:3px;padding:0 2px;margin:0 1px;font-family:ui-monospace,monospace}
        .ptok.answer{background:#e3f4e1;border-color:#8cc084}
        .scroll{overflow-x:auto;max-width:100%}
        svg{display:block;background:#fcfcfc;border:1px solid #ddd}
        .band{fill:#fcfcfc} .band.odd{fill:#f3f5f8}
        .grid{stroke:#e0e0e0;stroke-width:1} .axis,.legend{font-size:11px;fill:#555}
        .tok{font:bold 13px ui-monospace,monospace;fill:#5a1e96} .tok.answer{fill:#1b7a2f}
        .nlabel{font:10px ui-monospace,monospace;fill:#222;pointer-events:none}
        .ew{font:10px ui-monospace,monospace;fill:#000;stroke:#fff;stroke-width:3px;paint-order:stroke;pointer-events:none}
        .edge.pos{stroke:#c0392b} .edge.neg{stroke:#2166ac} .edge.hl{stroke-opacity:.95}
        .endnode{fill:#888;stroke:#333}
        .node{stroke:#333;stroke-width:.6;cursor:pointer} .node.pos{fill:#e74c3c} .node.neg{fill:#3d85c6} .node:hover,.node.hl{stroke:#000;stroke-width:2}
        .series{fill:none;stroke-width:2} .faith{stroke:#2c7fb8;fill:#2c7fb8} .compl{stroke:#d95f0e;fill:#d95f0e}
        polyline.series,line.series{fill:none} .random{stroke-dasharray:5 4;opacity:.7}
        table.data{border-collapse:collapse;font-size:12px} table.data th,table.data td{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
        table.sortable th{cursor:pointer;background:#f3f5f8} table.sortable th.asc::after{content:" ▲"} table.sortable th.desc::after{content:" ▼"}
        .tokcell{white-space:pre;font-family:ui-monospace,monospace}
        section.ex:target{background:#fff7d6}
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
          // Tables: click a head to sort (numbers by data-v or their text), type to filter rows.
          document.querySelectorAll("table.sortable").forEach(function (table) {
            var heads = table.querySelectorAll("th");
            heads.forEach(function (th, col) {
              th.addEventListener("click", function () {
                var asc = !th.classList.contains("asc");
                heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
                th.classList.add(asc ? "asc" : "desc");
                var num = th.getAttribute("data-type") === "num";
                var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
                function key(r) { var c = r.cells[col], v = c.getAttribute("data-v"); v = v === null ? c.textContent : v; return num ? parseFloat(v) : v; }
                rows.sort(function (a, b) { var x = key(a), y = key(b); var d = num ? x - y : (x < y ? -1 : x > y ? 1 : 0); return asc ? d : -d; });
                rows.forEach(function (r) { body.appendChild(r); });
              });
            });
          });
          var search = document.getElementById("node-search");
          if (search) search.addEventListener("input", function () {
            var q = search.value.toLowerCase();
            document.querySelectorAll("#nodes tbody tr").forEach(function (r) { r.hidden = q !== "" && r.textContent.toLowerCase().indexOf(q) < 0; });
          });
          if (data.nodes.length !== document.querySelectorAll("#graph .node").length) console.error("neurontrace view: node count mismatch");
        })();
        """;
}
