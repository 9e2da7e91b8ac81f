using NeuronTrace.Attribution.Circuits;
using NeuronTrace.Model;

namespace NeuronTrace.Cli;

/// <summary>Faithfulness and completeness against k (log axis), one panel per site, random control dashed.</summary>
public static class SweepPlot
{
    public static void Save(string path, IReadOnlyList<SweepPoint> sweep, string title)
    {
        var sites = sweep.Select(p => p.Site).Distinct().ToList();
        var multi = new ScottPlot.Multiplot();
        multi.AddPlots(sites.Count);
        var palette = new ScottPlot.Palettes.Category10();
        for (int s = 0; s < sites.Count; s++)
        {
            var plot = multi.GetPlot(s);
            var methods = sweep.Where(p => p.Site == sites[s]).Select(p => p.Method).Distinct().ToList();
            for (int m = 0; m < methods.Count; m++)
            {
                var pts = sweep.Where(p => p.Site == sites[s] && p.Method == methods[m] && p.K > 0).OrderBy(p => p.K).ToList();
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
                    rf.LegendText = "random faithfulness";
                    rf.LinePattern = ScottPlot.LinePattern.Dashed;
                }
            }
            plot.Title($"{sites[s].Name()}");
            plot.XLabel("log10 k (nodes kept)");
            plot.YLabel("normalised metric");
            plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        }
        multi.Layout = new ScottPlot.MultiplotLayouts.Grid(rows: (sites.Count + 1) / 2, columns: Math.Min(2, sites.Count));
        string tmp = path + ".tmp.png";
        multi.SavePng(tmp, 1200, 450 * ((sites.Count + 1) / 2));
        File.Move(tmp, path, overwrite: true);
    }
}
