using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Evaluation;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>
/// The mean baseline on the backend: per site one [layers · (positions + 1), width] tensor laid out like the rows of
/// <see cref="ScoreSums"/> (row FirstRow(l) + p holds the task's clean mean at position p from the end; the spare row
/// is 0), so <see cref="IBackend.AccumulateScores"/> reads it per position. Uploaded once per task, one upload per site.
/// </summary>
internal sealed class PositionMeans : IDisposable
{
    readonly Dictionary<NodeSite, Tensor> _means = new();

    public PositionMeans(IBackend backend, LlamaConfig config, SiteMeans means, NodeSite[] sites, int positions)
    {
        try
        {
            foreach (var s in sites)
            {
                int w = s.Width(config);
                var host = new float[(long)config.Layers * (positions + 1) * w];
                for (int l = 0; l < config.Layers; l++)
                    Array.Copy(means.Get(s, l), 0, host, (long)l * (positions + 1) * w, (long)positions * w);
                _means[s] = backend.Upload(host, config.Layers * (positions + 1), w);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public Tensor Get(NodeSite site) => _means[site];

    public void Dispose()
    {
        foreach (var t in _means.Values) t.Dispose();
        _means.Clear();
    }
}
