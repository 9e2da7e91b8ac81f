namespace NeuronTrace.Tracing.Runs;

/// <summary>
/// The run folder's layout, spelled once: format ids (with their versions), file names and CSV columns. The writers
/// (<see cref="TraceReport"/>, <see cref="ScoresFolder"/>, the edge CSV) and the reader (<see cref="RunFolder"/>) both
/// use these names; docs/run-folder.md describes each file.
/// </summary>
internal static class RunFormat
{
    /// <summary>summary.json of a trace run folder.</summary>
    public const string TraceId = "neurontrace-trace/1";
    /// <summary>circuits/{method}_{site}.json.</summary>
    public const string CircuitId = "neurontrace-circuit/1";
    /// <summary>scores.json, the index of a scores folder (scores/{method}/ of a run, or attribute's output).</summary>
    public const string ScoresId = "neurontrace-scores/1";

    public const string SummaryFile = "summary.json";
    public const string SweepFile = "sweep.csv";
    public const string CircuitsFolder = "circuits";
    public const string ScoresFolderName = "scores";
    public const string ScoresIndexFile = "scores.json";
    public const string ScoresRawFile = "scores.f32";
    public const string ScoresSafetensorsFile = "scores.safetensors";
    public const string ScoresCsvFile = "scores.csv";
    public const string EdgesFile = "edges.csv";
    public const string EdgeSweepFile = "edge_sweep.csv";
    public const string ViewFile = "view.html";
    public const string GraphFile = "graph.json";

    /// <summary>
    /// The node columns every CSV uses for a node (scores.csv; edges.csv prefixes them with source_/target_):
    /// <c>node</c> is the <see cref="Model.NodeId"/> spelling, the rest its parts (position counted from the end).
    /// </summary>
    public static readonly string[] NodeColumns = ["node", "site", "layer", "position", "index"];

    public static readonly string[] ScoresColumns = [.. NodeColumns, "score"];

    public static readonly string[] SweepColumns =
        ["site", "method", "k", "faithfulness", "completeness", "random_faithfulness", "random_completeness", "threshold", "total_nodes"];

    public static readonly string[] EdgesColumns =
        [.. NodeColumns.Select(c => "source_" + c), .. NodeColumns.Select(c => "target_" + c), "weight", "final_attr", "examples"];

    public static string SummaryPath(string dir) => Path.Combine(dir, SummaryFile);
    public static string SweepPath(string dir) => Path.Combine(dir, SweepFile);
    public static string CircuitFileName(string method, string site) => $"{method}_{site}.json";
    public static string CircuitPath(string dir, string method, string site) => Path.Combine(dir, CircuitsFolder, CircuitFileName(method, site));
    public static string ScoresPath(string dir, string method) => Path.Combine(dir, ScoresFolderName, method);
}
