using System.Runtime.Intrinsics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// The MLP of a mean-ablated sweep row that keeps only a few neurons (docs/streaming-attention.md, "sweep shortcuts").
/// A mean-ablated neuron i adds the constant mean_i · W_down[:, i], so for the kept set K of a row
/// <code>  out = C[p] + Σ_{i∈K} W_down[:, i] · (silu(x·W_gate[i]) · (x·W_up[i]) − mean[p, i]),   C[p] = W_down · mean[p]</code>
/// with gate and up computed only for the rows in K: 3·|K|·dim multiply-adds instead of 3·hidden·dim. Exact up to
/// rounding against the dense forward with the ablation applied to the activations. <see cref="KeptOutputs"/> is the
/// same idea for a site that is the product's output (only the kept columns are computed).
/// </summary>
internal static class SparseMlpOps
{
    /// <param name="x">[rows, dim] the normed MLP input.</param>
    /// <param name="gate">W_gate [hidden, dim].</param>
    /// <param name="up">W_up [hidden, dim].</param>
    /// <param name="downT">W_down transposed, [hidden, dim] (row i = column i of W_down, contiguous).</param>
    /// <param name="constant">C, [mean rows, dim].</param>
    /// <param name="means">[mean rows, hidden].</param>
    /// <param name="rows">Rows of <paramref name="x"/> and <paramref name="output"/> (the sweep's forwards × tokens, padding included).</param>
    /// <param name="dim">The model width (the MLP's input and output channels).</param>
    /// <param name="hidden">The MLP's hidden width (neurons per layer).</param>
    /// <param name="meanRow">Per row: its mean row, or −1 for a padding row (its output is set to zero: no real row reads it).</param>
    /// <param name="groupKept">[groups + 1] offsets into <paramref name="kept"/>: group g keeps kept[groupKept[g] .. groupKept[g+1]).</param>
    /// <param name="kept">The kept neurons of all groups, each in [0, <paramref name="hidden"/>), group after group.</param>
    /// <param name="groupRows">[groups + 1] offsets into <paramref name="rowsOfGroups"/>: the rows sharing group g's kept set
    /// (a mask at one position: the examples of a replica), so each weight row read serves all of them.</param>
    /// <param name="rowsOfGroups">The rows of all groups, group after group; each a real row (mean row ≥ 0).</param>
    /// <param name="output">[rows, dim], overwritten; a real row in no group gets C.</param>
    public static void Apply(float[] x, float[] gate, float[] up, float[] downT, float[] constant, float[] means, int rows, int dim, int hidden,
        int[] meanRow, int[] groupKept, int[] kept, int[] groupRows, int[] rowsOfGroups, float[] output)
    {
        if (x.Length < (long)rows * dim || output.Length < (long)rows * dim) throw new ArgumentException("SparseMlp: x or output is not [rows, dim]");
        if (gate.Length != (long)hidden * dim || up.Length != gate.Length || downT.Length != gate.Length)
            throw new ArgumentException("SparseMlp: weights are not [hidden, dim]");
        int meanRows = constant.Length / Math.Max(1, dim), groups = groupKept.Length - 1;
        if (meanRow.Length != rows || groupRows.Length != groupKept.Length || groups < 0) throw new ArgumentException("SparseMlp: row or group tables have the wrong length");
        if (means.Length != (long)meanRows * hidden) throw new ArgumentException("SparseMlp: means and constants differ in rows");
        for (int r = 0; r < rows; r++)
            if (meanRow[r] >= meanRows) throw new ArgumentOutOfRangeException(nameof(meanRow), $"SparseMlp: mean row {meanRow[r]} outside [0, {meanRows})");
        for (int g = 0; g < groups; g++)
            if (groupKept[g] > groupKept[g + 1] || groupRows[g] > groupRows[g + 1]) throw new ArgumentException("SparseMlp: group offsets decrease");
        if (groupKept[^1] > kept.Length || groupRows[^1] > rowsOfGroups.Length) throw new ArgumentException("SparseMlp: group offsets run past their tables");
        foreach (int i in kept)
            if ((uint)i >= (uint)hidden) throw new ArgumentOutOfRangeException(nameof(kept), $"SparseMlp: neuron {i} outside [0, {hidden})");
        foreach (int r in rowsOfGroups)
            if ((uint)r >= (uint)rows || meanRow[r] < 0) throw new ArgumentOutOfRangeException(nameof(rowsOfGroups), $"SparseMlp: group row {r} is not a real row");

        for (int r = 0; r < rows; r++)
        {
            var o = output.AsSpan(r * dim, dim);
            if (meanRow[r] < 0) o.Clear(); else constant.AsSpan(meanRow[r] * dim, dim).CopyTo(o);
        }
        // Neuron-major: each kept neuron's three weight rows are read once for every row of the call that keeps it (across
        // all groups, i.e. all masks and positions of a forward), not once per group; the weights do not fit in cache, the
        // rows do. Phase 1 (parallel over neurons): the scaled activation of each (neuron, row) pair. Phase 2 (parallel over
        // column slices, so no two threads write one element): out[r] += d · W_down[:, i] over the pairs, neuron after
        // neuron, which for kept sets listed in ascending order is the order the per-group loop added them in.
        var (pairStart, pairRow) = ByUnit(hidden, groupKept, kept, groupRows, rowsOfGroups);
        int pairs = pairStart[hidden];
        if (pairs == 0) return;
        var d = new float[pairs];
        long work = (long)pairs * dim;
        int threads = work < 1 << 16 ? 1 : -1;
        Parallel.For(0, hidden, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
        {
            if (pairStart[i] == pairStart[i + 1]) return;
            var wg = gate.AsSpan(i * dim, dim);
            var wu = up.AsSpan(i * dim, dim);
            for (int q = pairStart[i]; q < pairStart[i + 1]; q++)
            {
                int r = pairRow[q];
                var (a, u) = Dot2(x.AsSpan(r * dim, dim), wg, wu);
                d[q] = a / (1f + MathF.Exp(-a)) * u - means[meanRow[r] * hidden + i];
            }
        });
        int slice = ColumnSlice(dim);
        Parallel.For(0, (dim + slice - 1) / slice, new ParallelOptions { MaxDegreeOfParallelism = threads }, s =>
        {
            int c0 = s * slice, n = Math.Min(slice, dim - c0);
            for (int i = 0; i < hidden; i++)
            {
                if (pairStart[i] == pairStart[i + 1]) continue;
                var wd = downT.AsSpan(i * dim + c0, n);
                for (int q = pairStart[i]; q < pairStart[i + 1]; q++)
                    Axpy(d[q], wd, output.AsSpan(pairRow[q] * dim + c0, n));
            }
        });
    }

    // Columns per slice of phase 2: whole cache lines, about four slices per core.
    static int ColumnSlice(int dim) => Math.Max(64, (dim / (4 * Environment.ProcessorCount) + 15) / 16 * 16);

    /// <summary>
    /// The (unit, row) pairs of a keep-k call grouped by unit: unit i's rows are pairRow[pairStart[i] .. pairStart[i+1]),
    /// in group order (a row kept twice by its groups appears twice, as the per-group sum adds it twice).
    /// </summary>
    static (int[] PairStart, int[] PairRow) ByUnit(int units, int[] groupKept, int[] kept, int[] groupRows, int[] rowsOfGroups)
    {
        var start = new int[units + 1];
        int groups = groupKept.Length - 1;
        for (int g = 0; g < groups; g++)
        {
            int n = groupRows[g + 1] - groupRows[g];
            for (int j = groupKept[g]; j < groupKept[g + 1]; j++) start[kept[j] + 1] += n;
        }
        for (int i = 0; i < units; i++) start[i + 1] += start[i];
        var next = start[..units];
        var row = new int[start[units]];
        for (int g = 0; g < groups; g++)
            for (int j = groupKept[g]; j < groupKept[g + 1]; j++)
            {
                int i = kept[j];
                for (int q = groupRows[g]; q < groupRows[g + 1]; q++) row[next[i]++] = rowsOfGroups[q];
            }
        return (start, row);
    }

    /// <summary>
    /// The product y = x·Wᵀ at only the output columns each row group keeps: a mean-ablated output column (mlp_out or
    /// resid after W_down, attn after W_o) is overwritten by its mean, so it need not be computed. |K|·inDim
    /// multiply-adds per row instead of outDim·inDim. Every other entry of <paramref name="output"/> is set to zero.
    /// </summary>
    /// <param name="x">[rows, inDim].</param>
    /// <param name="weight">W [outDim, inDim] (row j gives output column j).</param>
    /// <param name="rows">Rows of <paramref name="x"/> and <paramref name="output"/>.</param>
    /// <param name="inDim">The product's input width.</param>
    /// <param name="outDim">The product's output width (columns of <paramref name="output"/>).</param>
    /// <param name="groupKept">[groups + 1] offsets into <paramref name="kept"/> (output columns, each below outDim).</param>
    /// <param name="kept">The kept output columns of all groups, each in [0, <paramref name="outDim"/>), group after group.</param>
    /// <param name="groupRows">[groups + 1] offsets into <paramref name="rowsOfGroups"/>; a row is in at most one group.</param>
    /// <param name="rowsOfGroups">The rows of all groups, group after group, each in [0, <paramref name="rows"/>).</param>
    /// <param name="output">[rows, outDim], overwritten: the kept columns computed, every other entry zero.</param>
    public static void KeptOutputs(float[] x, float[] weight, int rows, int inDim, int outDim,
        int[] groupKept, int[] kept, int[] groupRows, int[] rowsOfGroups, float[] output)
    {
        if (x.Length < (long)rows * inDim || output.Length < (long)rows * outDim) throw new ArgumentException("KeptOutputs: x or output is too short for its rows");
        if (weight.Length != (long)outDim * inDim) throw new ArgumentException("KeptOutputs: weight is not [outDim, inDim]");
        int groups = groupKept.Length - 1;
        if (groups < 0 || groupRows.Length != groupKept.Length) throw new ArgumentException("KeptOutputs: group tables have the wrong length");
        for (int g = 0; g < groups; g++)
            if (groupKept[g] > groupKept[g + 1] || groupRows[g] > groupRows[g + 1]) throw new ArgumentException("KeptOutputs: group offsets decrease");
        if (groupKept[0] != 0 || groupRows[0] != 0 || groupKept[^1] > kept.Length || groupRows[^1] > rowsOfGroups.Length)
            throw new ArgumentException("KeptOutputs: group offsets run outside their tables");
        foreach (int j in kept)
            if ((uint)j >= (uint)outDim) throw new ArgumentOutOfRangeException(nameof(kept), $"KeptOutputs: column {j} outside [0, {outDim})");
        var seen = new bool[rows];
        foreach (int r in rowsOfGroups)
        {
            if ((uint)r >= (uint)rows) throw new ArgumentOutOfRangeException(nameof(rowsOfGroups), $"KeptOutputs: row {r} outside [0, {rows})");
            if (seen[r]) throw new ArgumentException($"KeptOutputs: row {r} is in two groups");   // parallel groups must not share a row
            seen[r] = true;
        }

        output.AsSpan(0, rows * outDim).Clear();
        // Column-major, as SparseMlp is neuron-major: each kept weight row is read once for all the rows that keep it.
        var (pairStart, pairRow) = ByUnit(outDim, groupKept, kept, groupRows, rowsOfGroups);
        long work = (long)pairStart[outDim] * inDim;
        Parallel.For(0, outDim, new ParallelOptions { MaxDegreeOfParallelism = work < 1 << 16 ? 1 : -1 }, j =>
        {
            var wj = weight.AsSpan(j * inDim, inDim);
            for (int q = pairStart[j]; q < pairStart[j + 1]; q++)
            {
                int r = pairRow[q];
                output[(long)r * outDim + j] = Dot(x.AsSpan(r * inDim, inDim), wj);
            }
        });
    }

    /// <summary>
    /// C[p] = W_down · mean[p] for every mean row, accumulated in double (computed once per sweep and layer). Row-major
    /// over W_down: each weight row is read once for every mean row (the means fit in cache, W_down does not), in four
    /// double lanes per vector; the lanes' sums are added in a fixed order, so the result does not depend on threading.
    /// </summary>
    public static float[] Constants(float[] down, float[] means, int dim, int hidden)
    {
        int meanRows = means.Length / hidden;
        var c = new float[meanRows * dim];
        Parallel.For(0, dim, j =>
        {
            var w = down.AsSpan(j * hidden, hidden);
            for (int p = 0; p < meanRows; p++) c[p * dim + j] = (float)DotDouble(w, means.AsSpan(p * hidden, hidden));
        });
        return c;
    }

    // Σ a[i]·b[i] in double: products of the widened floats (exact in double), summed in eight lanes.
    static double DotDouble(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int n = a.Length, i = 0;
        var s0 = Vector256<double>.Zero; var s1 = Vector256<double>.Zero;
        for (; i + 8 <= n; i += 8)
        {
            var (alo, ahi) = Vector256.Widen(Vector256.Create(a.Slice(i, 8)));
            var (blo, bhi) = Vector256.Widen(Vector256.Create(b.Slice(i, 8)));
            s0 += alo * blo;
            s1 += ahi * bhi;
        }
        double s = Vector256.Sum(s0 + s1);
        for (; i < n; i++) s += (double)a[i] * b[i];
        return s;
    }

    /// <summary>[rows, cols] → [cols, rows], in 32×32 tiles (a row-by-row copy writes one cache line per element).</summary>
    public static float[] Transpose(float[] a, int rows, int cols)
    {
        const int Tile = 32;
        var t = new float[a.Length];
        int rowTiles = (rows + Tile - 1) / Tile;
        Parallel.For(0, rowTiles, rt =>
        {
            int r0 = rt * Tile, r1 = Math.Min(rows, r0 + Tile);
            for (int c0 = 0; c0 < cols; c0 += Tile)
            {
                int c1 = Math.Min(cols, c0 + Tile);
                for (int c = c0; c < c1; c++)
                    for (int r = r0; r < r1; r++) t[(long)c * rows + r] = a[(long)r * cols + c];
            }
        });
        return t;
    }

    static float Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        int n = a.Length, i = 0;
        var acc0 = Vector256<float>.Zero; var acc1 = Vector256<float>.Zero;
        for (; i + 16 <= n; i += 16)
        {
            acc0 = Vector256.FusedMultiplyAdd(Vector256.Create(a.Slice(i, 8)), Vector256.Create(b.Slice(i, 8)), acc0);
            acc1 = Vector256.FusedMultiplyAdd(Vector256.Create(a.Slice(i + 8, 8)), Vector256.Create(b.Slice(i + 8, 8)), acc1);
        }
        for (; i + 8 <= n; i += 8) acc0 = Vector256.FusedMultiplyAdd(Vector256.Create(a.Slice(i, 8)), Vector256.Create(b.Slice(i, 8)), acc0);
        float s = Vector256.Sum(acc0 + acc1);
        for (; i < n; i++) s += a[i] * b[i];
        return s;
    }

    // Two dot products of one vector, as Dot computes each (same lanes, same order), in one pass over a.
    static (float, float) Dot2(ReadOnlySpan<float> a, ReadOnlySpan<float> b, ReadOnlySpan<float> c)
    {
        int n = a.Length, i = 0;
        var b0 = Vector256<float>.Zero; var b1 = Vector256<float>.Zero;
        var c0 = Vector256<float>.Zero; var c1 = Vector256<float>.Zero;
        for (; i + 16 <= n; i += 16)
        {
            var a0 = Vector256.Create(a.Slice(i, 8)); var a1 = Vector256.Create(a.Slice(i + 8, 8));
            b0 = Vector256.FusedMultiplyAdd(a0, Vector256.Create(b.Slice(i, 8)), b0);
            b1 = Vector256.FusedMultiplyAdd(a1, Vector256.Create(b.Slice(i + 8, 8)), b1);
            c0 = Vector256.FusedMultiplyAdd(a0, Vector256.Create(c.Slice(i, 8)), c0);
            c1 = Vector256.FusedMultiplyAdd(a1, Vector256.Create(c.Slice(i + 8, 8)), c1);
        }
        for (; i + 8 <= n; i += 8)
        {
            var a0 = Vector256.Create(a.Slice(i, 8));
            b0 = Vector256.FusedMultiplyAdd(a0, Vector256.Create(b.Slice(i, 8)), b0);
            c0 = Vector256.FusedMultiplyAdd(a0, Vector256.Create(c.Slice(i, 8)), c0);
        }
        float sb = Vector256.Sum(b0 + b1), sc = Vector256.Sum(c0 + c1);
        for (; i < n; i++) { sb += a[i] * b[i]; sc += a[i] * c[i]; }
        return (sb, sc);
    }

    static void Axpy(float alpha, ReadOnlySpan<float> x, Span<float> y)
    {
        int n = x.Length, i = 0;
        var va = Vector256.Create(alpha);
        for (; i + 8 <= n; i += 8) Vector256.FusedMultiplyAdd(va, Vector256.Create(x.Slice(i, 8)), Vector256.Create((ReadOnlySpan<float>)y.Slice(i, 8))).CopyTo(y.Slice(i, 8));
        for (; i < n; i++) y[i] += alpha * x[i];
    }
}
