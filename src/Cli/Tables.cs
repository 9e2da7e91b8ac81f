using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Cli;

/// <summary>Human-readable tables on stdout.</summary>
internal static class Tables
{
    public static void PrintTopNodes(NodeScores scores, IEnumerable<NodeSite> sites, int n)
    {
        foreach (var site in sites)
        {
            Console.WriteLine($"\ntop {n} {site.Name()} nodes by |score| (position 0 = last token)");
            Console.WriteLine($"  {"layer",5} {"pos",4} {"unit",6} {"score",12}");
            foreach (var (node, score) in scores.Enumerate(site).OrderByDescending(x => Math.Abs(x.Score)).Take(n))
                Console.WriteLine($"  {node.Layer,5} {node.Position,4} {node.Index,6} {score,12:G5}");
        }
    }

    public static void Print(IReadOnlyList<string> header, IEnumerable<IReadOnlyList<string>> rows)
    {
        var all = new List<IReadOnlyList<string>> { header };
        all.AddRange(rows);
        var widths = Enumerable.Range(0, header.Count).Select(i => all.Max(r => r[i].Length)).ToArray();
        foreach (var (r, idx) in all.Select((r, i) => (r, i)))
        {
            Console.WriteLine(string.Join("  ", r.Select((c, i) => i == 0 ? c.PadRight(widths[i]) : c.PadLeft(widths[i]))));
            if (idx == 0) Console.WriteLine(string.Join("  ", widths.Select(w => new string('-', w))));
        }
    }
}
