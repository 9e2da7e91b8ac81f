using System.Text.Json;
using NeuronTrace.Model;
using static NeuronTrace.Tracing.Runs.JsonFields;
using NeuronTrace.Tracing.Tasks;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Runs;

/// <summary>One node of a saved circuit (position counted from the end of the prompt, 0 = last token).</summary>
public sealed record CircuitNode(NodeId Node, float Score);

/// <summary>A circuit file of a run folder: <c>circuits/{method}_{site}.json</c>, nodes in ranking order (largest |score| first).</summary>
public sealed record SavedCircuit(string Method, NodeSite Site, int TotalNodes, double? Faithfulness, double? Completeness, IReadOnlyList<CircuitNode> Nodes)
{
    /// <summary>The circuit file (errors about its nodes name it).</summary>
    public string Path { get; init; } = "";

    static string Describe(int i, NodeId n) => $"nodes[{i}] ({n})";

    /// <summary>
    /// Checks that every node fits <paramref name="config"/> (layer, unit) and, when given, prompts of at most
    /// <paramref name="promptTokens"/> tokens (position from the end); a node that does not is an error naming the circuit
    /// file and the node, never a node silently skipped.
    /// </summary>
    public void CheckFits(LlamaConfig config, string modelPath, int? promptTokens = null, string? promptSource = null)
    {
        int width = Site.Width(config);
        for (int i = 0; i < Nodes.Count; i++)
        {
            var n = Nodes[i].Node;
            if (n.Layer >= config.Layers)
                throw new ModelFormatException(Path, $"{Describe(i, n)}: layer {n.Layer} is outside the {config.Layers} layers of the model {modelPath}");
            if (n.Index >= width)
                throw new ModelFormatException(Path, $"{Describe(i, n)}: index {n.Index} is outside the {width} {Site.Name()} units of the model {modelPath}");
            if (n.Position >= config.MaxSeqLen)
                throw new ModelFormatException(Path, $"{Describe(i, n)}: position {n.Position} is past the {config.MaxSeqLen}-token context of the model {modelPath}");
            if (promptTokens is { } len && n.Position >= len)
                throw new ModelFormatException(Path, $"{Describe(i, n)}: position {n.Position} from the end is past the longest prompt ({len} tokens) of {promptSource ?? "the task"}");
        }
    }
}

/// <summary>One row of <c>sweep.csv</c>.</summary>
internal sealed record SweepRow(string Site, string Method, int K, double Faithfulness, double Completeness,
    double RandomFaithfulness, double RandomCompleteness, int TotalNodes);

/// <summary>
/// The node grid of a method's scores (<c>scores/{method}/scores.json</c>): positions from the end, and per site the
/// layer count and width. Circuit nodes are checked against it.
/// </summary>
internal sealed record ScoreGrid(string Path, int Positions, IReadOnlyDictionary<NodeSite, (int Layers, int Width)> Sites);

/// <summary>
/// Reads a trace run folder (the files <c>TraceReport.Write</c> writes) and validates what it reads: every type, shape
/// or range problem in summary.json, sweep.csv, circuits/*.json or scores/*/scores.json is a one-line
/// <see cref="ModelFormatException"/> naming the file and the field or node.
/// </summary>
internal sealed class RunFolder
{
    const string SummaryFormat = RunFormat.TraceId;
    const string CircuitFormat = RunFormat.CircuitId;
    const string ScoresFormat = RunFormat.ScoresId;

    RunFolder(string dir, string? task, string? model, int? train, int[]? evalLines, IReadOnlyList<SweepRow> sweep, IReadOnlyList<(string Method, string Site)> circuits)
    {
        Dir = dir; TaskPath = task; ModelPath = model; TrainExamples = train; EvalLines = evalLines; Sweep = sweep; Circuits = circuits;
    }

    public string Dir { get; }
    public string SummaryPath => RunFormat.SummaryPath(Dir);
    /// <summary>The task file the run recorded in summary.json (may be a path on another machine).</summary>
    public string? TaskPath { get; }
    /// <summary>The model the run recorded in summary.json (may be a path on another machine).</summary>
    public string? ModelPath { get; }
    /// <summary>How many leading task lines the run attributed on (the rest evaluated the circuits), when recorded.</summary>
    public int? TrainExamples { get; }
    /// <summary>File line numbers of the run's evaluation examples (the run may have kept only some lines of its task).</summary>
    public int[]? EvalLines { get; }
    public IReadOnlyList<SweepRow> Sweep { get; }
    /// <summary>The circuit files present, as (method, site) in summary order (then file order).</summary>
    public IReadOnlyList<(string Method, string Site)> Circuits { get; }

    /// <summary>
    /// The model to load: <paramref name="option"/> (the command's --model) when given, else the model the run recorded.
    /// A recorded model that is not here is an error (no silent fallback to the bundled model); null: none recorded.
    /// </summary>
    public string? ModelToLoad(string? option)
    {
        if (option is not null) return option;
        if (ModelPath is null) return null;
        if (File.Exists(ModelPath) || Directory.Exists(ModelPath)) return ModelPath;
        throw new ModelFormatException(SummaryPath, $"the run's model {ModelPath} is not here; pass --model with the model the run was traced on");
    }

    /// <summary>
    /// The run's held-out examples of <paramref name="task"/> (loaded from <paramref name="taskPath"/>): its recorded
    /// evaluation lines, else the lines after the training ones. Recorded lines the task does not have, or a training
    /// count that leaves no evaluation examples, are errors.
    /// </summary>
    public PromptTask HeldOut(PromptTask task, string taskPath)
    {
        if (TrainExamples is { } train && train >= task.Count)
            throw new ModelFormatException(SummaryPath, $"field train_examples: {train} training lines leave no evaluation examples in the {task.Count}-example task {taskPath}");
        if (EvalLines is { } lines)
        {
            var have = task.Pairs.Select(p => p.Line).ToHashSet();
            foreach (int line in lines)
                if (!have.Contains(line))
                    throw new ModelFormatException(SummaryPath, $"field eval_lines: line {line} is not an example line of the task {taskPath}");
            var set = lines.ToHashSet();
            return new PromptTask(task.Name + ":eval", task.Pairs.Where(p => set.Contains(p.Line)).ToList());
        }
        if (TrainExamples is { } t) return new PromptTask(task.Name + ":eval", task.Pairs.Skip(t).ToList());
        throw new ModelFormatException(SummaryPath, "records neither eval_lines nor train_examples, so the run's held-out examples are unknown; pass --task to use a whole task");
    }

    public static RunFolder Open(string dir)
    {
        if (!Directory.Exists(dir)) throw new ModelFormatException(dir, "run folder not found");
        string summaryPath = RunFormat.SummaryPath(dir);
        if (!File.Exists(summaryPath)) throw new ModelFormatException(dir, "not a run folder (no summary.json)");
        var root = ReadObject(summaryPath);
        string p = summaryPath;
        if (OptionalString(p, root, "format") is { } format && format != SummaryFormat)
            throw new ModelFormatException(p, $"field format: {ErrorText.Quote(format)} is not {SummaryFormat}");
        string? task = OptionalString(p, root, "task");
        string? model = OptionalString(p, root, "model");
        int? train = OptionalInt(p, root, "train_examples", min: 1);
        int? evalCount = OptionalInt(p, root, "eval_examples", min: 1);
        int[]? trainLines = OptionalIntArray(p, root, "train_lines", min: 1);
        int[]? evalLines = OptionalIntArray(p, root, "eval_lines", min: 1);
        if (evalLines is { Length: 0 }) throw new ModelFormatException(p, "field eval_lines is empty (a run evaluates on at least one line)");
        if (evalLines is not null)
        {
            if (evalLines.Distinct().Count() != evalLines.Length) throw new ModelFormatException(p, "field eval_lines: a line is listed twice");
            if (evalCount is { } ec && ec != evalLines.Length)
                throw new ModelFormatException(p, $"field eval_examples is {ec} but eval_lines lists {evalLines.Length} lines");
            if (trainLines?.Intersect(evalLines).FirstOrDefault() is { } both and > 0)
                throw new ModelFormatException(p, $"line {both} is in both train_lines and eval_lines");
        }
        if (trainLines is not null && train is { } tr && tr != trainLines.Length)
            throw new ModelFormatException(p, $"field train_examples is {tr} but train_lines lists {trainLines.Length} lines");

        var circuits = new List<(string, string)>();
        if (OptionalArray(p, root, "circuits") is { } cs)
        {
            int i = 0;
            foreach (var c in cs.EnumerateArray())
            {
                string at = $"circuits[{i++}].";
                RequireObject(p, c, at.TrimEnd('.'));
                string m = RequireString(p, c, "method", at), s = RequireString(p, c, "site", at);
                if (!NodeSites.TryParse(s, out _)) throw new ModelFormatException(p, $"field {at}site: unknown site {ErrorText.Quote(s)}");
                circuits.Add((m, s));
            }
        }
        string circuitDir = Path.Combine(dir, RunFormat.CircuitsFolder);
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
        string sweepPath = RunFormat.SweepPath(dir);
        var sweep = File.Exists(sweepPath) ? ReadSweep(sweepPath) : [];
        return new RunFolder(dir, task, model, train, evalLines, sweep, circuits);
    }

    static string CircuitPath(string dir, string method, string site) => RunFormat.CircuitPath(dir, method, site);

    /// <summary>The node grid of a method's saved scores, or null when the run folder has none for it.</summary>
    public ScoreGrid? ReadScoreGrid(string method)
    {
        string path = Path.Combine(RunFormat.ScoresPath(Dir, method), RunFormat.ScoresIndexFile);
        if (!File.Exists(path)) return null;
        var root = ReadObject(path);
        if (OptionalString(path, root, "format") is { } format && format != ScoresFormat)
            throw new ModelFormatException(path, $"field format: {ErrorText.Quote(format)} is not {ScoresFormat}");
        int positions = RequireInt(path, root, "positions", min: 1);
        var layers = new Dictionary<NodeSite, (HashSet<int> Layers, int Width)>();
        int i = 0;
        foreach (var a in RequireArray(path, root, "arrays").EnumerateArray())
        {
            string at = $"arrays[{i++}].";
            RequireObject(path, a, at.TrimEnd('.'));
            string s = RequireString(path, a, "site", at);
            if (!NodeSites.TryParse(s, out var site)) throw new ModelFormatException(path, $"field {at}site: unknown site {ErrorText.Quote(s)}");
            int layer = RequireInt(path, a, "layer", min: 0, prefix: at);
            var shape = RequireArray(path, a, "shape", at);
            if (shape.GetArrayLength() != 2) throw new ModelFormatException(path, $"field {at}shape: expected [positions, width]");
            int rows = Int(path, shape[0], at + "shape[0]", min: 1), width = Int(path, shape[1], at + "shape[1]", min: 1);
            if (rows != positions) throw new ModelFormatException(path, $"field {at}shape: {rows} positions, but positions is {positions}");
            if (!layers.TryGetValue(site, out var entry)) layers[site] = entry = ([], width);
            if (entry.Width != width) throw new ModelFormatException(path, $"field {at}shape: width {width}, but {s} has width {entry.Width} in another layer");
            if (!entry.Layers.Add(layer)) throw new ModelFormatException(path, $"field {at}layer: {s} layer {layer} is listed twice");
        }
        var sites = new Dictionary<NodeSite, (int, int)>();
        foreach (var (site, (set, width)) in layers)
        {
            if (set.Max() + 1 != set.Count) throw new ModelFormatException(path, $"{site.Name()} has layers up to {set.Max()} but only {set.Count} arrays");
            sites[site] = (set.Count, width);
        }
        return new ScoreGrid(path, positions, sites);
    }

    /// <summary>
    /// The circuit of a method and site; nulls pick the first listed method, and mlp_act (else the first site). Every
    /// node is checked: its site is the file's, and layer, position and index are inside the run's score grid (when
    /// the run folder has scores/{method}/scores.json) and not negative.
    /// </summary>
    public SavedCircuit ReadCircuit(string? method = null, string? site = null)
    {
        if (Circuits.Count == 0) throw new ModelFormatException(Dir, "the run folder has no circuits/*.json");
        method ??= Circuits[0].Method;
        site ??= Circuits.Any(c => c.Method == method && c.Site == "mlp_act") ? "mlp_act" : Circuits.FirstOrDefault(c => c.Method == method).Site;
        string path = CircuitPath(Dir, method, site ?? "mlp_act");
        if (!File.Exists(path))
            throw new ModelFormatException(Dir, $"no circuit for method {ErrorText.Quote(method)} and site {ErrorText.Quote(site)} (present: {string.Join(", ", Circuits.Select(c => c.Method + "_" + c.Site))})");
        if (!NodeSites.TryParse(site!, out var fileSite)) throw new ModelFormatException(path, $"the file name names an unknown site {ErrorText.Quote(site)}");

        var root = ReadObject(path);
        if (OptionalString(path, root, "format") is { } format && format != CircuitFormat)
            throw new ModelFormatException(path, $"field format: {ErrorText.Quote(format)} is not {CircuitFormat}");
        string rootSite = RequireString(path, root, "site");
        if (rootSite != fileSite.Name()) throw new ModelFormatException(path, $"field site: {ErrorText.Quote(rootSite)} does not match the file name (site {fileSite.Name()})");
        string rootMethod = RequireString(path, root, "method");
        if (rootMethod != method) throw new ModelFormatException(path, $"field method: {ErrorText.Quote(rootMethod)} does not match the file name (method {method})");

        var grid = ReadScoreGrid(method);
        (int Layers, int Width)? shape = grid is not null && grid.Sites.TryGetValue(fileSite, out var sh) ? sh : null;
        var nodes = new List<CircuitNode>();
        var seen = new HashSet<NodeId>();
        int i = 0;
        foreach (var n in RequireArray(path, root, "nodes").EnumerateArray())
        {
            string at = $"nodes[{i}]";
            RequireObject(path, n, at);
            string ns = RequireString(path, n, "site", at + ".");
            if (ns != fileSite.Name()) throw new ModelFormatException(path, $"{at}: site {ErrorText.Quote(ns)} in a {fileSite.Name()} circuit");
            int layer = RequireInt(path, n, "layer", prefix: at + ".");
            int position = RequireInt(path, n, "position", prefix: at + ".");
            int index = RequireInt(path, n, "index", prefix: at + ".");
            var id = new NodeId(fileSite, layer, position, index);
            string node = $"{at} ({id})";
            if (layer < 0) throw new ModelFormatException(path, $"{node}: layer {layer} is negative");
            if (index < 0) throw new ModelFormatException(path, $"{node}: index {index} is negative");
            if (position < 0) throw new ModelFormatException(path, $"{node}: position {position} is negative");
            if (shape is { } sh1 && layer >= sh1.Layers)
                throw new ModelFormatException(path, $"{node}: layer {layer} is outside the run's {sh1.Layers} layers (per {grid!.Path})");
            if (shape is { } sh2 && index >= sh2.Width)
                throw new ModelFormatException(path, $"{node}: index {index} is outside the {sh2.Width} {fileSite.Name()} units (per {grid!.Path})");
            if (grid is not null && position >= grid.Positions)
                throw new ModelFormatException(path, $"{node}: position {position} is past the {grid.Positions} prompt positions of the run's scores (per {grid.Path})");
            float score = (float)Number(path, Need(n, "score", path, at), at + ".score");
            if (!seen.Add(id)) throw new ModelFormatException(path, $"{node}: the node is listed twice");
            nodes.Add(new CircuitNode(id, score));
            i++;
        }
        int total = OptionalInt(path, root, "total_nodes", min: 1) ?? Math.Max(1, nodes.Count);
        if (total < nodes.Count) throw new ModelFormatException(path, $"field total_nodes: {total} is less than the {nodes.Count} nodes listed");
        if (shape is { } g && grid is not null && (long)g.Layers * grid.Positions * g.Width != total)
            throw new ModelFormatException(path, $"field total_nodes: {total}, but the run's {fileSite.Name()} scores have {(long)g.Layers * grid.Positions * g.Width} nodes (per {grid.Path})");
        if (OptionalInt(path, root, "k") is { } k && k != nodes.Count)
            throw new ModelFormatException(path, $"field k: {k}, but {nodes.Count} nodes are listed");
        return new SavedCircuit(rootMethod, fileSite, total, OptionalNumber(path, root, "faithfulness"), OptionalNumber(path, root, "completeness"), nodes) { Path = path };

        static JsonElement Need(JsonElement o, string name, string path, string at) =>
            Get(o, name) ?? throw new ModelFormatException(path, $"field {at}.{name} is missing");
    }

    static List<SweepRow> ReadSweep(string path)
    {
        var rows = new List<SweepRow>();
        var table = Csv.Read(path);
        if (table.Header.Length == 0) return rows;
        int site = table.Column("site"), method = table.Column("method"), k = table.Column("k"), f = table.Column("faithfulness"),
            c = table.Column("completeness"), rf = table.Column("random_faithfulness"), rc = table.Column("random_completeness"),
            total = table.Column("total_nodes");
        foreach (var (line, p) in table.Rows)
        {
            string At(int j) => table.Where(line, j);
            if (!NodeSites.TryParse(p[site], out _)) throw new ModelFormatException(path, $"{At(site)}: unknown site {ErrorText.Quote(p[site])}");
            if (p[method].Length == 0) throw new ModelFormatException(path, $"{At(method)}: empty");
            int totalNodes = JsonFields.CsvInt(path, At(total), p[total], min: 1);
            int kk = JsonFields.CsvInt(path, At(k), p[k], min: 0, max: totalNodes);
            double D(int j) => JsonFields.CsvDouble(path, At(j), p[j]);
            rows.Add(new SweepRow(p[site], p[method], kk, D(f), D(c), D(rf), D(rc), totalNodes));
        }
        return rows;
    }
}
