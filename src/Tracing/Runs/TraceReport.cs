using System.Globalization;
using System.Text;
using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Runs;

/// <summary>
/// Writes a trace run folder: <c>sweep.csv</c>, <c>summary.json</c>, <c>circuits/{method}_{site}.json</c> and
/// <c>scores/{method}/</c> (see README "Run folder").
/// </summary>
public static class TraceReport
{
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public static void Write(string dir, TraceResult r, LoadedModel model, string taskPath)
    {
        Directory.CreateDirectory(dir);
        foreach (var (method, scores) in r.Scores)
            scores.Save(Path.Combine(dir, "scores", method.Name()), method.Name(), "logit(patch) - logit(clean)", r.Train.Count);

        AtomicFile.WriteText(Path.Combine(dir, "sweep.csv"), SweepCsv(r.Sweep));

        Directory.CreateDirectory(Path.Combine(dir, "circuits"));
        foreach (var c in r.Circuits)
        {
            var doc = new
            {
                format = "neurontrace-circuit/1",
                site = c.Site.Name(),
                method = c.Method.Name(),
                k = c.Nodes.Count,
                total_nodes = c.TotalNodes,
                faithfulness = c.AtTarget?.Faithfulness,
                completeness = c.AtTarget?.Completeness,
                threshold = c.AtTarget?.Threshold,
                position_convention = "position 0 is the last prompt token",
                nodes = c.Nodes.Select(n => new { site = n.Node.Site.Name(), layer = n.Node.Layer, position = n.Node.Position, index = n.Node.Index, score = n.Score }),
            };
            AtomicFile.WriteText(Path.Combine(dir, "circuits", $"{c.Method.Name()}_{c.Site.Name()}.json"), JsonSerializer.Serialize(doc, Json));
        }

        var summary = new
        {
            format = "neurontrace-trace/1",
            model = model.Path,
            model_format = model.Format,
            task = taskPath,
            train_examples = r.Train.Count,
            eval_examples = r.Eval.Count,
            train_lines = r.Train.Pairs.Select(p => p.Line),
            eval_lines = r.Eval.Pairs.Select(p => p.Line),
            eval_metric = "logit(clean_answer) - logit(patch_answer), mean over evaluation examples",
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
        AtomicFile.WriteText(Path.Combine(dir, "summary.json"), JsonSerializer.Serialize(summary, Json));
    }

    public static string SweepCsv(IEnumerable<SweepPoint> points)
    {
        var sb = new StringBuilder("site,method,k,faithfulness,completeness,random_faithfulness,random_completeness,threshold,total_nodes\n");
        foreach (var p in points)
            sb.Append(CultureInfo.InvariantCulture,
                $"{p.Site.Name()},{p.Method},{p.K},{p.Faithfulness:G9},{p.Completeness:G9},{p.RandomFaithfulness:G9},{p.RandomCompleteness:G9},{p.Threshold:G9},{p.TotalNodes}\n");
        return sb.ToString();
    }
}
