using NeuronTrace.Model;
using NeuronTrace.Tracing.Evaluation;

namespace NeuronTrace.Cli;

/// <summary>Faithfulness and completeness against k (log axis) for one site, every method, random control dashed.</summary>
internal static class SweepPlot
{
    /// <summary>Writes <c>sweep_{site}.png</c> into <paramref name="dir"/> for every site of the sweep; returns the files.</summary>
    public static IReadOnlyList<string> SaveAll(string dir, IReadOnlyList<SweepPoint> sweep, string title)
    {
        var files = new List<string>();
        foreach (var site in sweep.Select(p => p.Site).Distinct())
        {
            string path = Path.Combine(dir, $"sweep_{site.Name()}.png");
            Save(path, sweep.Where(p => p.Site == site).ToList(), $"{title}: {site.Name()}");
            files.Add(path);
        }
        return files;
    }

    public static void Save(string path, IReadOnlyList<SweepPoint> sweep, string title)
    {
        var plot = new ScottPlot.Plot();
        var palette = new ScottPlot.Palettes.Category10();
        var methods = sweep.Select(p => p.Method).Distinct().ToList();
        for (int m = 0; m < methods.Count; m++)
        {
            var pts = sweep.Where(p => p.Method == methods[m] && p.K > 0).OrderBy(p => p.K).ToList();
            double[] x = pts.Select(p => Math.Log10(p.K)).ToArray();
            var color = palette.GetColor(m);
            var f = plot.Add.Scatter(x, pts.Select(p => p.Faithfulness).ToArray(), color);
            f.LegendText = $"{methods[m]} faithfulness";
            var c = plot.Add.Scatter(x, pts.Select(p => p.Completeness).ToArray(), color);
            c.LegendText = $"{methods[m]} completeness";
            c.LinePattern = ScottPlot.LinePattern.Dotted;
            if (m == 0)
            {
                var rf = plot.Add.Scatter(x, pts.Select(p => p.RandomFaithfulness).ToArray(), ScottPlot.Colors.Gray);
                rf.LegendText = "random circuit faithfulness";
                rf.LinePattern = ScottPlot.LinePattern.Dashed;
            }
        }
        plot.Title(title);
        plot.XLabel("log10 k (nodes kept)");
        plot.YLabel("normalised logit difference");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        byte[] png = plot.GetImageBytes(900, 600, ScottPlot.ImageFormat.Png);
        NeuronTrace.Formats.OutputFiles.WriteAtomically(path, s => s.Write(png));
    }
}
