using System.Text;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Edges;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Runs;

/// <summary>
/// <c>edges.csv</c> (columns <see cref="RunFormat.EdgesColumns"/>, largest |final_attr| first), written by <c>edges</c>
/// and read by <c>export</c>. An end is a node (the <see cref="NodeId"/> columns), a token embedding
/// (<c>node</c> = <c>embedding/P-{p}</c>, site <c>embedding</c>, layer and index empty) or the metric's logits
/// (<c>node</c> = <c>logits</c>, site <c>logits</c>, layer, position and index empty): no -1 markers.
/// </summary>
internal static class EdgeCsv
{
    public const string EmbeddingSite = "embedding";
    public const string LogitSite = "logits";

    static IEnumerable<string> EndFields(EdgeEnd e) => e.Kind switch
    {
        EdgeEndKind.Embedding => [$"{EmbeddingSite}/P-{e.Position}", EmbeddingSite, "", Csv.I(e.Position), ""],
        EdgeEndKind.Logit => [LogitSite, LogitSite, "", "", ""],
        _ => Csv.NodeFields(new NodeId(NodeSite.MlpAct, e.Layer, e.Position, e.Unit)),
    };

    public static string Write(EdgeGraph graph)
    {
        var sb = new StringBuilder(Csv.Line(RunFormat.EdgesColumns));
        foreach (var e in graph.Edges.OrderByDescending(e => Math.Abs(e.FinalAttr)))
            sb.Append(Csv.Line([.. EndFields(e.Source), .. EndFields(e.Target), Csv.D(e.Weight), Csv.D(e.FinalAttr), Csv.I(e.Examples)]));
        return sb.ToString();
    }

    /// <summary>One row of edges.csv: each end is a node id string (see the class summary), the weight and the flow to the metric.</summary>
    public sealed record Row(EdgeEndKind SourceKind, NodeId? Source, int? SourcePosition, EdgeEndKind TargetKind, NodeId? Target, double Weight, double FinalAttr);

    /// <summary>Reads edges.csv; a bad cell is an error naming the file, line and column.</summary>
    public static List<Row> Read(string path)
    {
        var t = Csv.Read(path);
        var rows = new List<Row>();
        if (t.Header.Length == 0) return rows;
        int sn = t.Column("source_node"), sp = t.Column("source_position"), tn = t.Column("target_node"), w = t.Column("weight"), f = t.Column("final_attr");
        foreach (var (line, p) in t.Rows)
        {
            var (sk, sid) = End(p[sn], t.Where(line, sn));
            var (tk, tid) = End(p[tn], t.Where(line, tn));
            int? spos = sk == EdgeEndKind.Embedding ? JsonFields.CsvInt(path, t.Where(line, sp), p[sp], min: 0) : sid?.Position;
            rows.Add(new Row(sk, sid, spos, tk, tid, JsonFields.CsvDouble(path, t.Where(line, w), p[w]), JsonFields.CsvDouble(path, t.Where(line, f), p[f])));
        }
        return rows;

        (EdgeEndKind, NodeId?) End(string cell, string where)
        {
            if (cell == LogitSite) return (EdgeEndKind.Logit, null);
            if (cell.StartsWith(EmbeddingSite + "/P-", StringComparison.Ordinal)) return (EdgeEndKind.Embedding, null);
            return NodeId.TryParse(cell, out var id) ? (EdgeEndKind.Neuron, id)
                : throw new ModelFormatException(path, $"{where}: bad node id {ErrorText.Quote(cell)} (expected {NodeId.Syntax}, {EmbeddingSite}/P-<p> or {LogitSite})");
        }
    }
}
