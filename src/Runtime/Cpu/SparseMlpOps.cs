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
        long work = (long)groupKept[^1] * dim;
        Parallel.For(0, groups, new ParallelOptions { MaxDegreeOfParallelism = work < 1 << 16 ? 1 : -1 }, g =>
        {
            for (int j = groupKept[g]; j < groupKept[g + 1]; j++)
            {
                int i = kept[j];
                var wg = gate.AsSpan(i * dim, dim);
                var wu = up.AsSpan(i * dim, dim);
                var wd = downT.AsSpan(i * dim, dim);
                for (int q = groupRows[g]; q < groupRows[g + 1]; q++)
                {
                    int r = rowsOfGroups[q];
                    var xr = x.AsSpan(r * dim, dim);
                    float a = Dot(xr, wg), u = Dot(xr, wu);
                    float act = a / (1f + MathF.Exp(-a)) * u;
                    Axpy(act - means[meanRow[r] * hidden + i], wd, output.AsSpan(r * dim, dim));
                }
            }
        });
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
        long work = (long)groupKept[^1] * inDim;
        Parallel.For(0, groups, new ParallelOptions { MaxDegreeOfParallelism = work < 1 << 16 ? 1 : -1 }, g =>
        {
            for (int q = groupKept[g]; q < groupKept[g + 1]; q++)
            {
                int j = kept[q];
                var wj = weight.AsSpan(j * inDim, inDim);
                for (int t = groupRows[g]; t < groupRows[g + 1]; t++)
                {
                    int r = rowsOfGroups[t];
                    output[(long)r * outDim + j] = Dot(x.AsSpan(r * inDim, inDim), wj);
                }
            }
        });
    }

    /// <summary>C[p] = W_down · mean[p] for every mean row, accumulated in double (computed once per sweep and layer).</summary>
    public static float[] Constants(float[] down, float[] means, int dim, int hidden)
    {
        int meanRows = means.Length / hidden;
        var c = new float[meanRows * dim];
        Parallel.For(0, meanRows, p =>
        {
            var m = means.AsSpan(p * hidden, hidden);
            for (int j = 0; j < dim; j++)
            {
                var w = down.AsSpan(j * hidden, hidden);
                double s = 0;
                for (int i = 0; i < hidden; i++) s += (double)w[i] * m[i];
                c[p * dim + j] = (float)s;
            }
        });
        return c;
    }

    /// <summary>[rows, cols] → [cols, rows].</summary>
    public static float[] Transpose(float[] a, int rows, int cols)
    {
        var t = new float[a.Length];
        Parallel.For(0, rows, r => { for (int c = 0; c < cols; c++) t[c * rows + r] = a[r * cols + c]; });
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

    static void Axpy(float alpha, ReadOnlySpan<float> x, Span<float> y)
    {
        int n = x.Length, i = 0;
        var va = Vector256.Create(alpha);
        for (; i + 8 <= n; i += 8) Vector256.FusedMultiplyAdd(va, Vector256.Create(x.Slice(i, 8)), Vector256.Create((ReadOnlySpan<float>)y.Slice(i, 8))).CopyTo(y.Slice(i, 8));
        for (; i < n; i++) y[i] += alpha * x[i];
    }
}
