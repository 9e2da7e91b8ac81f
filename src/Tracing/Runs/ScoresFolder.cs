using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Runs;

/// <summary>
/// Writes a scores folder (scores/{method}/ of a run, or attribute's --out): <c>scores.safetensors</c> (one float32
/// tensor <c>{site}/L{layer}</c> of shape [positions, width] per site and layer, readable by safetensors, numpy or
/// torch), the older <c>scores.f32</c> + <c>scores.json</c> pair (the same arrays back to back, and their index; kept so
/// existing readers work), and <c>scores.csv</c> (columns <see cref="RunFormat.ScoresColumns"/>).
/// </summary>
internal static class ScoresFolder
{
    /// <summary>The safetensors tensor name of a site and layer.</summary>
    public static string TensorName(NodeSite site, int layer) => $"{site.Name()}/L{layer}";

    public const string PositionConvention = "position 0 is the last prompt token; p counts tokens back from the end";

    public static void Write(NodeScores scores, string dir, string method, string metric, int examples)
    {
        Directory.CreateDirectory(dir);
        var config = scores.Config;
        var entries = new List<object>();
        long offset = 0;
        var tensors = new SafetensorsWriter()
            .SetMetadata("neurontrace_format", RunFormat.ScoresId).SetMetadata("method", method).SetMetadata("metric", metric)
            .SetMetadata("examples", Csv.I(examples)).SetMetadata("positions", Csv.I(scores.Positions))
            .SetMetadata("position_convention", PositionConvention);
        foreach (var s in scores.Sites)
            for (int l = 0; l < config.Layers; l++)
            {
                var a = scores.Get(s, l);
                tensors.Add(TensorName(s, l), a, [scores.Positions, s.Width(config)]);
                entries.Add(new { site = s.Name(), layer = l, shape = new[] { scores.Positions, s.Width(config) }, offset_bytes = offset, tensor = TensorName(s, l) });
                offset += a.Length * 4L;
            }
        tensors.Write(Path.Combine(dir, RunFormat.ScoresSafetensorsFile));
        OutputFiles.WriteAtomically(Path.Combine(dir, RunFormat.ScoresRawFile), stream =>
        {
            foreach (var s in scores.Sites)
                for (int l = 0; l < config.Layers; l++)
                    stream.Write(MemoryMarshal.AsBytes(scores.Get(s, l).AsSpan()));
        });
        var index = new
        {
            format = RunFormat.ScoresId,
            method, metric, examples, positions = scores.Positions,
            position_convention = PositionConvention,
            dtype = "float32-le",
            safetensors = RunFormat.ScoresSafetensorsFile,
            arrays = entries,
        };
        OutputFiles.WriteText(Path.Combine(dir, RunFormat.ScoresIndexFile), JsonSerializer.Serialize(index, new JsonSerializerOptions { WriteIndented = true }));
        OutputFiles.WriteAtomically(Path.Combine(dir, RunFormat.ScoresCsvFile), stream =>
        {
            using var w = new StreamWriter(stream, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
            w.Write(Csv.Line(RunFormat.ScoresColumns));
            foreach (var s in scores.Sites)
                foreach (var (n, v) in scores.Enumerate(s))
                    w.Write(Csv.Line([.. Csv.NodeFields(n), Csv.F(v)]));
        });
    }

    /// <summary>Reads the scores of one site and layer from a scores folder's safetensors file ([positions · width], row p = position p from the end).</summary>
    public static float[] Read(string dir, NodeSite site, int layer)
    {
        string path = Path.Combine(dir, RunFormat.ScoresSafetensorsFile);
        if (!File.Exists(path)) throw new ModelFormatException(dir, $"no {RunFormat.ScoresSafetensorsFile}");
        using var f = SafetensorsFile.Open(path);
        var t = f.Find(TensorName(site, layer)) ?? throw new ModelFormatException(path, $"no tensor {TensorName(site, layer)}");
        return f.ReadTensor(t);
    }
}
