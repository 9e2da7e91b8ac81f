using NeuronTrace.Runtime;
using NeuronTrace.Formats;
using System.Security.Cryptography;
using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Runs;

namespace NeuronTrace.Tracing.Sharding;

/// <summary>
/// <c>shard.json</c>: what a shard computed (model and task by SHA-256, the options that change results), which slice
/// of the work items it covers and how far it got. Written last, atomically: it is the commit point of a checkpoint.
/// Shards merge only when every identity field agrees (<see cref="Disagreement"/>).
/// </summary>
internal sealed class ShardManifest
{
    public const string FormatName = "neurontrace-shard/1";
    public const string FileName = "shard.json";
    public const string AttributionKind = "attribution";
    public const string SweepKind = "sweep";

    public string Format { get; set; } = FormatName;
    /// <summary><see cref="AttributionKind"/> (items are examples) or <see cref="SweepKind"/> (items are circuits).</summary>
    public string Kind { get; set; } = AttributionKind;
    /// <summary>The command that ran the shard: <c>attribute</c> or <c>trace</c>.</summary>
    public string Command { get; set; } = "";
    public string ModelPath { get; set; } = "";
    public string ModelSha256 { get; set; } = "";
    public string TaskPath { get; set; } = "";
    public string TaskSha256 { get; set; } = "";
    /// <summary>Every option that changes the result, as text (not batch sizes, which change only rounding).</summary>
    public SortedDictionary<string, string> Options { get; set; } = new(StringComparer.Ordinal);
    public int ShardIndex { get; set; }
    public int ShardCount { get; set; } = 1;
    /// <summary>Work items of the whole run (examples or circuits); the shard covers [First, End).</summary>
    public int Total { get; set; }
    public int First { get; set; }
    public int End { get; set; }
    /// <summary>Items done so far (from First); equal to End − First when <see cref="Complete"/>.</summary>
    public int Done { get; set; }
    public bool Complete { get; set; }
    /// <summary>Examples per checkpoint; a resumed shard keeps its own so the sums add in the same order.</summary>
    public int CheckpointItems { get; set; }
    /// <summary>How many shards a merged result was made from (0 for a shard itself).</summary>
    public int MergedFrom { get; set; }

    // Attribution: the layout of the fp64 sums file.
    public LlamaConfig? ModelConfig { get; set; }
    public string[] Methods { get; set; } = [];
    public string[] Sites { get; set; } = [];
    public int Positions { get; set; }
    /// <summary>Examples covered at each position from the end (the divisors of the sums).</summary>
    public long[] Counts { get; set; } = [];
    public string? SumsFile { get; set; }

    // Sweep: the merged attribution it ranked and the clean metric of the evaluation examples.
    public string? ScoresDir { get; set; }
    public string? ScoresSha256 { get; set; }
    public double? CleanMetric { get; set; }

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public string Describe(string dir) => $"{dir} (shard {ShardIndex}/{ShardCount})";

    /// <summary>The first identity field in which two shards differ, as "field: a vs b", or null when they may merge.</summary>
    public string? Disagreement(ShardManifest o)
    {
        // Only the options that differ, so the one that matters is not shortened away behind the ones that agree.
        var differing = Options.Keys.Union(o.Options.Keys).Where(k => Options.GetValueOrDefault(k) != o.Options.GetValueOrDefault(k)).Order(StringComparer.Ordinal).ToList();
        string Opts(SortedDictionary<string, string> d) => string.Join(" ", differing.Select(k => $"{k}={d.GetValueOrDefault(k) ?? "(absent)"}"));
        (string Field, string A, string B)[] fields =
        [
            ("kind", Kind, o.Kind), ("command", Command, o.Command), ("model sha256", ModelSha256, o.ModelSha256),
            ("task sha256", TaskSha256, o.TaskSha256), ("options", Opts(Options), Opts(o.Options)),
            ("shard count", ShardCount.ToString(), o.ShardCount.ToString()), ("work items", Total.ToString(), o.Total.ToString()),
            ("methods", string.Join(",", Methods), string.Join(",", o.Methods)), ("sites", string.Join(",", Sites), string.Join(",", o.Sites)),
            ("positions", Positions.ToString(), o.Positions.ToString()), ("scores sha256", ScoresSha256 ?? "", o.ScoresSha256 ?? ""),
        ];
        foreach (var (f, a, b) in fields)
            if (a != b) return $"{f}: {ErrorText.Name(a)} vs {ErrorText.Name(b)}";
        return null;
    }

    public void Write(string dir) => OutputFiles.WriteText(Path.Combine(dir, FileName), JsonSerializer.Serialize(this, Json));

    /// <summary>The manifest in <paramref name="dir"/>, or null when there is none; a bad one is refused in one line.</summary>
    public static ShardManifest? TryRead(string dir)
    {
        string path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) return null;
        ShardManifest? m;
        try { m = JsonSerializer.Deserialize<ShardManifest>(File.ReadAllText(path), Json); }
        catch (JsonException e) { throw new FormatException($"{path}: not a shard manifest ({e.Message.Split('\n')[0]})"); }
        if (m is null || m.Format != FormatName) throw new FormatException($"{path}: not a {FormatName} manifest");
        if (m.ShardCount < 1 || m.ShardIndex < 0 || m.ShardIndex >= m.ShardCount || m.First < 0 || m.End < m.First || m.End > m.Total
            || m.Done < 0 || m.Done > m.End - m.First)
            throw new FormatException($"{path}: inconsistent shard fields (shard {m.ShardIndex}/{m.ShardCount}, items {m.First}..{m.End} of {m.Total}, done {m.Done})");
        return m;
    }

    public static ShardManifest Read(string dir) =>
        TryRead(dir) ?? throw new FileNotFoundException($"{dir}: no {FileName} (not a shard folder, or the shard has not checkpointed yet)");

    /// <summary>SHA-256 of a file, or of a folder's files (relative names and contents, in ordinal name order), in hex.</summary>
    public static string Sha256Of(string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        if (Directory.Exists(path))
        {
            foreach (var f in Directory.GetFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            {
                sha.AppendData(System.Text.Encoding.UTF8.GetBytes(Path.GetRelativePath(path, f) + "\0"));
                AppendFile(sha, f);
            }
        }
        else AppendFile(sha, path);
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    static void AppendFile(IncrementalHash sha, string file)
    {
        using var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        var buffer = new byte[1 << 20];
        int n;
        while ((n = fs.Read(buffer)) > 0) sha.AppendData(buffer.AsSpan(0, n));
    }
}
