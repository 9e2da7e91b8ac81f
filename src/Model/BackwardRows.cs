using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Model;

/// <summary>
/// The rows of a batch whose gradients a backward computes when its caller reads only some: for each prompt, the
/// positions from a first one to its last token. A gradient at position t depends only on positions ≥ t of the layers
/// above (causal attention; every other op works row by row), so these rows' gradients are exact without the others.
/// The others (each prompt's earlier positions and its padding) stay out of the input-gradient products, which are
/// most of a backward's time, and read zero at every site.
/// </summary>
/// <remarks>
/// Attribution patching needs no more (issue 20): before the first token where a clean and a patch prompt differ, the
/// two runs' site values are the same bit for bit, so every score there is zero whatever its gradient. In the 1B
/// benchmark's pairs, which differ at the middle position, that leaves half the backward's rows out. On the CPU backend
/// only, and only where the compact and the full row counts take the same product kernel: each computed row's sums
/// are then those of the full backward, bit for bit (<see cref="Gemm.SameRowArithmetic(int, int, bool)"/>).
/// </remarks>
internal sealed class BackwardRows
{
    BackwardRows(int[] computed, int totalRows) { Computed = computed; TotalRows = totalRows; }

    /// <summary>The computed rows, ascending.</summary>
    public int[] Computed { get; }
    /// <summary>The batch's rows.</summary>
    public int TotalRows { get; }

    /// <summary>
    /// Rows firstPosition[b] .. last token of each prompt b of <paramref name="batch"/> (a first position at or past the
    /// prompt's length leaves the whole prompt out); null when that is every row.
    /// </summary>
    public static BackwardRows? From(TokenBatch batch, ReadOnlySpan<int> firstPosition)
    {
        if (firstPosition.Length != batch.Size) throw new ArgumentException($"{firstPosition.Length} first positions for {batch.Size} prompts");
        var computed = new List<int>(batch.Rows);
        for (int b = 0; b < batch.Size; b++)
        {
            if (firstPosition[b] < 0) throw new ArgumentOutOfRangeException(nameof(firstPosition), $"prompt {b}: first position {firstPosition[b]}");
            for (int t = firstPosition[b]; t < batch.Lengths[b]; t++) computed.Add(b * batch.SeqLen + t);
        }
        return computed.Count == batch.Rows ? null : new BackwardRows(computed.ToArray(), batch.Rows);
    }

    /// <summary>
    /// For each prompt pair, the first position where the clean and patch tokens differ (the length when they do not):
    /// the rows from there on are the only ones where a patch score can be non-zero.
    /// </summary>
    public static int[] FirstDifferences(IReadOnlyList<int[]> clean, IReadOnlyList<int[]> patch)
    {
        if (clean.Count != patch.Count) throw new ArgumentException($"{clean.Count} clean prompts, {patch.Count} patch prompts");
        var first = new int[clean.Count];
        for (int b = 0; b < clean.Count; b++)
        {
            int n = Math.Min(clean[b].Length, patch[b].Length), t = 0;
            while (t < n && clean[b][t] == patch[b][t]) t++;
            first[b] = t;
        }
        return first;
    }

    /// <summary>
    /// The top layer's rows for its MLP and W_o products: only the logit rows (<paramref name="logitRows"/>) carry a
    /// gradient there, since the residual gradient starts at them and both products are row by row. Other computed
    /// rows are added (their operands are zero, so are their results) until the product keeps the full backward's
    /// arithmetic; these rows themselves when that takes all of them.
    /// </summary>
    public BackwardRows TopLayer(ReadOnlySpan<int> logitRows)
    {
        var keep = new HashSet<int>(logitRows.ToArray());
        var rows = Computed.Where(keep.Contains).ToList();
        foreach (int r in Computed)
        {
            if (Gemm.SameRowArithmetic(rows.Count, TotalRows, transposedB: false)) break;
            if (!keep.Contains(r)) rows.Add(r);
        }
        if (rows.Count >= Computed.Length || !Gemm.SameRowArithmetic(rows.Count, TotalRows, transposedB: false)) return this;
        rows.Sort();
        return new BackwardRows(rows.ToArray(), TotalRows);
    }

    /// <summary>
    /// Whether a backward of <paramref name="model"/> leaves these rows out: every layer on the CPU backend, and the
    /// input-gradient products computing each row the same way at the compact and the full row count.
    /// </summary>
    public bool AppliesTo(Llama model) =>
        model.Placement.Devices.All(b => b is CpuBackend) && Gemm.SameRowArithmetic(Computed.Length, TotalRows, transposedB: false);

    /// <summary>
    /// dx = Σ dys[i] · ws[i] (<see cref="IBackend.MatMulInputGradSum"/>) at the computed rows: their operand rows gathered
    /// into <paramref name="compactDys"/>, the product into <paramref name="compactDx"/>, its rows copied back. dx's other
    /// rows are not written (the backward keeps them zero).
    /// </summary>
    public void InputGradient(IBackend be, ReadOnlySpan<Tensor> dys, ReadOnlySpan<Tensor> ws, Tensor dx,
        ReadOnlySpan<Tensor> compactDys, Tensor compactDx)
    {
        for (int i = 0; i < dys.Length; i++) PairedForward.GatherRows(be, dys[i], Computed, compactDys[i]);
        if (dys.Length == 1) be.MatMulInputGrad(compactDys[0], ws[0], compactDx, false);
        else be.MatMulInputGradSum(compactDys, ws, compactDx);
        if (dx.Rows != TotalRows) throw new ArgumentException($"input gradient of {dx.Rows} rows for a {TotalRows}-row batch");
        PairedForward.ScatterRows(compactDx, Computed, dx);
    }

    /// <summary>Zeroes every row of <paramref name="t"/> ([rows, width], a CPU tensor) that is not computed.</summary>
    public void ClearOthers(Tensor t)
    {
        var data = Host(t);
        int width = t.Columns, next = 0;
        for (int r = 0; r < TotalRows; r++)
        {
            if (next < Computed.Length && Computed[next] == r) { next++; continue; }
            Array.Clear(data, r * width, width);
        }
    }

    static float[] Host(Tensor t) => t is CpuTensor c ? c.Data : throw new ArgumentException($"{t} is not a CPU tensor");
}
