using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Runs;

/// <summary>What a run ran on and how, beside its <see cref="TraceOptions"/>: recorded in summary.json so the run can be reproduced.</summary>
internal sealed record RunProvenance(string Device, string Precision, bool AllLengths, string ToolVersion);

/// <summary>
/// Writes a trace run folder: <c>sweep.csv</c>, <c>summary.json</c>, <c>circuits/{method}_{site}.json</c> and
/// <c>scores/{method}/</c> (names: <see cref="RunFormat"/>; files: docs/run-folder.md). <see cref="RunFolder"/> reads them.
/// </summary>
internal static class TraceReport
{
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public static void Write(string dir, TraceResult r, LoadedModel model, string taskPath, TraceOptions? options = null, RunProvenance? provenance = null)
    {
        Directory.CreateDirectory(dir);
        string attributionMetric = Metric.AttributionDefault(r.Train).Name;
        foreach (var (method, scores) in r.Scores)
            scores.Save(RunFormat.ScoresPath(dir, method.Name()), method.Name(), attributionMetric, r.Train.Count);

        OutputFiles.WriteText(RunFormat.SweepPath(dir), SweepCsv(r.Sweep));

        Directory.CreateDirectory(Path.Combine(dir, RunFormat.CircuitsFolder));
        foreach (var c in r.Circuits)
        {
            var doc = new
            {
                format = RunFormat.CircuitId,
                site = c.Site.Name(),
                method = c.Method.Name(),
                k = c.Nodes.Count,
                total_nodes = c.TotalNodes,
                faithfulness = c.AtTarget?.Faithfulness,
                completeness = c.AtTarget?.Completeness,
                threshold = c.AtTarget?.Threshold,
                position_convention = "position 0 is the last prompt token",
                nodes = c.Nodes.Select(n => new { id = n.Node.ToString(), site = n.Node.Site.Name(), layer = n.Node.Layer, position = n.Node.Position, index = n.Node.Index, score = n.Score }),
            };
            OutputFiles.WriteText(RunFormat.CircuitPath(dir, c.Method.Name(), c.Site.Name()), JsonSerializer.Serialize(doc, Json));
        }

        var summary = new
        {
            format = RunFormat.TraceId,
            model = model.Path,
            model_format = model.Format,
            model_sha256 = Sha256(model.Path),
            task = taskPath,
            task_sha256 = Sha256(taskPath),
            tool_version = provenance?.ToolVersion,
            device = provenance?.Device,
            precision = provenance?.Precision,
            // Every option that changes a number (trace --from-summary reads these back).
            options = options is { } o ? new
            {
                methods = o.Methods.Select(m => m.Name()),
                sites = o.Sites.Select(s => s.Name()),
                train = o.TrainExamples,
                k_points = o.KPoints,
                ig_steps = o.IgSteps,
                // null for a rule set that is neither RelP variant (a library caller's own), which --from-summary refuses.
                relp_attention = o.RelPRules.RelPAttentionName,
                masks_per_forward = o.MasksPerForward,
                sweep_path = o.SweepPath.Name(),
                seed = o.Seed,
                target = o.TargetFaithfulness,
                all_lengths = provenance?.AllLengths,
            } : null,
            train_examples = r.Train.Count,
            eval_examples = r.Eval.Count,
            train_lines = r.Train.Pairs.Select(p => p.Line),
            eval_lines = r.Eval.Pairs.Select(p => p.Line),
            attribution_metric = attributionMetric,
            eval_metric = Metric.EvaluationDefault(r.Eval).Name + ", mean over evaluation examples",
            clean_metric = r.CleanMetric,
            ablation = "mean over the evaluation patch prompts, per layer and position from the end",
            seconds = r.Elapsed.TotalSeconds,
            circuits = r.Circuits.Select(c => new
            {
                site = c.Site.Name(), method = c.Method.Name(), total_nodes = c.TotalNodes,
                k_for_target = c.AtTarget?.K, fraction = c.AtTarget is { } p ? (double)p.K / c.TotalNodes : (double?)null,
                faithfulness = c.AtTarget?.Faithfulness, completeness = c.AtTarget?.Completeness,
                random_faithfulness = c.AtTarget?.RandomFaithfulness,
            }),
        };
        OutputFiles.WriteText(RunFormat.SummaryPath(dir), JsonSerializer.Serialize(summary, Json));
    }

    public static string SweepCsv(IEnumerable<SweepPoint> points)
    {
        var sb = new StringBuilder(Csv.Line(RunFormat.SweepColumns));
        foreach (var p in points)
            sb.Append(Csv.Line([p.Site.Name(), p.Method, Csv.I(p.K), Csv.D(p.Faithfulness), Csv.D(p.Completeness),
                Csv.D(p.RandomFaithfulness), Csv.D(p.RandomCompleteness), Csv.D(p.Threshold), Csv.I(p.TotalNodes)]));
        return sb.ToString();
    }

    /// <summary>
    /// SHA-256 (hex) of a file, or of a folder as the hash over its files' relative names and hashes in ordinal order;
    /// null when the path is not here (e.g. the bundled model loaded from resources).
    /// </summary>
    public static string? Sha256(string path)
    {
        if (File.Exists(path)) { using var f = File.OpenRead(path); return Convert.ToHexStringLower(SHA256.HashData(f)); }
        if (!Directory.Exists(path)) return null;
        var sb = new StringBuilder();
        foreach (var f in Directory.GetFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
            sb.Append(Path.GetRelativePath(path, f).Replace('\\', '/')).Append(' ').Append(Sha256(f)).Append('\n');
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(sb.ToString())));
    }
}
