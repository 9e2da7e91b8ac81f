namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// The managed reference backend: fp32, SIMD, multi-threaded. The default everywhere. In <see cref="CpuMath.Bf16"/> mode
/// (NEURONTRACE_CPU_MATH=bf16) its products over bf16 weights round the activation operand to bf16 (GemmBf16.cs).
/// </summary>
internal sealed class CpuBackend : IBackend
{
    /// <summary>fp32 math (<see cref="CpuMath.Fp32"/>): the reference.</summary>
    public static CpuBackend Instance { get; } = new(CpuMath.Fp32);

    /// <summary>bf16 math (<see cref="CpuMath.Bf16"/>): products over bf16 weights round their activation operand to bf16.</summary>
    public static CpuBackend Bf16Math { get; } = new(CpuMath.Bf16);

    /// <summary>The backend for <paramref name="math"/>.</summary>
    public static CpuBackend For(CpuMath math) => math == CpuMath.Bf16 ? Bf16Math : Instance;

    CpuBackend(CpuMath math) => MathMode = math;

    /// <summary>How products over bf16 weights are computed; everything else is the same in both modes.</summary>
    public CpuMath MathMode { get; }

    public string Name => "cpu";
    public bool SupportsConcurrentCalls => true;

    public Tensor Allocate(params int[] shape) => CpuTensor.Rent(shape);
    public Tensor AllocateUninitialized(params int[] shape) => CpuTensor.Rent(shape, clear: false);

    public Tensor Upload(ReadOnlySpan<float> data, params int[] shape)
    {
        OpContracts.Upload(data.Length, shape);
        var t = CpuTensor.Rent(shape);
        data.CopyTo(t.Data);
        return t;
    }

    /// <summary>Wraps the array without copying.</summary>
    public Tensor UploadConstant(float[] data, params int[] shape)
    {
        OpContracts.Upload(data.Length, shape);
        return Wrap(data, shape);
    }

    /// <summary>Wraps an existing host array without copying (weights).</summary>
    public static CpuTensor Wrap(float[] data, params int[] shape) => new(data, shape);

    /// <summary>Wraps 16-bit weights without copying or widening; products widen them as they read.</summary>
    public static CpuHalfTensor Wrap(HalfWeights data, params int[] shape) => new(data, shape);

    public Tensor UploadConstant(HalfWeights data, params int[] shape) => Wrap(data, shape);

    public void Download(Tensor source, Span<float> destination)
    {
        OpContracts.Download(source, destination.Length);
        ParallelCopy(Host(source), destination);
    }

    public void Fill(Tensor tensor, float value) => Host(tensor).AsSpan().Fill(value);
    public void Copy(Tensor source, Tensor destination)
    {
        OpContracts.Copy(source, destination);
        ParallelCopy(Host(source), Host(destination));
    }

    /// <summary>source into destination[0, source.Length), in one piece per core when large (score sums, site values).</summary>
    static unsafe void ParallelCopy(float[] source, Span<float> destination)
    {
        if (source.Length < CpuParallel.MinElements)
        {
            source.AsSpan().CopyTo(destination);
            return;
        }
        if (destination.Length < source.Length) throw new ArgumentException($"copying {source.Length} values into {destination.Length}");
        fixed (float* d = destination)
        {
            nint into = (nint)d;
            CpuParallel.For(source.Length, source.Length, CpuParallel.VectorAlign,
                (start, end) => source.AsSpan(start, end - start).CopyTo(new Span<float>((float*)into + start, end - start)));
        }
    }

    public void MatMul(Tensor x, Tensor w, Tensor y, bool accumulate)
    {
        OpContracts.MatMul(x, w, y);
        int n = w.Shape[0], k = w.Columns;
        var recorder = GemmTimes.Active;
        var start = recorder is null ? default : GemmTimes.Now();
        long wallStart = recorder is null ? 0 : GemmTimes.WallNow();
        if (w is CpuHalfTensor h && UsesBf16Math(h)) Gemm.MultiplyTransposedBBf16(Host(x), h.Data, Host(y), x.Rows, n, k, accumulate);
        else if (w is CpuHalfTensor h16) Gemm.MultiplyTransposedB(Host(x), h16.Data, Host(y), x.Rows, n, k, accumulate);
        else Gemm.MultiplyTransposedB(Host(x), Host(w), Host(y), x.Rows, n, k, accumulate);
        recorder?.Add(new(x.Rows, n, k, true, w is CpuHalfTensor, MathMode), GemmTimes.Now() - start, wallStart);
    }

    public void MatMulInputGrad(Tensor dy, Tensor w, Tensor dx, bool accumulate)
    {
        OpContracts.MatMulInputGrad(dy, w, dx);
        int n = w.Shape[0], k = w.Columns;
        var recorder = GemmTimes.Active;
        var start = recorder is null ? default : GemmTimes.Now();
        long wallStart = recorder is null ? 0 : GemmTimes.WallNow();
        if (w is CpuHalfTensor h && UsesBf16Math(h)) Gemm.MultiplyBf16(Host(dy), h.Data, Host(dx), dy.Rows, k, n, accumulate);
        else if (w is CpuHalfTensor h16) Gemm.Multiply(Host(dy), h16.Data, Host(dx), dy.Rows, k, n, accumulate);
        else Gemm.Multiply(Host(dy), Host(w), Host(dx), dy.Rows, k, n, accumulate);
        recorder?.Add(new(dy.Rows, k, n, false, w is CpuHalfTensor, MathMode), GemmTimes.Now() - start, wallStart);
    }

    bool UsesBf16Math(CpuHalfTensor w) => MathMode == CpuMath.Bf16 && w.Data.Format == HalfFormat.BFloat16;

    public void Embedding(ReadOnlySpan<int> tokens, Tensor table, Tensor output)
    {
        OpContracts.Embedding(tokens, table, output);
        int dim = table.Columns;
        var o = Host(output);
        if (table is CpuHalfTensor half)
        {
            for (int r = 0; r < tokens.Length; r++) half.Data.Widen((long)tokens[r] * dim, o.AsSpan(r * dim, dim));
            return;
        }
        var t = Host(table);
        for (int r = 0; r < tokens.Length; r++) Array.Copy(t, (long)tokens[r] * dim, o, (long)r * dim, dim);
    }

    public void RmsNorm(Tensor x, Tensor weight, float eps, Tensor y, Tensor rstd)
    {
        OpContracts.RmsNorm(x, weight, y, rstd);
        float[] xs = Host(x), ws = Host(weight), ys = Host(y), rs = Host(rstd);
        int dim = x.Columns;
        CpuParallel.For(x.Rows, (long)x.Rows * dim, 1, (r0, r1) =>
            RmsNormOps.Forward(xs.AsSpan(r0 * dim), ws, eps, ys.AsSpan(r0 * dim), rs.AsSpan(r0), r1 - r0, dim));
    }

    public void RmsNormBackward(Tensor dy, Tensor x, Tensor weight, Tensor rstd, NormRule rule, Tensor dx)
    {
        OpContracts.RmsNormBackward(dy, x, weight, rstd, rule, dx);
        float[] dys = Host(dy), xs = Host(x), ws = Host(weight), rs = Host(rstd), dxs = Host(dx);
        int dim = x.Columns;
        CpuParallel.For(x.Rows, (long)x.Rows * dim, 1, (r0, r1) =>
            RmsNormOps.Backward(dys.AsSpan(r0 * dim), xs.AsSpan(r0 * dim), ws, rs.AsSpan(r0), rule, dxs.AsSpan(r0 * dim), r1 - r0, dim));
    }

    public void Rope(Tensor x, int heads, int seqLen, Tensor cos, Tensor sin, bool interleaved, bool inverse)
    {
        OpContracts.Rope(x, heads, seqLen, cos, sin);
        RopeOps.Apply(Host(x), x.Rows, heads, x.Columns / heads, seqLen, Host(cos), Host(sin), interleaved, inverse);
    }

    public void Attention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor probs)
    {
        OpContracts.Attention(q, k, v, shape, z, probs);
        AttentionOps.Forward(Host(q), Host(k), Host(v), shape, Host(z), Host(probs));
    }

    public void AttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor probs, AttentionShape shape, AttentionRule rule,
        Tensor dq, Tensor dk, Tensor dv)
    {
        OpContracts.AttentionBackward(dz, q, k, v, probs, shape, rule, dq, dk, dv);
        AttentionOps.Backward(Host(dz), Host(q), Host(k), Host(v), Host(probs), shape, rule, Host(dq), Host(dk), Host(dv));
    }

    public void StreamingAttention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor lse)
    {
        OpContracts.StreamingAttention(q, k, v, shape, z, lse);
        AttentionOps.StreamingForward(Host(q), Host(k), Host(v), shape, Host(z), Host(lse));
    }

    public void StreamingAttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape,
        AttentionRule rule, Tensor dq, Tensor dk, Tensor dv)
    {
        OpContracts.StreamingAttentionBackward(dz, q, k, v, o, lse, shape, rule, dq, dk, dv);
        AttentionOps.StreamingBackward(Host(dz), Host(q), Host(k), Host(v), Host(o), Host(lse), shape, rule, Host(dq), Host(dk), Host(dv));
    }

    public void SwiGlu(Tensor gate, Tensor up, Tensor h)
    {
        OpContracts.SwiGlu(gate, up, h);
        float[] g = Host(gate), u = Host(up), hs = Host(h);
        int n = checked((int)gate.Length);
        CpuParallel.For(n, n, CpuParallel.VectorAlign, (i0, i1) =>
            SwiGluOps.Forward(g.AsSpan(i0, i1 - i0), u.AsSpan(i0, i1 - i0), hs.AsSpan(i0, i1 - i0)));
    }

    public void SwiGluBackward(Tensor dh, Tensor gate, Tensor up, GateRule rule, Tensor dgate, Tensor dup)
    {
        OpContracts.SwiGluBackward(dh, gate, up, rule, dgate, dup);
        float[] dhs = Host(dh), g = Host(gate), u = Host(up), dg = Host(dgate), du = Host(dup);
        int n = checked((int)dh.Length);
        CpuParallel.For(n, n, CpuParallel.VectorAlign, (i0, i1) =>
            SwiGluOps.Backward(dhs.AsSpan(i0, i1 - i0), g.AsSpan(i0, i1 - i0), u.AsSpan(i0, i1 - i0), rule, dg.AsSpan(i0, i1 - i0), du.AsSpan(i0, i1 - i0)));
    }

    public void Add(Tensor destination, Tensor source)
    {
        OpContracts.Add(destination, source);
        SimdMath.AddInPlace(Host(destination), Host(source));
    }

    public void Intervene(Tensor x, Tensor scale, Tensor offset)
    {
        OpContracts.Intervene(x, scale, offset);
        SimdMath.FusedMultiplyAddInPlace(Host(x), Host(scale), Host(offset));
    }

    public void MeanAblate(Tensor x, Tensor means, ReadOnlySpan<uint> keepBits, ReadOnlySpan<int> keepRow, ReadOnlySpan<int> meanRow)
    {
        OpContracts.MeanAblate(x, means, keepBits, keepRow, meanRow);
        MeanAblationOps.Apply(Host(x), x.Rows, x.Columns, Host(means), keepBits, keepRow, meanRow);
    }

    public void Multiply(Tensor x, Tensor scale)
    {
        OpContracts.Multiply(x, scale);
        SimdMath.MultiplyInPlace(Host(x), Host(scale));
    }

    public void GatherRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        OpContracts.GatherRows(source, rows, destination);
        int w = source.Columns;
        var s = Host(source); var d = Host(destination);
        if ((long)rows.Length * w < CpuParallel.MinElements)
        {
            for (int i = 0; i < rows.Length; i++) Array.Copy(s, (long)rows[i] * w, d, (long)i * w, w);
            return;
        }
        int[] which = rows.ToArray();
        CpuParallel.For(which.Length, (long)which.Length * w, 1, (i0, i1) =>
        {
            for (int i = i0; i < i1; i++) Array.Copy(s, (long)which[i] * w, d, (long)i * w, w);
        });
    }

    public void ScatterAddRows(Tensor source, ReadOnlySpan<int> rows, Tensor destination)
    {
        if (OpContracts.ScatterAddRows(source, rows, destination) == 0) return;
        int w = source.Columns;
        var s = Host(source); var d = Host(destination);
        for (int i = 0; i < rows.Length; i++)
        {
            SimdMath.AddInPlace(d.AsSpan(rows[i] * w, w), s.AsSpan(i * w, w));
        }
    }

    public void AccumulateScores(Tensor clean, ScoreBaseline baseline, Tensor gradient, float scale, ReadOnlySpan<int> positionOf,
        Tensor sums, int firstRow, int firstColumn)
    {
        if (OpContracts.AccumulateScores(clean, baseline, gradient, positionOf, sums, firstRow, firstColumn) == 0) return;
        float[] c = Host(clean), g = Host(gradient), into = Host(sums);
        float[]? b = baseline.Values is { } v ? Host(v) : null;
        var kind = baseline.Kind;
        int width = clean.Columns, stride = sums.Columns;
        if ((long)positionOf.Length * width < CpuParallel.MinElements)
        {
            ScoreOps.Accumulate(c, kind, b, g, scale, positionOf, width, into, stride, firstRow, firstColumn, 0, width);
            return;
        }
        // Split by columns: rows that share a position add into the same sums row in row order within each piece.
        int[] positions = positionOf.ToArray();
        CpuParallel.For(width, (long)positions.Length * width, CpuParallel.VectorAlign, (c0, c1) =>
            ScoreOps.Accumulate(c, kind, b, g, scale, positions, width, into, stride, firstRow, firstColumn, c0, c1));
    }

    public void GatherScaledRows(Tensor source, ReadOnlySpan<int> rows, ReadOnlySpan<float> scales, Tensor destination)
    {
        OpContracts.GatherScaledRows(source, rows, scales, destination);
        ScoreOps.GatherScaledRows(Host(source), rows, scales, source.Columns, Host(destination));
    }

    /// <summary>
    /// The values are host memory already: handed over in place. The default's new array was most of an attribution's
    /// page faults at the 1B shape (the score means, 15 MB of fresh pages per call, read once and dropped).
    /// </summary>
    public void ReadOnHost(Tensor source, HostValuesReader read) => read(Host(source).AsSpan(0, checked((int)source.Length)));

    /// <summary>The rows are host memory already: the read hands them over in place when asked.</summary>
    public PendingHostRead StartReadOnHost(Tensor source, int firstRow, int rows)
    {
        OpContracts.RowRange(source, firstRow, rows, "StartReadOnHost");
        return new HostRows(Host(source), firstRow * source.Columns, rows * source.Columns);
    }

    sealed class HostRows(float[] data, int start, int length) : PendingHostRead
    {
        public override void Read(HostValuesReader read) => read(data.AsSpan(start, length));
    }

    public ScoredNode[] TopKByMagnitude(Tensor sums, TopKBlock block, ReadOnlySpan<float> scales, int k)
    {
        OpContracts.TopKByMagnitude(sums, block, scales, k);
        return TopKOps.Select(Host(sums), sums.Columns, block, scales, k);
    }

    public void SparseMatMulInputGrad(ReadOnlySpan<int> columns, ReadOnlySpan<float> values, int perRow, Tensor w, Tensor dx)
    {
        OpContracts.SparseMatMulInputGrad(columns, values, perRow, w, dx);
        int width = w.Columns;
        ScoreOps.RowReader row = w is CpuHalfTensor h
            ? (i, d) => h.Data.Widen((long)i * width, d)
            : (i, d) => Host(w).AsSpan(i * width, width).CopyTo(d);
        ScoreOps.SparseMatMulInputGrad(columns, values, perRow, width, row, Host(dx));
    }

    public void Dispose() { }

    static float[] Host(Tensor t) => t is CpuTensor c ? c.Data : throw new ArgumentException($"{t} is not a CPU tensor");
}
