using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Model;

/// <summary>
/// The clean and the patch forward of an attribution batch run as one forward over both sets of prompts, so that each
/// weight is read once for the two (at the sizes people run on a CPU, a few dozen rows against large weight matrices,
/// the forward is bound by reading the weights). The rows are then taken apart into two passes, each as if its prompts
/// had run alone: the clean pass with the logits (only the clean prompts get them) and everything the backward reads,
/// the patch pass with its site values.
/// </summary>
/// <remarks>
/// Every op of the forward treats rows independently (norms per row, attention per prompt, element-wise ops), so a row's
/// values are those of a separate forward whenever the products compute a row the same way at either row count. On the
/// CPU that holds except where one count takes the few-row kernel and the other the packed one; <see cref="Applies"/>
/// says when, and the caller then runs the two forwards apart.
/// </remarks>
internal static class PairedForward
{
    /// <summary>
    /// Whether pairing <paramref name="rows"/> clean rows with as many patch rows leaves every row's arithmetic as it is
    /// in separate forwards on the CPU backend. Only the CPU pairs: its forward is bound by reading the weights, while
    /// a GPU's split would add a host round trip per per-row statistic (the launch ledger pins those syncs).
    /// </summary>
    public static bool Applies(Llama model, int rows) =>
        model.Placement.Devices.All(b => b is CpuBackend) && Gemm.SameRowArithmetic(rows, 2 * rows);

    /// <summary>
    /// One forward over the prompts of <paramref name="clean"/> followed by those of <paramref name="patch"/> (equal
    /// lengths prompt by prompt), logits at the clean prompts' last tokens, split into the clean pass and the patch pass
    /// (no logits). The caller disposes both.
    /// </summary>
    public static (ForwardPass Clean, ForwardPass Patch) Run(Llama model, TokenBatch clean, TokenBatch patch)
    {
        if (clean.Size != patch.Size || !clean.Lengths.AsSpan().SequenceEqual(patch.Lengths))
            throw new ArgumentException("paired forward: the clean and patch prompts must have equal lengths, prompt by prompt");
        var prompts = new List<int[]>(2 * clean.Size);
        foreach (var b in new[] { clean, patch })
            for (int i = 0; i < b.Size; i++) prompts.Add(b.Tokens.AsSpan(i * b.SeqLen, b.Lengths[i]).ToArray());
        var both = new TokenBatch(prompts);

        var pass = model.Forward(both, LogitRows.Last, null, clean.Size);
        var cleanLayers = new List<LayerState>(pass.Layers.Length);
        var patchLayers = new List<LayerState>(pass.Layers.Length);
        Tensor? cleanEmbedded = null, patchEmbedded = null;
        int split = 0;   // layers of the paired pass split (and disposed) so far
        try
        {
            cleanEmbedded = Half(model.Backend, pass.Embedded, 0);
            patchEmbedded = Half(model.Backend, pass.Embedded, 1);
            Tensor cleanInput = cleanEmbedded, patchInput = patchEmbedded;
            // Layer by layer, each paired layer freed once split: at most one layer more than two separate passes hold.
            for (; split < pass.Layers.Length; split++)
            {
                var s = pass.Layers[split];
                cleanLayers.Add(Split(model.LayerBackend(split), s, 0, cleanInput));
                patchLayers.Add(Split(model.LayerBackend(split), s, 1, patchInput));
                cleanInput = cleanLayers[split].Output;
                patchInput = patchLayers[split].Output;
                s.Dispose();
            }
        }
        catch
        {
            cleanEmbedded?.Dispose(); patchEmbedded?.Dispose();
            foreach (var s in cleanLayers.Concat(patchLayers)) s.Dispose();
            for (int l = split; l < pass.Layers.Length; l++) pass.Layers[l].Dispose();
            pass.Logits?.Dispose(); pass.FinalInput?.Dispose(); pass.FinalRstd?.Dispose();
            throw;
        }
        finally
        {
            pass.Embedded.Dispose();   // the paired pass's logits and final norm move to the clean pass
        }
        var cleanPass = new ForwardPass(model, clean, cleanEmbedded, cleanLayers.ToArray(), pass.FinalInput, pass.FinalRstd,
            pass.Logits, LogitRows.Last, pass.LogitRowIndex);
        var patchPass = new ForwardPass(model, patch, patchEmbedded, patchLayers.ToArray(), null, null, null, LogitRows.None, []);
        return (cleanPass, patchPass);

        // The clean (0) or patch (1) half of a tensor whose rows (all dimensions but the last) run clean then patch.
        static Tensor Half(IBackend be, Tensor t, int which)
        {
            var shape = (int[])t.Shape.Clone();
            shape[0] /= 2;
            if (t.Rank == 1)
            {
                // A per-row statistic ([rows]): a few floats, taken apart on the host.
                var all = new float[t.Length];
                be.Download(t, all);
                return be.Upload(all.AsSpan(which * shape[0], shape[0]), shape);
            }
            var h = be.AllocateUninitialized(shape);
            int rows = t.Rows / 2;
            var index = new int[rows];
            for (int r = 0; r < rows; r++) index[r] = which * rows + r;
            be.GatherRows(t, index, h);
            return h;
        }

        static LayerState Split(IBackend be, LayerState s, int which, Tensor input)
        {
            var parts = new List<Tensor>();
            Tensor H(Tensor t) { var h = Half(be, t, which); parts.Add(h); return h; }
            try
            {
                return new LayerState
                {
                    Input = input,
                    AttnNormed = H(s.AttnNormed), AttnRstd = H(s.AttnRstd), Q = H(s.Q), K = H(s.K), V = H(s.V), Lse = H(s.Lse),
                    RawZ = s.RawZ is null ? null : H(s.RawZ), Z = H(s.Z), AttnOut = H(s.AttnOut), Mid = H(s.Mid),
                    FfnNormed = H(s.FfnNormed), FfnRstd = H(s.FfnRstd), Gate = H(s.Gate), Up = H(s.Up), Act = H(s.Act),
                    MlpOut = H(s.MlpOut), Output = H(s.Output),
                };
            }
            catch
            {
                foreach (var t in parts) t.Dispose();
                throw;
            }
        }
    }
}
