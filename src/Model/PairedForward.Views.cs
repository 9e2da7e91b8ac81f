using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

internal static partial class PairedForward
{
    /// <summary>
    /// <see cref="Run"/> on a backend with row views (the GPU): one plain forward over <paramref name="both"/> (the
    /// clean prompts, then the patch prompts), whose tensors are then taken apart without a copy. Every tensor's leading
    /// dimension runs clean then patch (rows b·T + t, the attention statistic [B, H, T]), so each half is one view
    /// (<see cref="IRowViews.ViewLeading"/>): the clean pass views every tensor, the patch pass its embedding and its
    /// values at <paramref name="patchSites"/>. The paired tensors' memory lives until both passes are disposed — as
    /// much as two separate forwards held — and no kernel runs for the split.
    /// </summary>
    /// <remarks>
    /// The shared-prefix shortcut of the CPU pairing is not taken: it would gather rows (launches) and keep q, k, v and
    /// gate, up in fp32 (its hooks bypass <see cref="IBackend.StoreForBackward"/>).
    /// </remarks>
    static (ForwardPass Clean, ForwardPass Patch) RunAsViews(Llama model, TokenBatch both, TokenBatch clean, TokenBatch patch,
        IReadOnlyCollection<NodeSite> patchSites, bool logits)
    {
        int layers = model.Config.Layers;
        var cleanLayers = new List<LayerState>(layers);
        var patchLayers = new List<LayerState>(layers);
        var views = new List<Tensor>();
        (Tensor FinalInput, Tensor Rstd, Tensor? Logits, int[] Index) head = default;
        try
        {
            using (var paired = model.Forward(both, LogitRows.None))
            {
                // Disposing the paired pass below drops its references; the views keep the memory they show.
                Tensor View(IBackend be, Tensor t, int which)
                {
                    int half = t.Shape[0] / 2;
                    var v = ((IRowViews)be).ViewLeading(t, which * half, half);
                    views.Add(v);
                    return v;
                }
                Tensor cleanInput = View(model.Backend, paired.Embedded, 0), patchInput = View(model.Backend, paired.Embedded, 1);
                var cleanEmbedded = cleanInput;
                var patchEmbedded = patchInput;
                for (int l = 0; l < layers; l++)
                {
                    var s = paired.Layers[l];
                    var be = model.LayerBackend(l);
                    cleanLayers.Add(Halves(s, 0, cleanInput, null));
                    patchLayers.Add(Halves(s, 1, patchInput, patchSites));
                    cleanInput = cleanLayers[l].Output;
                    patchInput = patchLayers[l].Output;

                    LayerState Halves(LayerState s, int which, Tensor input, IReadOnlyCollection<NodeSite>? sites)
                    {
                        Tensor H(Tensor t, NodeSite? site = null) =>
                            sites is not null && (site is not { } n || !sites.Contains(n)) ? NotKept : View(be, t, which);
                        // A layer that took its input from another device owns that copy: so does each half's view of it.
                        bool ownsInput = s.OwnsInput && sites is null;
                        return new LayerState
                        {
                            Input = ownsInput ? View(be, s.Input, which) : input, OwnsInput = ownsInput,
                            AttnNormed = H(s.AttnNormed), AttnRstd = H(s.AttnRstd), Q = H(s.Q), K = H(s.K), V = H(s.V), Lse = H(s.Lse),
                            RawZ = null, Z = H(s.Z, NodeSite.AttnZ), AttnOut = H(s.AttnOut, NodeSite.Attn),
                            Mid = H(s.Mid), FfnNormed = H(s.FfnNormed), FfnRstd = H(s.FfnRstd), Gate = H(s.Gate), Up = H(s.Up),
                            Act = H(s.Act, NodeSite.MlpAct), MlpOut = H(s.MlpOut, NodeSite.MlpOut), Output = H(s.Output, NodeSite.Resid),
                        };
                    }
                }
                // The logits of the clean rows only, from the clean half (the gather reads the clean prompts' last rows).
                head = model.Head(cleanInput, clean, LogitRows.Last, clean.Size, logits);
                var cleanPass = new ForwardPass(model, clean, cleanEmbedded, cleanLayers.ToArray(), head.FinalInput, head.Rstd,
                    head.Logits, LogitRows.Last, head.Index);
                var patchPass = new ForwardPass(model, patch, patchEmbedded, patchLayers.ToArray(), null, null, null, LogitRows.None, []);
                return (cleanPass, patchPass);
            }
        }
        catch
        {
            foreach (var v in views) v.Dispose();
            head.FinalInput?.Dispose(); head.Rstd?.Dispose(); head.Logits?.Dispose();
            throw;
        }
    }
}
