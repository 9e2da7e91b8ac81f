using NeuronTrace.Attribution.Tasks;
using System.Globalization;
using System.Text.Json;
using NeuronTrace.Model;

namespace NeuronTrace.Attribution.Reports;

/// <summary>One node of a saved circuit (position counted from the end of the prompt, 0 = last token).</summary>
public sealed record CircuitNode(NodeId Node, float Score);

/// <summary>A circuit file of a run folder: <c>circuits/{method}_{site}.json</c>, nodes in ranking order (largest |score| first).</summary>
public sealed record SavedCircuit(string Method, NodeSite Site, int TotalNodes, double? Faithfulness, double? Completeness, IReadOnlyList<CircuitNode> Nodes);

/// <summary>One row of <c>sweep.csv</c>.</summary>
public sealed record SweepRow(string Site, string Method, int K, double Faithfulness, double Completeness,
    double RandomFaithfulness, double RandomCompleteness, int TotalNodes);

/// <summary>Reads a trace run folder (the files <c>TraceReport.Write</c> writes). Errors name the file.</summary>
public sealed class RunFolder
{
    RunFolder(string dir, string? task, string? model, int? train, IReadOnlyList<SweepRow> sweep, IReadOnlyList<(string Method, string Site)> circuits)
    {
        Dir = dir; TaskPath = task; ModelPath = model; TrainExamples = train; Sweep = sweep; Circuits = circuits;
    }

    public string Dir { get; }
    /// <summary>The task file the run recorded in summary.json (may be a path on another machine).</summary>
    public string? TaskPath { get; }
    public string? ModelPath { get; }
    /// <summary>How many leading task lines the run attributed on (the rest evaluated the circuits), when recorded.</summary>
    public int? TrainExamples { get; }
    /// <summary>File line numbers of the run's evaluation examples (the run may have kept only some lines of its task).</summary>
    public int[]? EvalLines { get; init; }

    /// <summary>The run's held-out examples of <paramref name="task"/>: its recorded evaluation lines, else the lines after the training ones.</summary>
    public PromptTask HeldOut(PromptTask task)
    {
        if (EvalLines is { Length: > 0 } lines)
        {
            var set = lines.ToHashSet();
            var kept = task.Pairs.Where(p => set.Contains(p.Line)).ToList();
            if (kept.Count == 0) throw new ModelFormatException(Dir, "none of the run's evaluation lines are in the task file");
            return new PromptTask(task.Name + ":eval", kept);
        }
        int train = TrainExamples ?? (task.Count + 1) / 2;
        if (train >= task.Count) throw new ModelFormatException(Dir, $"the task has no evaluation examples after the run's {train} training lines");
        return new PromptTask(task.Name + ":eval", task.Pairs.Skip(train).ToList());
    }
    public IReadOnlyList<SweepRow> Sweep { get; }
    /// <summary>The circuit files present, as (method, site) in summary order (then file order).</summary>
    public IReadOnlyList<(string Method, string Site)> Circuits { get; }

    public static RunFolder Open(string dir)
    {
        if (!Directory.Exists(dir)) throw new ModelFormatException(dir, "run folder not found");
        string summaryPath = Path.Combine(dir, "summary.json");
        if (!File.Exists(summaryPath)) throw new ModelFormatException(dir, "not a run folder (no summary.json)");
        string? task = null, model = null;
        int? train = null;
        int[]? evalLines = null;
        var circuits = new List<(string, string)>();
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(summaryPath));
            var root = doc.RootElement;
            if (root.TryGetProperty("task", out var t) && t.ValueKind == JsonValueKind.String) task = t.GetString();
            if (root.TryGetProperty("model", out var m) && m.ValueKind == JsonValueKind.String) model = m.GetString();
            if (root.TryGetProperty("train_examples", out var te) && te.ValueKind == JsonValueKind.Number) train = te.GetInt32();
            if (root.TryGetProperty("eval_lines", out var el) && el.ValueKind == JsonValueKind.Array)
                evalLines = el.EnumerateArray().Select(x => x.GetInt32()).ToArray();
            if (root.TryGetProperty("circuits", out var cs) && cs.ValueKind == JsonValueKind.Array)
                foreach (var c in cs.EnumerateArray())
                    if (c.TryGetProperty("method", out var cm) && c.TryGetProperty("site", out var csite))
                        circuits.Add((cm.GetString()!, csite.GetString()!));
        }
        catch (JsonException e) { throw new ModelFormatException(summaryPath, "malformed JSON: " + e.Message.Split('\n')[0]); }
        string circuitDir = Path.Combine(dir, "circuits");
        if (Directory.Exists(circuitDir))
            foreach (var f in Directory.GetFiles(circuitDir, "*.json").Order(StringComparer.Ordinal))
            {
                string name = Path.GetFileNameWithoutExtension(f);
                int us = name.IndexOf('_');
                if (us <= 0) continue;
                var key = (name[..us], name[(us + 1)..]);
                if (!circuits.Contains(key)) circuits.Add(key);
            }
        circuits.RemoveAll(c => !File.Exists(CircuitPath(dir, c.Item1, c.Item2)));
        string sweepPath = Path.Combine(dir, "sweep.csv");
        var sweep = File.Exists(sweepPath) ? ReadSweep(sweepPath) : [];
        return new RunFolder(dir, task, model, train, sweep, circuits) { EvalLines = evalLines };
    }

    static string CircuitPath(string dir, string method, string site) => Path.Combine(dir, "circuits", $"{method}_{site}.json");

    /// <summary>The circuit of a method and site; nulls pick the first listed method, and mlp_act (else the first site).</summary>
    public SavedCircuit ReadCircuit(string? method = null, string? site = null)
    {
        if (Circuits.Count == 0) throw new ModelFormatException(Dir, "the run folder has no circuits/*.json");
        method ??= Circuits[0].Method;
        site ??= Circuits.Any(c => c.Method == method && c.Site == "mlp_act") ? "mlp_act" : Circuits.FirstOrDefault(c => c.Method == method).Site;
        string path = CircuitPath(Dir, method, site ?? "mlp_act");
        if (!File.Exists(path))
            throw new ModelFormatException(Dir, $"no circuit for method \"{method}\" and site \"{site}\" (present: {string.Join(", ", Circuits.Select(c => c.Method + "_" + c.Site))})");
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            var root = doc.RootElement;
            if (!NodeSites.TryParse(root.GetProperty("site").GetString() ?? "", out var s)) throw new ModelFormatException(path, "unknown site");
            var nodes = new List<CircuitNode>();
            foreach (var n in root.GetProperty("nodes").EnumerateArray())
            {
                if (!NodeSites.TryParse(n.GetProperty("site").GetString() ?? "", out var ns)) throw new ModelFormatException(path, "unknown node site");
                nodes.Add(new CircuitNode(new NodeId(ns, n.GetProperty("layer").GetInt32(), n.GetProperty("position").GetInt32(), n.GetProperty("index").GetInt32()),
                    n.GetProperty("score").GetSingle()));
            }
            return new SavedCircuit(root.GetProperty("method").GetString() ?? method, s,
                root.TryGetProperty("total_nodes", out var tn) ? tn.GetInt32() : nodes.Count,
                Num(root, "faithfulness"), Num(root, "completeness"), nodes);
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new ModelFormatException(path, "malformed circuit file: " + e.Message.Split('\n')[0]);
        }

        static double? Num(JsonElement e, string key) => e.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
    }

    static List<SweepRow> ReadSweep(string path)
    {
        var rows = new List<SweepRow>();
        var lines = File.ReadAllLines(path);
        if (lines.Length == 0) return rows;
        var header = lines[0].Split(',');
        int Col(string name) => Array.IndexOf(header, name) is var i && i >= 0 ? i : throw new ModelFormatException(path, $"no column \"{name}\"");
        int site = Col("site"), method = Col("method"), k = Col("k"), f = Col("faithfulness"), c = Col("completeness"),
            rf = Col("random_faithfulness"), rc = Col("random_completeness"), total = Col("total_nodes");
        for (int i = 1; i < lines.Length; i++)
        {
            if (string.IsNullOrWhiteSpace(lines[i])) continue;
            var p = lines[i].Split(',');
            if (p.Length < header.Length) throw new ModelFormatException(path, $"line {i + 1}: {p.Length} columns, expected {header.Length}");
            double D(int j) => double.Parse(p[j], NumberStyles.Float, CultureInfo.InvariantCulture);
            rows.Add(new SweepRow(p[site], p[method], int.Parse(p[k], CultureInfo.InvariantCulture), D(f), D(c), D(rf), D(rc),
                int.Parse(p[total], CultureInfo.InvariantCulture)));
        }
        return rows;
    }
}
