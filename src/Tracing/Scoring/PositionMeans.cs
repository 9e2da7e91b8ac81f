using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Evaluation;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>
/// The mean baseline on the backend: per site and device one [its layers · (positions + 1), width] tensor laid out like
/// the rows of that device's <see cref="ScoreSums"/> slab (row FirstRow(l) + p holds the task's clean mean at position p
/// from the end; the spare row is 0), so <see cref="IBackend.AccumulateScores"/> reads it per position. Uploaded once
/// per task, one upload per site and device.
/// </summary>
internal sealed class PositionMeans : IDisposable
{
    readonly Dictionary<(NodeSite, int Device), Tensor> _means = new();
    readonly ScoreSums _layout;

    /// <param name="layout">The sums whose rows (devices, layers, positions) the means follow.</param>
    /// <param name="config">The model's configuration (layers, site widths).</param>
    /// <param name="means">The task's clean means per site, layer and position from the end.</param>
    /// <param name="sites">The sites to upload, each one of <paramref name="layout"/>'s.</param>
    /// <param name="positions">Positions per layer (the longest prompt); the spare row after them is 0.</param>
    public PositionMeans(ScoreSums layout, LlamaConfig config, SiteMeans means, NodeSite[] sites, int positions)
    {
        _layout = layout;
        try
        {
            int device = 0;
            foreach (var (backend, layers) in layout.Devices)
            {
                foreach (var s in sites)
                {
                    int w = s.Width(config);
                    var host = new float[(long)layers.Count * (positions + 1) * w];
                    for (int i = 0; i < layers.Count; i++)
                        Array.Copy(means.Get(s, layers[i]), 0, host, (long)i * (positions + 1) * w, (long)positions * w);
                    _means[(s, device)] = backend.Upload(host, layers.Count * (positions + 1), w);
                }
                device++;
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The means of <paramref name="site"/> on the device of <paramref name="layer"/> (all that device's layers).</summary>
    public Tensor Get(NodeSite site, int layer) => _means[(site, _layout.DeviceOf(layer))];

    public void Dispose()
    {
        foreach (var t in _means.Values) t.Dispose();
        _means.Clear();
    }
}
