namespace NeuronTrace.Runtime;

/// <summary>
/// The shape, index and rule checks of the <see cref="IBackend"/> ops, in one place: every backend calls the check of
/// an op before touching memory, so a bad call fails the same way (one line naming the op and the tensor) whichever
/// backend runs it. A GPU kernel cannot throw, so without these a bad shape would read or write out of bounds.
/// Each check returns nothing or the op's decoded rule; the ops' semantics are documented on <see cref="IBackend"/>.
/// </summary>
internal static class OpContracts
{
    public static void Upload(int valueCount, int[] shape)
    {
        long n = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"negative dimension in shape [{string.Join(", ", shape)}]");
            n = checked(n * d);
        }
        if (valueCount != n) throw new ArgumentException($"upload of {valueCount} values into shape [{string.Join(", ", shape)}]");
    }

    public static void Download(Tensor source, int destinationLength)
    {
        if (destinationLength < source.Length) throw new ArgumentException($"download of {source} into {destinationLength} values");
    }

    public static void Copy(Tensor source, Tensor destination)
    {
        if (destination.Length < source.Length) throw new ArgumentException($"copy of {source} into {destination}");
    }

    /// <summary>x [rows, k] · w [n, k]ᵀ → y [rows, n].</summary>
    public static void MatMul(Tensor x, Tensor w, Tensor y)
    {
        int n = w.Shape[0], k = w.Columns;
        Columns(x, k, "MatMul x");
        Columns(y, n, "MatMul y");
        Rows(y, x.Rows, "MatMul y");
    }

    /// <summary>dy [rows, n] · w [n, k] → dx [rows, k].</summary>
    public static void MatMulInputGrad(Tensor dy, Tensor w, Tensor dx)
    {
        int n = w.Shape[0], k = w.Columns;
        Columns(dy, n, "MatMulInputGrad dy");
        Columns(dx, k, "MatMulInputGrad dx");
        Rows(dx, dy.Rows, "MatMulInputGrad dx");
    }

    public static void Embedding(ReadOnlySpan<int> tokens, Tensor table, Tensor output)
    {
        int dim = table.Columns, vocab = table.Rows;
        foreach (int id in tokens)
            if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), $"token id {id} outside vocabulary of {vocab}");
        if (output.Length < (long)tokens.Length * dim) throw new ArgumentException($"embedding of {tokens.Length} tokens × {dim} into {output}");
    }

    public static void RmsNorm(Tensor x, Tensor weight, Tensor y, Tensor rstd)
    {
        Length(weight, x.Columns, "RmsNorm weight");
        Length(y, x.Length, "RmsNorm y");
        Length(rstd, x.Rows, "RmsNorm rstd");
    }

    /// <returns>Whether the rule is the exact gradient (else the frozen scale).</returns>
    public static bool RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, NormRule rule, Tensor dx)
    {
        Length(dy, x.Length, "RmsNormBackward dy");
        Length(dx, x.Length, "RmsNormBackward dx");
        Length(weight, x.Columns, "RmsNormBackward weight");
        Length(rstd, x.Rows, "RmsNormBackward rstd");
        return rule switch
        {
            NormRule.Exact => true,
            NormRule.FrozenScale => false,
            _ => throw new ArgumentOutOfRangeException(nameof(rule)),
        };
    }

    /// <returns>The head dimension.</returns>
    public static int Rope(Tensor x, int heads, int seqLen, Tensor cos, Tensor sin)
    {
        if (heads <= 0 || x.Columns % heads != 0) throw new ArgumentException($"Rope: {x} does not split into {heads} heads");
        int headDim = x.Columns / heads, half = headDim / 2;
        if (headDim % 2 != 0) throw new ArgumentException($"Rope: head dim {headDim} is odd");
        if (seqLen <= 0) throw new ArgumentOutOfRangeException(nameof(seqLen));
        if (cos.Length < (long)seqLen * half || sin.Length < (long)seqLen * half)
            throw new ArgumentException($"Rope: cos/sin need [{seqLen}, {half}], got {cos} and {sin}");
        return headDim;
    }

    public static void Attention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor probs)
    {
        AttentionOperands(shape, q, k, v, probs);
        Length(z, (long)shape.Rows * shape.QWidth, "Attention z");
    }

    /// <returns>Whether the rule is the exact gradient (else the frozen pattern).</returns>
    public static bool AttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor probs, AttentionShape shape, AttentionRule rule,
        Tensor dq, Tensor dk, Tensor dv)
    {
        AttentionOperands(shape, q, k, v, probs);
        Length(dz, q.Length, "AttentionBackward dz");
        Length(dq, q.Length, "AttentionBackward dq");
        Length(dk, k.Length, "AttentionBackward dk");
        Length(dv, v.Length, "AttentionBackward dv");
        return IsExact(rule);
    }

    public static void StreamingAttention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor lse)
    {
        StreamingOperands(shape, q, k, v, lse);
        Length(z, (long)shape.Rows * shape.QWidth, "StreamingAttention z");
    }

    /// <returns>Whether the rule is the exact gradient (else the frozen pattern).</returns>
    public static bool StreamingAttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape,
        AttentionRule rule, Tensor dq, Tensor dk, Tensor dv)
    {
        StreamingOperands(shape, q, k, v, lse);
        Length(dz, q.Length, "StreamingAttentionBackward dz");
        Length(o, q.Length, "StreamingAttentionBackward o");
        Length(dq, q.Length, "StreamingAttentionBackward dq");
        Length(dk, k.Length, "StreamingAttentionBackward dk");
        Length(dv, v.Length, "StreamingAttentionBackward dv");
        return IsExact(rule);
    }

    /// <summary>A valid GQA shape, and q, k, v and the per-row log-sum-exp [B, H, T] of the lengths it implies.</summary>
    static void StreamingOperands(AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor lse)
    {
        ValidShape(s);
        Length(q, (long)s.Rows * s.QWidth, "attention q");
        Length(k, (long)s.Rows * s.KvWidth, "attention k");
        Length(v, (long)s.Rows * s.KvWidth, "attention v");
        Length(lse, (long)s.Batch * s.Heads * s.SeqLen, "attention lse");
    }

    /// <summary>Whether an attention rule is the exact gradient (true) or the frozen pattern (false).</summary>
    static bool IsExact(AttentionRule rule) => rule switch
    {
        AttentionRule.Gradient => true,
        AttentionRule.FreezePattern => false,
        _ => throw new ArgumentOutOfRangeException(nameof(rule)),
    };

    static void ValidShape(AttentionShape s)
    {
        if (s.Batch < 0 || s.SeqLen < 0 || s.Heads < 0 || s.KvHeads <= 0 || s.HeadDim <= 0 || s.Heads % s.KvHeads != 0)
            throw new ArgumentException($"attention shape {s} is not a valid GQA shape");
    }

    /// <summary>A valid GQA shape, and q, k, v, probs of the lengths it implies.</summary>
    public static void AttentionOperands(AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor probs)
    {
        ValidShape(s);
        Length(q, (long)s.Rows * s.QWidth, "attention q");
        Length(k, (long)s.Rows * s.KvWidth, "attention k");
        Length(v, (long)s.Rows * s.KvWidth, "attention v");
        Length(probs, (long)s.Batch * s.Heads * s.SeqLen * s.SeqLen, "attention probs");
    }

    public static void SwiGlu(Tensor gate, Tensor up, Tensor h)
    {
        Length(gate, h.Length, "SwiGlu gate");
        Length(up, h.Length, "SwiGlu up");
    }

    public static void SwiGluBackward(Tensor dh, Tensor gate, Tensor up, GateRule rule, Tensor dgate, Tensor dup)
    {
        long n = dh.Length;
        Length(gate, n, "SwiGluBackward gate");
        Length(up, n, "SwiGluBackward up");
        Length(dgate, n, "SwiGluBackward dgate");
        Length(dup, n, "SwiGluBackward dup");
        if (!Enum.IsDefined(rule)) throw new ArgumentOutOfRangeException(nameof(rule));
    }

    public static void Add(Tensor destination, Tensor source) => Length(source, destination.Length, "Add source");

    public static void Intervene(Tensor x, Tensor scale, Tensor offset)
    {
        Length(scale, x.Length, "Intervene scale");
        Length(offset, x.Length, "Intervene offset");
    }

    public static void MeanAblate(Tensor x, Tensor means, ReadOnlySpan<uint> keepBits, ReadOnlySpan<int> keepRow, ReadOnlySpan<int> meanRow) =>
        AblationMask.Check(x, means, keepBits, keepRow, meanRow);

    public static void Multiply(Tensor x, Tensor scale) => Length(scale, x.Length, "Multiply scale");

    public static void GatherRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        int width = source.Columns;
        Indices(rows, source.Rows, "GatherRows");
        if (destination.Length < (long)rows.Length * width) throw new ArgumentException($"GatherRows: {rows.Length} rows of {width} into {destination}");
    }

    /// <returns>The destination's row count (its length over the source's width); 0 when nothing is added.</returns>
    public static int ScatterAddRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        int width = source.Columns;
        if (width == 0 || rows.Length == 0) return 0;
        int destinationRows = checked((int)(destination.Length / width));
        Indices(rows, destinationRows, "ScatterAddRows");
        if (source.Length < (long)rows.Length * width) throw new ArgumentException($"ScatterAddRows: {rows.Length} rows of {width} from {source}");
        return destinationRows;
    }

    /// <summary>Checks <see cref="IBackend.AccumulateScores"/> and returns the number of score rows (max position + 1; 0: nothing to do).</summary>
    public static int AccumulateScores(Tensor clean, ScoreBaseline baseline, Tensor gradient, ReadOnlySpan<int> positionOf, Tensor sums,
        int firstRow, int firstColumn)
    {
        int width = clean.Columns, rows = clean.Rows;
        Length(gradient, clean.Length, "AccumulateScores gradient");
        if (positionOf.Length != rows) throw new ArgumentException($"AccumulateScores: {positionOf.Length} positions for {rows} rows of {clean}");
        if (rows == 0 || width == 0) return 0;
        if (firstRow < 0 || firstRow >= sums.Rows || firstColumn < 0 || firstColumn > sums.Columns - width)
            throw new ArgumentException($"AccumulateScores: {width} columns at row {firstRow}, column {firstColumn} do not fit in {sums}");
        int positions = 0;
        foreach (int p in positionOf) positions = Math.Max(positions, p + 1);
        Indices(positionOf, sums.Rows - firstRow, "AccumulateScores");
        switch (baseline.Kind)
        {
            case ScoreBaselineKind.Zero: break;
            case ScoreBaselineKind.PerRow:
                Length(baseline.Values ?? throw new ArgumentException("AccumulateScores: a per-row baseline needs its tensor"), clean.Length, "AccumulateScores baseline");
                break;
            case ScoreBaselineKind.PerPosition:
                var b = baseline.Values ?? throw new ArgumentException("AccumulateScores: a per-position baseline needs its tensor");
                Columns(b, width, "AccumulateScores baseline");
                if (b.Rows < firstRow + positions) throw new ArgumentException($"AccumulateScores: baseline {b} has no row {firstRow + positions - 1}");
                break;
            default: throw new ArgumentOutOfRangeException(nameof(baseline), $"AccumulateScores: baseline kind {(int)baseline.Kind}");
        }
        return positions;
    }

    public static void GatherScaledRows(Tensor source, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, Tensor destination)
    {
        GatherRows(source, rows, destination);
        if (scales.Length != rows.Length) throw new ArgumentException($"GatherScaledRows: {scales.Length} scales for {rows.Length} rows");
    }

    /// <summary>Checks a row range [first, first + rows) of a 2-D tensor (<see cref="IBackend.StartReadOnHost"/>).</summary>
    public static void RowRange(Tensor t, int first, int rows, string op)
    {
        if (first < 0 || rows < 0 || (long)first + rows > t.Rows) throw new ArgumentException($"{op}: rows {first}..{(long)first + rows - 1} outside {t}");
    }

    /// <summary>Checks <see cref="IBackend.TopKByMagnitude"/>: the block lies in the slab, one scale per position, k ≥ 0, flat indices fit an int.</summary>
    public static void TopKByMagnitude(Tensor sums, TopKBlock b, ReadOnlySpan<float> scales, int k)
    {
        if (k < 0) throw new ArgumentOutOfRangeException(nameof(k), $"TopKByMagnitude: k = {k}");
        if (b.Layers < 0 || b.Positions < 0 || b.Width < 0 || b.FirstFlat < 0 || b.Positions > b.RowsPerLayer)
            throw new ArgumentException($"TopKByMagnitude: a block of {b.Layers} layers x {b.Positions} positions (of {b.RowsPerLayer} rows) x {b.Width} columns");
        if (b.FirstColumn < 0 || b.FirstColumn > sums.Columns - b.Width || (long)b.Layers * b.RowsPerLayer > sums.Rows)
            throw new ArgumentException($"TopKByMagnitude: {b.Layers} layers of {b.RowsPerLayer} rows and {b.Width} columns at column {b.FirstColumn} do not fit in {sums}");
        if (b.FirstFlat + b.Nodes > int.MaxValue) throw new ArgumentException($"TopKByMagnitude: {b.FirstFlat + b.Nodes} nodes do not fit a flat int index");
        if (scales.Length != b.Positions) throw new ArgumentException($"TopKByMagnitude: {scales.Length} scales for {b.Positions} positions");
    }

    /// <summary>Checks <see cref="IBackend.SparseMatMulInputGrad"/>: dx is [entries / perRow, w columns]; columns are −1 or rows of w.</summary>
    public static void SparseMatMulInputGrad(ReadOnlySpan<int> columns, ReadOnlySpan<float> values, int perRow, Tensor w, Tensor dx)
    {
        if (perRow < 1) throw new ArgumentOutOfRangeException(nameof(perRow), $"SparseMatMulInputGrad: {perRow} entries per row");
        if (values.Length != columns.Length) throw new ArgumentException($"SparseMatMulInputGrad: {values.Length} values for {columns.Length} columns");
        if (columns.Length != (long)dx.Rows * perRow) throw new ArgumentException($"SparseMatMulInputGrad: {columns.Length} entries for {dx.Rows} rows of {perRow}");
        Columns(dx, w.Columns, "SparseMatMulInputGrad dx");
        foreach (int c in columns)
            if (c < -1 || c >= w.Rows) throw new ArgumentOutOfRangeException(nameof(columns), $"SparseMatMulInputGrad: column {c} outside [-1, {w.Rows})");
    }

    public static void Indices(ReadOnlySpan<int> rows, int count, string what)
    {
        foreach (int r in rows)
            if ((uint)r >= (uint)count) throw new ArgumentOutOfRangeException(nameof(rows), $"{what}: row {r} outside [0, {count})");
    }

    public static void Length(Tensor t, long length, string what)
    {
        if (t.Length != length) throw new ArgumentException($"{what}: {t} has {t.Length} values, expected {length}");
    }

    public static void Columns(Tensor t, int columns, string what)
    {
        if (t.Columns != columns) throw new ArgumentException($"{what}: {t} has {t.Columns} columns, expected {columns}");
    }

    public static void Rows(Tensor t, int rows, string what)
    {
        if (t.Rows != rows) throw new ArgumentException($"{what}: {t} has {t.Rows} rows, expected {rows}");
    }
}
