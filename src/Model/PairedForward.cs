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
internal static partial class PairedForward
{
    /// <summary>What the patch pass holds in place of a tensor it does not keep: no values, a shape no op accepts.</summary>
    static readonly Tensor NotKept = new CpuTensor(0);

    /// <summary>Below this many floats a row gather runs on the calling thread (one 2 MB layer slice and up is split).</summary>
    const long ParallelGatherFloats = 1 << 19;

    /// <summary>
    /// destination row i = source row rows[i] (<see cref="IBackend.GatherRows"/>), the rows spread over the cores for the
    /// large host tensors the split and the shared-prefix expansion copy: those copies run between the products, on one
    /// core while the other waits, and are most of the forward's time outside the products at the 1B shape. The same
    /// bytes either way (a copy).
    /// </summary>
    internal static void GatherRows(IBackend be, Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        int width = source.Columns;
        if (source is not CpuTensor s || destination is not CpuTensor d || (long)rows.Length * width < ParallelGatherFloats
            || Environment.ProcessorCount == 1)
        {
            be.GatherRows(source, rows, destination);
            return;
        }
        OpContracts.GatherRows(source, rows, destination);
        var index = rows.ToArray();
        int chunks = Math.Min(4 * Environment.ProcessorCount, index.Length);
        Parallel.For(0, chunks, c =>
        {
            int r0 = (int)((long)index.Length * c / chunks), r1 = (int)((long)index.Length * (c + 1) / chunks);
            for (int i = r0; i < r1; i++) Array.Copy(s.Data, (long)index[i] * width, d.Data, (long)i * width, width);
        });
    }

    /// <summary>
    /// destination row rows[i] = source row i, the inverse of <see cref="GatherRows"/> (CPU tensors; the other rows of
    /// destination are left as they are): compact rows put back, spread over the cores from CpuParallel.MinElements
    /// values on. A copy, so a value keeps its bits (an add into zeros would turn −0 into +0).
    /// </summary>
    internal static void ScatterRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        if (source is not CpuTensor s || destination is not CpuTensor d) throw new ArgumentException($"scatter rows: {source} and {destination} must be CPU tensors");
        int width = source.Columns;
        if (source.Rows != rows.Length || destination.Columns != width)
            throw new ArgumentException($"scatter rows: [{source.Rows}, {width}] by {rows.Length} rows into [{destination.Rows}, {destination.Columns}]");
        var index = rows.ToArray();
        foreach (int r in index)
            if ((uint)r >= (uint)destination.Rows) throw new ArgumentOutOfRangeException(nameof(rows), $"row {r} of {destination.Rows}");
        CpuParallel.For(index.Length, (long)index.Length * width, 1, (i0, i1) =>
        {
            for (int i = i0; i < i1; i++) Array.Copy(s.Data, (long)i * width, d.Data, (long)index[i] * width, width);
        });
    }

    /// <summary>
    /// Whether the clean and patch forwards of <paramref name="rows"/> clean rows run as one. On the CPU backend, when
    /// pairing leaves every row's arithmetic as it is in separate forwards (its forward is bound by reading the
    /// weights). On backends whose tensors take row views (<see cref="IRowViews"/>, the GPU), always: the halves are
    /// views of the paired tensors (<see cref="RunAsViews"/>), so the second forward's launches are saved and nothing
    /// is copied; their products' rows may round differently at 2× rows (bf16 tolerance, not bit for bit).
    /// </summary>
    public static bool Applies(Llama model, int rows) =>
        model.Placement.Devices.All(b => b is CpuBackend) ? Gemm.SameRowArithmetic(rows, 2 * rows)
            : model.Placement.Devices.All(b => b is IRowViews);

    /// <summary>
    /// One forward over the prompts of <paramref name="clean"/> followed by those of <paramref name="patch"/> (equal
    /// lengths prompt by prompt), split layer by layer into the clean pass (every tensor the backward reads, and the
    /// logits at the clean prompts' last tokens) and the patch pass, which keeps only its embedding and its values at
    /// <paramref name="patchSites"/> (the baseline the scores read); its other tensors are an empty placeholder that any
    /// op rejects by shape. The caller disposes both. <paramref name="logits"/> false leaves the clean pass without
    /// logits (its head keeps the final norm's input and statistic, all a sparsely seeded backward reads).
    /// <paramref name="lastRowsAtTop"/> runs the top layer's Q, W_o and MLP on the prompts' last rows only
    /// (<see cref="TopLayerRows"/>, CPU): for AtP and RelP, whose scores at the top layer's other rows are zero whatever
    /// the values; the top layer's tensors there then hold finite values of no meaning.
    /// </summary>
    /// <remarks>
    /// Each paired layer is split as soon as it is computed and freed once the next layer has read its output, so the
    /// paired forward holds one layer of its own at a time (issue 20: the whole paired pass plus two full halves was
    /// most of the activation memory at the 1B shape).
    /// </remarks>
    public static (ForwardPass Clean, ForwardPass Patch) Run(Llama model, TokenBatch clean, TokenBatch patch, IReadOnlyCollection<NodeSite> patchSites, bool logits = true,
        bool lastRowsAtTop = false)
    {
        if (clean.Size != patch.Size || !clean.Lengths.AsSpan().SequenceEqual(patch.Lengths))
            throw new ArgumentException("paired forward: the clean and patch prompts must have equal lengths, prompt by prompt");
        var prompts = new List<int[]>(2 * clean.Size);
        foreach (var b in new[] { clean, patch })
            for (int i = 0; i < b.Size; i++) prompts.Add(b.Tokens.AsSpan(i * b.SeqLen, b.Lengths[i]).ToArray());
        var both = new TokenBatch(prompts);
        model.CheckLength(both);
        if (model.Placement.Devices.All(b => b is IRowViews)) return RunAsViews(model, both, clean, patch, patchSites, logits);
        var shared = SharedPrefix.Of(clean, patch);   // patch rows before their first differing token: the clean rows' values
        int[]? topRows = lastRowsAtTop ? TopLayerRows(both, shared?.Computed.Length ?? both.Rows, model.Config.HiddenDim) : null;

        int layers = model.Config.Layers;
        var cleanLayers = new List<LayerState>(layers);
        var patchLayers = new List<LayerState>(layers);
        Tensor? embedded = null, cleanEmbedded = null, patchEmbedded = null;
        LayerState? paired = null;
        (Tensor FinalInput, Tensor Rstd, Tensor? Logits, int[] Index) head = default;
        try
        {
            embedded = model.Embed(both, null);
            cleanEmbedded = Half(model.Backend, embedded, 0);
            patchEmbedded = Half(model.Backend, embedded, 1);
            Tensor x = embedded, cleanInput = cleanEmbedded, patchInput = patchEmbedded;
            for (int l = 0; l < layers; l++)
            {
                ILayerShortcuts? shortcuts = l == layers - 1 && topRows is not null ? new TopLayerShortcuts(model, l, shared, topRows)
                    : shared is null ? null : new SharedPrefixShortcuts(model, l, shared);
                var s = model.ForwardLayer(l, x, both, null, shortcuts);
                // The layer below (or the embedding) was read by this one: its paired tensors are no longer needed.
                if (paired is null) embedded.Dispose();
                else paired.Dispose();
                paired = s;
                x = s.Output;
                var be = model.LayerBackend(l);
                cleanLayers.Add(Split(be, s, 0, cleanInput, null));
                patchLayers.Add(Split(be, s, 1, patchInput, patchSites));
                cleanInput = cleanLayers[l].Output;
                patchInput = patchLayers[l].Output;
            }
            if (paired is null) embedded.Dispose();
            else paired.Dispose();
            paired = null;
            // The logits of the clean rows from the clean half: the same rows, the same few-row product as in the paired pass.
            head = model.Head(cleanInput, clean, LogitRows.Last, clean.Size, logits);
        }
        catch
        {
            if (paired is null) embedded?.Dispose();
            else paired.Dispose();
            cleanEmbedded?.Dispose(); patchEmbedded?.Dispose();
            foreach (var s in cleanLayers.Concat(patchLayers)) s.Dispose();
            throw;
        }
        var cleanPass = new ForwardPass(model, clean, cleanEmbedded, cleanLayers.ToArray(), head.FinalInput, head.Rstd,
            head.Logits, LogitRows.Last, head.Index);
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
            GatherRows(be, t, index, h);
            return h;
        }

        // The clean (0) or patch (1) half of a layer: every tensor, or (sites given) only the site values asked for.
        static LayerState Split(IBackend be, LayerState s, int which, Tensor input, IReadOnlyCollection<NodeSite>? sites)
        {
            var parts = new List<Tensor>();
            Tensor H(Tensor t, NodeSite? site = null)
            {
                if (sites is not null && (site is not { } n || !sites.Contains(n))) return NotKept;
                var h = Half(be, t, which);
                parts.Add(h);
                return h;
            }
            try
            {
                return new LayerState
                {
                    Input = input,
                    AttnNormed = H(s.AttnNormed), AttnRstd = H(s.AttnRstd), Q = H(s.Q), K = H(s.K), V = H(s.V), Lse = H(s.Lse),
                    RawZ = s.RawZ is null || sites is not null ? null : H(s.RawZ), Z = H(s.Z, NodeSite.AttnZ), AttnOut = H(s.AttnOut, NodeSite.Attn),
                    Mid = H(s.Mid), FfnNormed = H(s.FfnNormed), FfnRstd = H(s.FfnRstd), Gate = H(s.Gate), Up = H(s.Up),
                    Act = H(s.Act, NodeSite.MlpAct), MlpOut = H(s.MlpOut, NodeSite.MlpOut), Output = H(s.Output, NodeSite.Resid),
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
