using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// The matrix products (cuBLAS through <see cref="IDeviceRuntime.Sgemm"/>, the row-major mapping in
/// <see cref="GemmCall"/>). Under <see cref="GemmPrecision.Bf16"/> both operands are bf16 (Ops/Bf16Operands.cs):
/// the weight as stored (or a copy made once for an fp32 constant, or per product for a changing tensor), the
/// activation as its shadow. Products sharing an input against row-stacked bf16 weights run as one product.
/// </summary>
internal sealed partial class CudaBackend
{
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SplitColumnsBf16Args(nint Source, int Rows, nint A, nint A16, int WidthA, nint B, nint B16, int WidthB, nint C, nint C16, int WidthC);
    internal static readonly Kernel<SplitColumnsBf16Args> SplitColumnsBf16Kernel = Kernel.Declare<SplitColumnsBf16Args>("split_columns_bf16");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct SplitQkvRopeBf16Args(nint Source, int Rows, nint Q, nint Q16, int WidthQ, nint K, nint K16, int WidthK,
        nint V, nint V16, int WidthV, nint Cos, nint Sin, int HeadDim, int SeqLen, int Interleaved);
    internal static readonly Kernel<SplitQkvRopeBf16Args> SplitQkvRopeBf16Kernel = Kernel.Declare<SplitQkvRopeBf16Args>("split_qkv_rope_bf16");

    SafeHandle? stackedOutput;   // the [rows, Σ n] output of a stacked product, before its split
    long stackedOutputCapacity;

    public void MatMul(Tensor x, Tensor w, Tensor y, bool accumulate)
    {
        OpContracts.MatMul(x, w, y);
        using var _ = Range("matmul");
        Gemm(GemmCall.MatMul(In(x), WeightAddress(w), Dev(y), x.Rows, w.Shape[0], w.Columns, accumulate), y, accumulate, w, x);
    }

    public void MatMulInputGrad(Tensor dy, Tensor w, Tensor dx, bool accumulate)
    {
        OpContracts.MatMulInputGrad(dy, w, dx);
        using var _ = Range("matmul_input_grad");
        Gemm(GemmCall.MatMulInputGrad(In(dy), WeightAddress(w), Dev(dx), dy.Rows, w.Shape[0], w.Columns, accumulate), dx, accumulate, w, dy);
    }

    /// <summary>
    /// A stacked forward product in <see cref="MatMulShared"/> pays one extra pass over its output (the split), so it is
    /// used there only when one of the blocks is narrower than this many output columns (the forward's gate and up skip
    /// the split instead: <see cref="GateUpSwiGluForBackward"/> stacks at any width, SwiGLU reading the output in place): at 128-column tiles that is under 32 tile columns, which
    /// for a few hundred rows cannot fill an H100's 132 SMs alone (K and V of Llama-3-8B: 1024). Wide blocks (gate
    /// and up: 14336) fill the GPU one by one and read the one shared bf16 operand without a conversion each.
    /// </summary>
    public const int NarrowProductColumns = 4096;

    /// <summary>
    /// outputs[i] = x · weights[i]ᵀ. Against bf16 weights that <see cref="StackConstants"/> laid one after the other
    /// (Wq, Wk, Wv) under Bf16, with a block narrower than <see cref="NarrowProductColumns"/>: one product into
    /// [rows, Σ n] and one split_columns; otherwise one product each, exactly as <see cref="MatMul"/> (the fp32 and
    /// TF32 modes are unchanged).
    /// </summary>
    public void MatMulShared(Tensor x, ReadOnlySpan<Tensor> weights, ReadOnlySpan<Tensor> outputs)
    {
        if (weights.Length != outputs.Length) throw new ArgumentException($"MatMulShared: {weights.Length} weights for {outputs.Length} outputs");
        nint stacked = StackedProduct(x, weights, outputs);
        if (stacked == 0)
        {
            for (int i = 0; i < weights.Length; i++) MatMul(x, weights[i], outputs[i], false);
            return;
        }
        int rows = x.Rows, n = 0;
        foreach (var w in weights) n += w.Rows;
        using var _ = Range("split_columns");
        // Each part's bf16 shadow is written beside it, so a later product or the bf16 attention reads it without a
        // conversion (the forward's q, k, v go through QkvProjection, whose one launch also rotates q and k).
        Span<nint> at = stackalloc nint[3], at16 = stackalloc nint[3];
        Span<int> widths = stackalloc int[3];
        var slots = new Shadow[outputs.Length];
        for (int i = 0; i < outputs.Length; i++) { slots[i] = ShadowSlot(outputs[i]); at[i] = Dev(outputs[i]); at16[i] = slots[i].Address; widths[i] = outputs[i].Columns; }
        Launch(SplitColumnsBf16Kernel, GridFor((long)rows * n), new Dim3(ElementwiseBlock), 0,
            new SplitColumnsBf16Args(stacked, rows, at[0], at16[0], widths[0], at[1], at16[1], widths[1], at[2], at16[2], widths[2]),
            OpWork.Streaming((long)rows * n, 2) with { Bytes = rows * (double)n * 10 });
        for (int i = 0; i < outputs.Length; i++) Publish(slots[i], outputs[i]);
    }

    /// <summary>
    /// The one product x · [W₀; W₁; …]ᵀ into the [rows, Σ n] scratch when <see cref="MatMulShared"/> stacks (Bf16,
    /// adjacent bf16 weights, a block narrower than <see cref="NarrowProductColumns"/>), its address; else 0 (nothing run).
    /// </summary>
    nint StackedProduct(Tensor x, ReadOnlySpan<Tensor> weights, ReadOnlySpan<Tensor> outputs, bool anyWidth = false)
    {
        bool narrow = anyWidth;
        foreach (var w in weights) narrow |= w.Rows < NarrowProductColumns;
        if (Precision != GemmPrecision.Bf16 || !narrow || !Adjacent(weights) || x.Rows == 0 || x.Columns == 0) return 0;
        for (int i = 0; i < weights.Length; i++) OpContracts.MatMul(x, weights[i], outputs[i]);
        int rows = x.Rows, n = 0;
        foreach (var w in weights) n += w.Rows;
        nint stacked = Stage(ref stackedOutput, ref stackedOutputCapacity, (long)rows * n * sizeof(float));
        using (Range("matmul"))
            device.Sgemm(GemmCall.MatMul(ActivationBf16(x), DevBf16(weights[0]), stacked, rows, n, x.Columns, false) with { Precision = GemmPrecision.Bf16 });
        return stacked;
    }

    /// <summary>
    /// <see cref="IBackend.QkvProjection"/>: when the product stacks, its split and the rotation of q and k run as one
    /// launch (split_qkv_rope_bf16 in rope.cu, bit for bit the split and the two RoPE launches it replaces), writing each
    /// part's bf16 shadow (the bf16 attention's q, k, v); otherwise <see cref="MatMulShared"/> and <see cref="Rope"/> twice.
    /// </summary>
    public void QkvProjection(Tensor x, ReadOnlySpan<Tensor> weights, Tensor q, Tensor k, Tensor v, int heads, int kvHeads, int seqLen,
        Tensor cos, Tensor sin, bool interleaved)
    {
        if (weights.Length != 3) throw new ArgumentException($"QkvProjection: {weights.Length} weights for q, k, v");
        int headDim = OpContracts.Rope(q, heads, seqLen, cos, sin);
        if (OpContracts.Rope(k, kvHeads, seqLen, cos, sin) != headDim) throw new ArgumentException($"QkvProjection: q and k head dims differ ({q}, {heads} heads; {k}, {kvHeads} heads)");
        nint stacked = StackedProduct(x, weights, [q, k, v]);
        if (stacked == 0)
        {
            MatMulShared(x, weights, [q, k, v]);
            Rope(q, heads, seqLen, cos, sin, interleaved, inverse: false);
            Rope(k, kvHeads, seqLen, cos, sin, interleaved, inverse: false);
            return;
        }
        int rows = x.Rows;
        long items = (long)rows * (q.Columns / 2 + k.Columns / 2 + v.Columns);
        using var _ = Range("split_qkv_rope");
        var sq = ShadowSlot(q);
        var sk = ShadowSlot(k);
        var sv = ShadowSlot(v);
        long values = (long)rows * (q.Columns + k.Columns + v.Columns), pairs = (long)rows * (q.Columns + k.Columns) / 2;
        Launch(SplitQkvRopeBf16Kernel, GridFor(items), new Dim3(ElementwiseBlock), 0,
            new SplitQkvRopeBf16Args(stacked, rows, Dev(q), sq.Address, q.Columns, Dev(k), sk.Address, k.Columns, Dev(v), sv.Address, v.Columns,
                In(cos), In(sin), headDim, seqLen, interleaved ? 1 : 0),
            new OpWork(pairs * 6.0, values * 10.0 + pairs * 8.0));
        Publish(sq, q);
        Publish(sk, k);
        Publish(sv, v);
    }

    /// <summary>
    /// dx = Σ_i dys[i] · weights[i] (overwriting dx). Against stacked bf16 weights under Bf16: the dys rounded into
    /// one [rows, Σ n] operand (one launch, the same traffic as one conversion each) and one product of inner size
    /// Σ n; otherwise
    /// <see cref="MatMulInputGrad"/> per pair, the first overwriting, the rest accumulating.
    /// </summary>
    public void MatMulInputGradSum(ReadOnlySpan<Tensor> dys, ReadOnlySpan<Tensor> weights, Tensor dx)
    {
        if (weights.Length != dys.Length || dys.Length == 0) throw new ArgumentException($"MatMulInputGradSum: {weights.Length} weights for {dys.Length} gradients");
        if (Precision != GemmPrecision.Bf16 || !Adjacent(weights) || dx.Rows == 0 || dx.Columns == 0)
        {
            for (int i = 0; i < weights.Length; i++) MatMulInputGrad(dys[i], weights[i], dx, i > 0);
            return;
        }
        for (int i = 0; i < weights.Length; i++) OpContracts.MatMulInputGrad(dys[i], weights[i], dx);
        int n = 0;
        foreach (var w in weights) n += w.Rows;
        nint operand = ConcatBf16(dys);
        using var _ = Range("matmul_input_grad");
        Forget(dx);
        device.Sgemm(GemmCall.MatMulInputGrad(operand, DevBf16(weights[0]), Dev(dx), dx.Rows, n, dx.Columns, false) with { Precision = GemmPrecision.Bf16 });
    }

    /// <summary>A weight's address as <see cref="Gemm"/> gets it (replaced there for bf16 operands); a bf16-stored one's own.</summary>
    nint WeightAddress(Tensor w) => w is CudaTensor { IsBf16: true } ? DevBf16(w) : In(w);

    /// <summary>Both products have the weight as cuBLAS's A and the activation (x or dy) as B.</summary>
    void Gemm(in GemmCall call, Tensor c, bool accumulate, Tensor weight, Tensor activation)
    {
        if (call.M == 0 || call.N == 0) return;
        if (call.K == 0)  // an empty sum: BLAS leaves C alone only with beta = 1
        {
            if (!accumulate) Fill(c, 0f);
            return;
        }
        Forget(c);
        if (Precision == GemmPrecision.Bf16)
        {
            device.Sgemm(call with { Precision = Precision, A = WeightBf16(weight), B = ActivationBf16(activation) });
            return;
        }
        // fp32 / TF32 with a bf16-stored weight (uploaded under Bf16): its values widened for this product.
        var a = weight is CudaTensor { IsBf16: true } ? WidenedWeight(weight) : call.A;
        device.Sgemm(call with { Precision = Precision, A = a });
    }

    /// <summary>
    /// The bf16 form of a weight: its own storage when bf16; for an fp32 constant (uploaded under another precision)
    /// a copy made once and kept; else converted into a scratch buffer for this product only, since its values may change.
    /// </summary>
    nint WeightBf16(Tensor weight)
    {
        var w = (CudaTensor)weight;
        if (w.IsBf16) return w.Pointer;
        if (!w.IsConstant) return ActivationBf16(w);   // a changing tensor as the weight side: its shadow, or one conversion
        if (bf16Weights.TryGetValue(w, out var copy)) return copy.DangerousGetHandle();
        foreach (var gone in bf16Weights.Keys.Where(t => t.IsDisposed).ToList())  // a model disposed on a living backend
        {
            bf16Weights[gone].Dispose();
            bf16Weights.Remove(gone);
        }
        copy = device.Allocate(Math.Max(2, w.Length * 2));
        ConvertToBf16(w.Pointer, copy.DangerousGetHandle(), w.Length);
        bf16Weights[w] = copy;
        return copy.DangerousGetHandle();
    }

    /// <summary>A bf16-stored weight widened into fp32 scratch, for a product in fp32 or TF32.</summary>
    nint WidenedWeight(Tensor weight)
    {
        nint p = Stage(ref weightF32, ref weightF32Capacity, weight.Length * sizeof(float));
        using var _ = Range("bf16_to_f32");
        Launch(Bf16ToF32, GridFor(weight.Length), new Dim3(ElementwiseBlock), 0, new ConvertArgs(DevBf16(weight), p, weight.Length),
            new OpWork(0, weight.Length * 6.0));
        return p;
    }
}
