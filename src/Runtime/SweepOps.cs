using System.Runtime.InteropServices;
using NeuronTrace.Runtime.Cpu;

namespace NeuronTrace.Runtime;

/// <summary>
/// The k-sweep's ops over tables that stay on the backend for the whole sweep (issue 18, item 3): the keep bits of a
/// forward are built where it runs from the ranking and k (<see cref="BuildKeepBits"/>), and mean ablation, row gathers
/// and scatters read row tables uploaded once per sweep, where the <see cref="IBackend"/> ops take host spans and upload
/// them per call. <see cref="ReplicaMetric"/> reduces a linear metric per mask on the backend, so a sweep downloads one
/// pair of floats per mask instead of [masks · prompts, vocab] logits per forward.
/// <para>Index tables are tensors whose 4-byte words hold int32 values (<see cref="SweepOps.UploadInts"/>): a tensor is fp32 by
/// type, but these ops only move its words. Their ranges are checked once, on the host, when a table is made (the
/// caller's job: <see cref="SweepOps.CheckRows"/>), not per call; a gather of a row outside the source still writes NaN.</para>
/// </summary>
internal interface ISweepOps
{
    /// <summary>
    /// Keep bits of <paramref name="masks"/> masks for every layer: word w of bits row (l · masks + m) · positions + p
    /// (<see cref="AblationMask.WordsPerRow"/> words a row) holds nodes 32w.. of layer l, position p under mask m, spec
    /// row firstSpec + m of <paramref name="specs"/> [·, 3] = (source, k, invert): source −1 keeps node f (flat index
    /// (l · positions + p) · width + i) when ranks[f] &lt; k (the top-k of a ranking, ranks its inverse order); source s ≥ 0
    /// copies row s of <paramref name="storedBits"/> [·, layers · positions · words]; invert ≠ 0 flips every node. The
    /// unused tail bits of a row's last word are 0, as <see cref="AblationMask.PackRow"/> leaves them.
    /// </summary>
    void BuildKeepBits(Tensor ranks, Tensor storedBits, Tensor specs, int firstSpec, int masks, int layers, int positions, int width, Tensor bits);

    /// <summary>
    /// <see cref="IBackend.MeanAblate"/> of x [rows, W] with the keep bits at mask rows firstMaskRow.. of
    /// <paramref name="bits"/> and the row maps in the first x.Rows entries of <paramref name="keepRow"/> and <paramref name="meanRow"/>.
    /// </summary>
    void MeanAblate(Tensor x, Tensor means, Tensor bits, long firstMaskRow, Tensor keepRow, Tensor meanRow);

    /// <summary>destination[i, :] = source[rows[i], :] for the first destination.Rows entries of <paramref name="rows"/>.</summary>
    void GatherRows(Tensor source, Tensor rows, Tensor destination);

    /// <summary>destination[rows[i], :] += source[i, :] for the first source.Rows entries of <paramref name="rows"/>, i in order.</summary>
    void ScatterAddRows(Tensor source, Tensor rows, Tensor destination);

    /// <summary>
    /// A linear metric per mask: <paramref name="logits"/> [R · B, U] are the logits of the U tokens the metric reads at
    /// the prompts' last rows (replica-major), <paramref name="terms"/> [B, 2 · perRow] example b's (column, weight)
    /// pairs (an int column into U, −1 an empty slot, then a float weight). Example b of replica r has the value
    /// v = Σ_j weight_j · logit_j (j in order, each step one fused multiply-add from 0: Metric.Value's l_c − l_p for a
    /// logit difference, one rounding), and m_r = Σ_b v_b (b in order, fp64) is written as two floats (hi, lo = m_r − hi)
    /// into row firstReplica + r of <paramref name="metric"/> [·, 2].
    /// </summary>
    void ReplicaMetric(Tensor logits, Tensor terms, Tensor metric, int firstReplica);

    /// <summary>Whether the keep-k products read <paramref name="weight"/> as stored (fp32); false: the layer runs dense.</summary>
    bool KeepKReads(Tensor weight);

    /// <summary>
    /// The largest fraction of a product's (row, unit) pairs at which its keep-k form is expected to beat the dense
    /// product on this backend (the sweep planner's default threshold): <paramref name="mlp"/> the keep-k MLP (units:
    /// the hidden neurons, inDim the model width), else kept output columns of W [outDim, inDim].
    /// </summary>
    double KeepKFraction(bool mlp, long rows, int inDim, int outDim);

    /// <summary>A layer's keep-k MLP tables for one sweep: C = W_down · mean, and W_down as the backend's product reads it.</summary>
    KeepKMlp PrepareKeepKMlp(Tensor down, Tensor means);

    /// <summary>
    /// The keep-k MLP of x [rows, dim] (W_gate, W_up [hidden, dim], W_down [dim, hidden], the means [mean rows, hidden]):
    /// row r of group g with mean row p gets C[p] + Σ_{i∈K_g} W_down[:, i] · (silu(x_r·W_gate[i]) · (x_r·W_up[i]) − mean[p, i]),
    /// a real row in no group C[p], a padding row zero (output [rows, dim] overwritten). Equal, up to rounding, to the MLP
    /// with its activations mean-ablated outside K_g.
    /// </summary>
    void SparseMlp(Tensor x, Tensor gate, Tensor up, Tensor down, KeepKMlp tables, Tensor means, KeepKGroups groups, Tensor output);

    /// <summary>y = x·Wᵀ (W [outDim, inDim]) at only the output columns each row's group keeps, zero elsewhere.</summary>
    void KeptOutputs(Tensor x, Tensor weight, KeepKGroups groups, Tensor output);
}

/// <summary>Where <see cref="ISweepOps"/> comes from, and the table helpers.</summary>
internal static class SweepOps
{
    /// <summary>The backend's sweep ops (CPU, CUDA), or null for a backend without them (the sweep then runs plain).</summary>
    public static ISweepOps? Of(IBackend backend) => backend switch
    {
        ISweepOps ops => ops,
        CpuBackend => CpuSweepOps.Instance,
        _ => null,
    };

    /// <summary>An index table: <paramref name="values"/> in the words of a [n] tensor on <paramref name="backend"/>.</summary>
    public static Tensor UploadInts(IBackend backend, ReadOnlySpan<int> values) =>
        backend.Upload(MemoryMarshal.Cast<int, float>(values), values.Length);

    /// <summary>Keep bits as a table: [rows, words] words.</summary>
    public static Tensor UploadBits(IBackend backend, ReadOnlySpan<uint> bits, int words) =>
        backend.Upload(MemoryMarshal.Cast<uint, float>(bits), words == 0 ? 0 : bits.Length / words, words);

    /// <summary>The check a row table gets once, when made: every entry in [−1, limit) (−1: none).</summary>
    public static void CheckRows(ReadOnlySpan<int> rows, int limit, string what)
    {
        foreach (int r in rows)
            if (r < -1 || r >= limit) throw new ArgumentOutOfRangeException(nameof(rows), $"{what}: row {r} outside [−1, {limit})");
    }

    /// <summary>The shape checks both backends make before <see cref="ISweepOps.BuildKeepBits"/>.</summary>
    public static void CheckBuildKeepBits(Tensor ranks, Tensor storedBits, Tensor specs, int firstSpec, int masks, int layers, int positions, int width, Tensor bits)
    {
        int words = AblationMask.WordsPerRow(width);
        if (masks < 0 || layers < 0 || positions < 0 || width < 0) throw new ArgumentException("BuildKeepBits: negative shape");
        if (ranks.Length != (long)layers * positions * width) throw new ArgumentException($"BuildKeepBits: ranks {ranks} are not {layers}·{positions}·{width} nodes");
        if (firstSpec < 0 || specs.Columns != 3 || firstSpec + masks > specs.Rows) throw new ArgumentException($"BuildKeepBits: specs {specs} have no rows {firstSpec}..{firstSpec + masks}");
        if (storedBits.Length % Math.Max(1L, (long)layers * positions * words) != 0) throw new ArgumentException($"BuildKeepBits: stored bits {storedBits} are not rows of {layers}·{positions}·{words} words");
        if (bits.Length != (long)layers * masks * positions * words) throw new ArgumentException($"BuildKeepBits: bits {bits} are not {layers}·{masks}·{positions}·{words} words");
    }

    /// <summary>The shape checks of <see cref="ISweepOps.MeanAblate"/>.</summary>
    public static void CheckMeanAblate(Tensor x, Tensor means, Tensor bits, long firstMaskRow, Tensor keepRow, Tensor meanRow)
    {
        if (means.Columns != x.Columns) throw new ArgumentException($"MeanAblate: means {means} do not have x's width {x.Columns}");
        if (bits.Columns != AblationMask.WordsPerRow(x.Columns) || firstMaskRow < 0 || firstMaskRow > bits.Rows)
            throw new ArgumentException($"MeanAblate: bits {bits} from mask row {firstMaskRow} do not fit width {x.Columns}");
        if (keepRow.Length < x.Rows || meanRow.Length < x.Rows) throw new ArgumentException($"MeanAblate: row maps of {keepRow.Length} and {meanRow.Length} for {x.Rows} rows");
    }

    /// <summary>The shape checks of <see cref="ISweepOps.SparseMlp"/>.</summary>
    public static void CheckSparseMlp(Tensor x, Tensor gate, Tensor up, Tensor down, KeepKMlp tables, Tensor means, KeepKGroups groups, Tensor output)
    {
        int rows = x.Rows, dim = x.Columns, hidden = gate.Rows;
        if (gate.Columns != dim || up.Rows != hidden || up.Columns != dim || down.Rows != dim || down.Columns != hidden)
            throw new ArgumentException($"SparseMlp: weights {gate}, {up}, {down} do not fit x {x}");
        var c = tables.Constants;
        if (c.Columns != dim || means.Columns != hidden || means.Rows != c.Rows || groups.MeanRows > means.Rows)
            throw new ArgumentException($"SparseMlp: constants {c} and means {means} do not fit (groups read {groups.MeanRows} mean rows)");
        if (groups.Rows != rows || groups.Units != hidden || output.Rows != rows || output.Columns != dim)
            throw new ArgumentException($"SparseMlp: groups of {groups.Rows} rows and {groups.Units} units, output {output}, x {x}");
    }

    /// <summary>The shape checks of <see cref="ISweepOps.KeptOutputs"/>.</summary>
    public static void CheckKeptOutputs(Tensor x, Tensor weight, KeepKGroups groups, Tensor output)
    {
        if (weight.Columns != x.Columns || output.Rows != x.Rows || output.Columns != weight.Rows || groups.Rows != x.Rows || groups.Units != weight.Rows)
            throw new ArgumentException($"KeptOutputs: x {x}, weight {weight}, output {output}, groups of {groups.Rows} rows and {groups.Units} units do not fit");
    }

    /// <summary>The shape checks of the two row ops.</summary>
    public static void CheckRowsOp(Tensor compact, Tensor rows, Tensor full, string op)
    {
        if (compact.Columns != full.Columns) throw new ArgumentException($"{op}: {compact} and {full} differ in width");
        if (rows.Length < compact.Rows) throw new ArgumentException($"{op}: {rows.Length} rows for {compact.Rows}");
    }

    /// <summary>The shape checks of <see cref="ISweepOps.ReplicaMetric"/>; returns the replica count.</summary>
    public static int CheckReplicaMetric(Tensor logits, Tensor terms, Tensor metric, int firstReplica)
    {
        int b = terms.Rows;
        if (b == 0 || terms.Columns % 2 != 0 || logits.Rows % b != 0) throw new ArgumentException($"ReplicaMetric: logits {logits} are not replicas of the terms {terms}");
        int r = logits.Rows / b;
        if (metric.Columns != 2 || firstReplica < 0 || firstReplica + r > metric.Rows) throw new ArgumentException($"ReplicaMetric: metric {metric} has no rows {firstReplica}..{firstReplica + r}");
        return r;
    }

    /// <summary>
    /// The terms table of <see cref="ISweepOps.ReplicaMetric"/> from per example (column, weight) pairs, padded with
    /// empty slots to the longest; the columns must be in [0, <paramref name="columns"/>).
    /// </summary>
    public static float[] TermsTable(IReadOnlyList<(int Column, float Weight)[]> terms, int columns, out int perRow)
    {
        perRow = Math.Max(1, terms.Count == 0 ? 1 : terms.Max(t => t.Length));
        var words = new float[2 * perRow * terms.Count];
        var ints = MemoryMarshal.Cast<float, int>(words.AsSpan());
        for (int b = 0; b < terms.Count; b++)
            for (int j = 0; j < perRow; j++)
            {
                int at = 2 * (b * perRow + j);
                if (j >= terms[b].Length) { ints[at] = -1; continue; }
                var (c, w) = terms[b][j];
                if ((uint)c >= (uint)columns) throw new ArgumentOutOfRangeException(nameof(terms), $"ReplicaMetric: term column {c} outside [0, {columns})");
                ints[at] = c;
                words[at + 1] = w;
            }
        return words;
    }
}
