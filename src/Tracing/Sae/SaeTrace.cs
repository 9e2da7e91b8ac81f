using System.Globalization;
using System.Text;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Sae;

/// <summary>
/// The SAE circuit of one SAE and method in a trace: its nodes (features and error nodes at the SAE's own hook site and
/// layer, every position) swept over k like the neuron circuits, and the smallest swept k reaching the target faithfulness.
/// </summary>
public sealed record SaeCircuitSummary(string Name, string Path, NodeSite Site, int Layer, AttributionMethod Method, int TotalNodes,
    SaeSweepPoint? AtTarget, int ErrorNodesInCircuit, IReadOnlyList<SaeSweepPoint> Sweep);

/// <summary>
/// The SAE stage of <c>trace --sae</c>: on the trace's own split (its train examples attribute, its eval examples
/// evaluate, ablation means over the eval patch prompts as for neurons), each SAE's nodes are scored with each AtP/RelP
/// method of the trace (<see cref="SaeAttributor"/>) and swept over the same number of log-spaced k
/// (<see cref="SaeCircuitSweep"/>), so the report can put "k for the target faithfulness" per basis side by side.
/// </summary>
internal static class SaeTrace
{
    public const string CircuitsFile = "sae_circuits.csv";
    public const string SweepFile = "sae_sweep.csv";

    public static IReadOnlyList<SaeCircuitSummary> Run(Llama model, TraceResult trace, IReadOnlyList<SparseAutoencoder> saes, TraceOptions o)
    {
        var methods = o.Methods.Where(m => m is AttributionMethod.AtP or AttributionMethod.RelP).ToList();
        if (saes.Count > 0 && methods.Count == 0)
            throw new ArgumentException("SAE circuits need --method atp or relp among the trace's methods");
        var ablationPrompts = trace.Eval.Pairs.Select(p => p.PatchIds ?? p.CleanIds).ToList();
        var result = new List<SaeCircuitSummary>();
        foreach (var sae in saes)
        {
            var (site, layer) = sae.HookSite;
            if (layer >= model.Config.Layers)
                throw new ModelFormatException(sae.Path, $"hook point {sae.HookName} is layer {layer} but the model has {model.Config.Layers} layers");
            if (site.Width(model.Config) != sae.DModel)
                throw new ModelFormatException(sae.Path, $"the SAE reads {sae.DModel}-wide vectors but the model's {site.Name()} is {site.Width(model.Config)} wide");
            var means = SaeSiteMeans.Compute(model, sae, site, layer, ablationPrompts);
            foreach (var method in methods)
            {
                var scores = SaeAttributor.Score(model, trace.Train, sae, site, layer,
                    new AttributionOptions { Method = method, Sites = [site], RelPRules = o.RelPRules });
                var ks = CircuitSweep.LogSpacedK(scores.NodeCount, o.KPoints).Where(k => k > 0).ToList();
                var points = SaeCircuitSweep.Run(model, scores, sae, trace.Eval, means, ks);
                var hit = points.Where(p => p.Faithfulness >= o.TargetFaithfulness).OrderBy(p => p.K).FirstOrDefault();
                int errors = hit is null ? 0 : SaeCircuitSweep.Ranking(scores).Order.Take(hit.K).Count(i => i % scores.NodesPerPosition == sae.Features);
                result.Add(new SaeCircuitSummary(Name(sae), System.IO.Path.GetFullPath(sae.Path), site, layer, method, scores.NodeCount, hit, errors, points));
            }
        }
        return result;
    }

    /// <summary>The SAE's folder name, the label it has in tables and files.</summary>
    public static string Name(SparseAutoencoder sae) =>
        System.IO.Path.GetFileName(System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(sae.Path)));

    /// <summary>Writes <see cref="CircuitsFile"/> (one row per SAE and method; k empty when the target is not reached) and <see cref="SweepFile"/>.</summary>
    public static void Write(string dir, IReadOnlyList<SaeCircuitSummary> circuits, double target)
    {
        var inv = CultureInfo.InvariantCulture;
        var c = new StringBuilder("sae,site,layer,method,target,total_nodes,k,faithfulness,completeness,error_nodes_in_circuit,path\n");
        var s = new StringBuilder("sae,site,layer,method,k,faithfulness,completeness,total_nodes\n");
        foreach (var x in circuits)
        {
            string head = $"{Csv(x.Name)},{x.Site.Name()},{x.Layer},{x.Method.Name()}";
            c.Append(inv, $"{head},{target:G9},{x.TotalNodes},{x.AtTarget?.K.ToString(inv)},{x.AtTarget?.Faithfulness.ToString("G9", inv)},{x.AtTarget?.Completeness.ToString("G9", inv)},{x.ErrorNodesInCircuit},{Csv(x.Path)}\n");
            foreach (var p in x.Sweep) s.Append(inv, $"{head},{p.K},{p.Faithfulness:G9},{p.Completeness:G9},{p.TotalNodes}\n");
        }
        File.WriteAllText(System.IO.Path.Combine(dir, CircuitsFile), c.ToString());
        File.WriteAllText(System.IO.Path.Combine(dir, SweepFile), s.ToString());
    }

    static string Csv(string v) => v.IndexOfAny([',', '"', '\n']) < 0 ? v : "\"" + v.Replace("\"", "\"\"") + "\"";
}

/// <summary>
/// SAE node scores as CSV: <c>site,layer,position,index,score</c> (the columns of scores.csv), position counted from the end (0 = last token) like
/// the neuron scores, index a feature index or <c>error</c>; rows in the flat node order p·(F+1) + i.
/// </summary>
internal static class SaeScoresCsv
{
    public static void Write(string file, SaeScores s)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder("site,layer,position,index,score\n");
        string head = $"{s.Site.Name()},{s.Layer}";
        for (int p = 0; p < s.Positions; p++)
        {
            for (int i = 0; i < s.Features; i++) sb.Append(inv, $"{head},{p},{i},{s.FeatureScores[p * s.Features + i]:G9}\n");
            sb.Append(inv, $"{head},{p},error,{s.ErrorScores[p]:G9}\n");
        }
        File.WriteAllText(file, sb.ToString());
    }
}
