using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.TestSupport;
using NeuronTrace.Formats;

namespace NeuronTrace.Model.Tests;

/// <summary>
/// The forward allocates its tensors uninitialised (pooled arrays keep whatever they last held), so every op must
/// overwrite its output in full. Poisoning the pool with NaN arrays of every size the forward uses must not change a
/// single logit or site value.
/// </summary>
public class ForwardOverwriteTests
{
    [Fact]
    public void Stale_pooled_arrays_do_not_leak_into_the_forward()
    {
        var loaded = ModelLoader.Load(RepoPaths.Stories260KBin);
        using var model = new Llama(loaded.Weights, CpuBackend.Instance);
        var rng = new Random(4);
        // Ragged lengths (right-padded batch) and T = 37, off every block size of the attention and GEMM kernels.
        var prompts = Enumerable.Range(0, 3).Select(b => Enumerable.Range(0, 37 - 5 * b).Select(t => t == 0 ? 1 : rng.Next(3, 512)).ToArray()).ToList();
        var batch = new TokenBatch(prompts);

        float[] logits;
        var shapes = new List<int[]>();
        var sites = new Dictionary<(NodeSite, int), float[]>();
        var probs = new List<float[]>();
        using (var pass = model.Forward(batch, LogitRows.All))
        {
            logits = pass.HostLogits();
            foreach (var l in pass.Layers)
                shapes.AddRange(new[] { l.AttnNormed, l.Q, l.K, l.V, l.Lse, l.Z, l.Gate, l.Act, pass.Logits! }.Select(t => t.Shape));
            for (int l = 0; l < loaded.Config.Layers; l++)
                foreach (var site in new[] { NodeSite.Resid, NodeSite.Attn, NodeSite.AttnZ, NodeSite.MlpOut, NodeSite.MlpAct })
                    sites[(site, l)] = pass.HostSite(site, l);
            probs.AddRange(pass.Layers.Select(Download));
        }

        var poisoned = new List<CpuTensor>();
        foreach (var shape in shapes.DistinctBy(s => string.Join(",", s)))
            for (int i = 0; i < 24; i++)
            {
                var t = CpuTensor.Rent(shape);
                t.Span.Fill(float.NaN);
                poisoned.Add(t);
            }
        foreach (var t in poisoned) t.Dispose();

        using var again = model.Forward(batch, LogitRows.All);
        Assert.Equal(logits, again.HostLogits());
        foreach (var ((site, layer), values) in sites)
            Assert.Equal(values, again.HostSite(site, layer));
        // The backward recomputes the attention pattern from the row statistics L.
        Assert.Equal(probs, again.Layers.Select(Download));
    }

    static float[] Download(LayerState l)
    {
        var h = new float[l.Lse.Length];
        CpuBackend.Instance.Download(l.Lse, h);
        return h;
    }
}
