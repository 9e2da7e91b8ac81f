using System.Numerics;

namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// The attribution pass's own ops (native/kernels/score.cu runs the same loops): node-score accumulation from the clean
/// and baseline site values and the gradient, the scaled row gather of the per-position means, and the output layer's
/// backward for a logit gradient with a few non-zeros per row. Each product and sum is rounded on its own, in the
/// order the kernels use, so the two agree bit for bit.
/// </summary>
internal static class ScoreOps
{
    /// <summary>
    /// See <see cref="IBackend.AccumulateScores"/>, over the columns [<paramref name="column0"/>, <paramref name="column1"/>)
    /// of the site (the backend splits wide sites across cores by columns); <paramref name="baseline"/> is empty for the
    /// zero baseline.
    /// </summary>
    public static void Accumulate(ReadOnlySpan<float> clean, ScoreBaselineKind kind, ReadOnlySpan<float> baseline, ReadOnlySpan<float> gradient,
        float scale, ReadOnlySpan<int> positionOf, int width, Span<float> sums, int sumsStride, int firstRow, int firstColumn,
        int column0, int column1)
    {
        int span = column1 - column0;
        for (int r = 0; r < positionOf.Length; r++)
        {
            int row = firstRow + positionOf[r];
            var into = sums.Slice(row * sumsStride + firstColumn + column0, span);
            var c = clean.Slice(r * width + column0, span);
            var g = gradient.Slice(r * width + column0, span);
            ReadOnlySpan<float> b = kind switch
            {
                ScoreBaselineKind.PerRow => baseline.Slice(r * width + column0, span),
                ScoreBaselineKind.PerPosition => baseline.Slice(row * width + column0, span),
                _ => default,
            };
            AddProducts(into, b, c, g, scale);
        }
    }

    /// <summary>into[i] += ((b[i] − c[i]) · g[i]) · scale, b = 0 when empty; SIMD, each operation rounded on its own (the JIT never fuses).</summary>
    static void AddProducts(Span<float> into, ReadOnlySpan<float> b, ReadOnlySpan<float> c, ReadOnlySpan<float> g, float scale)
    {
        int i = 0, n = into.Length;
        if (Vector.IsHardwareAccelerated)
        {
            var vs = new Vector<float>(scale);
            for (; i <= n - Vector<float>.Count; i += Vector<float>.Count)
            {
                var vb = b.IsEmpty ? Vector<float>.Zero : new Vector<float>(b[i..]);
                var product = (vb - new Vector<float>(c[i..])) * new Vector<float>(g[i..]) * vs;
                (new Vector<float>(into[i..]) + product).CopyTo(into[i..]);
            }
        }
        for (; i < n; i++) into[i] += ((b.IsEmpty ? 0f : b[i]) - c[i]) * g[i] * scale;
    }

    /// <summary>See <see cref="IBackend.GatherScaledRows"/>.</summary>
    public static void GatherScaledRows(ReadOnlySpan<float> source, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, int width, Span<float> destination)
    {
        for (int i = 0; i < rows.Length; i++)
        {
            var s = source.Slice(rows[i] * width, width);
            var d = destination.Slice(i * width, width);
            float f = scales[i];
            for (int c = 0; c < width; c++) d[c] = s[c] * f;
        }
    }

    /// <summary>See <see cref="IBackend.SparseMatMulInputGrad"/>; <paramref name="row"/> reads one row of w (widening 16-bit weights).</summary>
    public static void SparseMatMulInputGrad(ReadOnlySpan<int> columns, ReadOnlySpan<float> values, int perRow, int width,
        RowReader row, Span<float> dx)
    {
        var w = new float[width];
        int rows = columns.Length / perRow;
        dx[..(rows * width)].Clear();
        for (int r = 0; r < rows; r++)
        {
            var d = dx.Slice(r * width, width);
            for (int j = 0; j < perRow; j++)
            {
                int col = columns[r * perRow + j];
                if (col < 0) continue;
                row(col, w);
                float v = values[r * perRow + j];
                for (int c = 0; c < width; c++) d[c] = MathF.FusedMultiplyAdd(v, w[c], d[c]);
            }
        }
    }

    /// <summary>Writes row <paramref name="index"/> of a weight matrix into <paramref name="destination"/>.</summary>
    public delegate void RowReader(int index, Span<float> destination);
}
