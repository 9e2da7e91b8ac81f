using NeuronTrace.Formats;
using System.Runtime.InteropServices;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Sharding;

/// <summary>
/// Attribution score sums in fp64 with the number of examples at each position from the end: what a shard holds
/// instead of means, so that shards add exactly and the merged mean is sum / count over the whole task. The sums file
/// is little-endian float64, arrays back to back in (method, site, layer) order, each [positions, width].
/// </summary>
internal sealed class PartialScores
{
    readonly Dictionary<(string, NodeSite, int), double[]> _sums = new();

    public PartialScores(LlamaConfig config, IReadOnlyList<string> methods, IReadOnlyList<NodeSite> sites, int positions)
    {
        Config = config; Methods = methods.ToArray(); Sites = sites.ToArray(); Positions = positions;
        Counts = new long[positions];
        foreach (var (m, s, l) in Keys()) _sums[(m, s, l)] = new double[positions * s.Width(config)];
    }

    public LlamaConfig Config { get; }
    public string[] Methods { get; }
    public NodeSite[] Sites { get; }
    public int Positions { get; }
    public long[] Counts { get; }

    IEnumerable<(string, NodeSite, int)> Keys()
    {
        foreach (var m in Methods)
            foreach (var s in Sites)
                for (int l = 0; l < Config.Layers; l++) yield return (m, s, l);
    }

    /// <summary>Adds the examples at each position (once per batch of examples, not per method).</summary>
    public void AddCounts(IEnumerable<int[]> promptLengths)
    {
        foreach (var ids in promptLengths)
            for (int p = 0; p < ids.Length; p++) Counts[p]++;
    }

    /// <summary>
    /// Adds means over some examples back as sums: mean · (examples at the position). The means come from
    /// <see cref="Attributor.Score"/> (float32 sums on the backend, divided once), so the product restores each
    /// chunk's sum to float32 rounding; the chunks then add in fp64.
    /// </summary>
    public void AddMeans(string method, NodeScores means, int[] examplesAtPosition)
    {
        foreach (var s in Sites)
        {
            int w = s.Width(Config);
            for (int l = 0; l < Config.Layers; l++)
            {
                var sum = _sums[(method, s, l)];
                var mean = means.Get(s, l);
                for (int p = 0; p < means.Positions && p < Positions; p++)
                {
                    double count = examplesAtPosition[p];
                    if (count == 0) continue;
                    for (int i = 0; i < w; i++) sum[p * w + i] += mean[p * w + i] * count;
                }
            }
        }
    }

    /// <summary>Adds another shard's sums and counts (same layout).</summary>
    public void Add(PartialScores other)
    {
        foreach (var (key, a) in _sums)
        {
            var b = other._sums[key];
            for (int i = 0; i < a.Length; i++) a[i] += b[i];
        }
        for (int p = 0; p < Positions; p++) Counts[p] += other.Counts[p];
    }

    /// <summary>The example means of one method: sum / count in fp64, rounded once to float32 (0 where no example reaches).</summary>
    public NodeScores Means(string method)
    {
        var scores = new NodeScores(Config, Sites, Positions);
        foreach (var s in Sites)
        {
            int w = s.Width(Config);
            for (int l = 0; l < Config.Layers; l++)
            {
                var sum = _sums[(method, s, l)];
                var mean = scores.Get(s, l);
                for (int p = 0; p < Positions; p++)
                    for (int i = 0; i < w; i++) mean[p * w + i] = Counts[p] == 0 ? 0f : (float)(sum[p * w + i] / Counts[p]);
            }
        }
        return scores;
    }

    public void Write(string path) => OutputFiles.WriteAtomically(path, stream =>
    {
        foreach (var key in Keys()) stream.Write(MemoryMarshal.AsBytes(_sums[key].AsSpan()));
    });

    public long ByteLength => Keys().Sum(k => _sums[k].LongLength * 8);

    /// <summary>Reads a sums file written by <see cref="Write"/> for this layout into these (zeroed) sums.</summary>
    public void ReadInto(string path)
    {
        long length = new FileInfo(path).Length;
        if (length != ByteLength) throw new FormatException($"{path}: {length} bytes, but the manifest's layout needs {ByteLength}");
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        foreach (var key in Keys()) fs.ReadExactly(MemoryMarshal.AsBytes(_sums[key].AsSpan()));
    }

    /// <summary>The layout and sums a manifest describes (its sums file in <paramref name="dir"/>).</summary>
    public static PartialScores Load(string dir, ShardManifest m)
    {
        if (m.ModelConfig is null || m.SumsFile is null || m.Counts.Length != m.Positions)
            throw new FormatException($"{Path.Combine(dir, ShardManifest.FileName)}: not an attribution shard (no model config, sums file or counts)");
        var sites = m.Sites.Select(n => NodeSites.TryParse(n, out var s) ? s : throw new FormatException($"{dir}: unknown site {ErrorText.Quote(n)}")).ToArray();
        var partial = new PartialScores(m.ModelConfig, m.Methods, sites, m.Positions);
        partial.ReadInto(Path.Combine(dir, m.SumsFile));
        m.Counts.CopyTo(partial.Counts, 0);
        return partial;
    }
}
