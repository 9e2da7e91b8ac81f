using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Circuits;

namespace NeuronTrace.Tracing.Scoring;

internal sealed partial class ScoreSums
{
    /// <summary>
    /// The <paramref name="k"/> nodes of <paramref name="site"/> with the largest |example-mean score|, largest first,
    /// ties by the lower <see cref="NodeGrid"/> flat index: <see cref="NodeRanking"/>'s top-k of the downloaded means,
    /// selected where the sums live (per device its k best, <see cref="IBackend.TopKByMagnitude"/>, merged here), so
    /// only those k per device cross to the host, never the slab.
    /// </summary>
    /// <param name="site">One of the scored sites.</param>
    /// <param name="k">How many nodes (fewer when the site has fewer).</param>
    /// <param name="examplesAtPosition">Per position, how many examples of the task reach it (the mean's divisor, as <see cref="MeansOver"/>).</param>
    public IReadOnlyList<(NodeId Node, float Score)> TopK(NodeSite site, int k, int[] examplesAtPosition)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        if (!_firstColumn.ContainsKey(site)) throw new ArgumentException($"site {site.Name()} was not scored (scored: {string.Join(", ", _sites.Select(s => s.Name()))})");
        int width = site.Width(_config);
        var grid = new NodeGrid(_config.Layers, _positions, width);
        var scales = Scales(examplesAtPosition);
        var best = new List<ScoredNode>();
        for (int d = 0; d < _slabs.Length; d++)
        {
            if (_slabs[d] is not { } slab) continue;
            var (first, end) = _placement.LayersOf(d);
            var block = new TopKBlock(FirstColumn(site), width, end - first, _positions, _positions + 1, checked(first * grid.PerLayer));
            best.AddRange(_placement.Devices[d].TopKByMagnitude(slab, block, scales, k));
        }
        var merged = best.ToArray();
        Runtime.Cpu.TopKOps.Sort(merged);
        return merged.Take(k).Select(n =>
        {
            var (l, p, u) = grid.Split(n.Flat);
            return (new NodeId(site, l, p, u), n.Mean);
        }).ToList();
    }
}

/// <summary>
/// A task's attribution scores left on the backend (<see cref="Attributor.ScoreOnDevice"/>): the score slabs and the
/// examples per position. <see cref="TopK"/> selects there (only k nodes cross to the host); <see cref="Download"/> is the
/// one readout of every mean (<see cref="ScoreSums.MeansOver"/>), the same values <see cref="Attributor.Score"/> returns.
/// </summary>
internal sealed class DeviceScores(ScoreSums sums, int[] examplesAtPosition) : IDisposable
{
    ScoreSums? _sums = sums;

    ScoreSums Sums => _sums ?? throw new ObjectDisposedException(nameof(DeviceScores));

    /// <inheritdoc cref="ScoreSums.TopK"/>
    public IReadOnlyList<(NodeId Node, float Score)> TopK(NodeSite site, int k) => Sums.TopK(site, k, examplesAtPosition);

    public NodeScores Download() => Sums.MeansOver(examplesAtPosition);

    public void Dispose()
    {
        _sums?.Dispose();
        _sums = null;
    }
}
