using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Launchers of native/kernels/attention_flash.cu (fp32) and attention_flash_bf16.cu (bf16 tensor cores): streaming
/// causal GQA attention that keeps a log-sum-exp per row instead of the [B, H, T, T] pattern
/// (docs/streaming-attention.md), forward and backward (dq query-major, dk/dv key-major, so no floating-point
/// atomics). Under <see cref="GemmPrecision.Bf16"/> with a head dim the bf16 kernels take (a multiple of 16, at
/// most 128) the tensor-core kernels read bf16 q, k, v and dz: the shadows their producers wrote (the stacked
/// product's split, RoPE; kept from the forward for the backward; dz by the backward's row-term pass), converted
/// here only where there is none. Fp32 and TF32 keep the fp32 kernels, which are exact up to summation order.
/// </summary>
internal sealed partial class CudaBackend
{
    /// <summary>Threads (query or key rows) per streaming-attention block: NT_FLASH_ROWS in attention_flash.cu.</summary>
    public const int FlashRows = 64;
    /// <summary>Rows per shared-memory tile: NT_FLASH_TILE in attention_flash.cu.</summary>
    public const int FlashTile = 32;

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct FlashForwardArgs(nint Q, nint K, nint V, nint Z, nint Lse,
        int SeqLen, int Heads, int KvHeads, int HeadDim, float Scale);
    internal static readonly Kernel<FlashForwardArgs> FlashForwardKernel = Kernel.Declare<FlashForwardArgs>("attention_flash_forward");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct FlashRowDotArgs(nint Dz, nint O, nint DOut, int Batch, int SeqLen, int Heads, int HeadDim);
    internal static readonly Kernel<FlashRowDotArgs> FlashRowDotKernel = Kernel.Declare<FlashRowDotArgs>("attention_flash_rowdot");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct FlashRowDotBf16Args(nint Dz, nint O, nint DOut, nint Dz16, int Batch, int SeqLen, int Heads, int HeadDim);
    internal static readonly Kernel<FlashRowDotBf16Args> FlashRowDotBf16Kernel = Kernel.Declare<FlashRowDotBf16Args>("attention_flash_rowdot_bf16");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct FlashBackwardDqArgs(nint Dz, nint Q, nint K, nint V, nint Lse, nint DSum, nint Dq,
        int SeqLen, int Heads, int KvHeads, int HeadDim, float Scale);
    internal static readonly Kernel<FlashBackwardDqArgs> FlashBackwardDqKernel = Kernel.Declare<FlashBackwardDqArgs>("attention_flash_backward_dq");

    /// <param name="Dz">Device pointer to the gradient of the attention output, [batch, SeqLen, Heads·HeadDim]: fp32, or bf16 for the bf16 kernel (as are Q, K and V).</param>
    /// <param name="Q">Device pointer to the queries, [batch, SeqLen, Heads·HeadDim].</param>
    /// <param name="K">Device pointer to the keys, [batch, SeqLen, KvHeads·HeadDim].</param>
    /// <param name="V">Device pointer to the values, [batch, SeqLen, KvHeads·HeadDim].</param>
    /// <param name="Lse">Device pointer to the forward's log-sum-exp of each query row's scaled scores, [batch, Heads, SeqLen].</param>
    /// <param name="DSum">Device pointer to each query row's dz·z (the rowdot kernel's output), [batch, Heads, SeqLen].</param>
    /// <param name="Dk">Device pointer the key gradient is written to, [batch, SeqLen, KvHeads·HeadDim].</param>
    /// <param name="Dv">Device pointer the value gradient is written to, [batch, SeqLen, KvHeads·HeadDim].</param>
    /// <param name="SeqLen">Tokens per prompt.</param>
    /// <param name="Heads">Query heads.</param>
    /// <param name="KvHeads">Key/value heads; <paramref name="Heads"/> is a multiple of it (grouped-query attention).</param>
    /// <param name="HeadDim">Channels per head.</param>
    /// <param name="Scale">The score scale the forward used, 1/√HeadDim.</param>
    /// <param name="Exact">1: the exact gradient (dk from the scores); 0: the frozen pattern (dk = 0, dv only).</param>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct FlashBackwardDkDvArgs(nint Dz, nint Q, nint K, nint V, nint Lse, nint DSum, nint Dk, nint Dv,
        int SeqLen, int Heads, int KvHeads, int HeadDim, float Scale, int Exact);
    internal static readonly Kernel<FlashBackwardDkDvArgs> FlashBackwardDkDvKernel = Kernel.Declare<FlashBackwardDkDvArgs>("attention_flash_backward_dkdv");

    /// <summary>Packed query rows (or keys) per bf16 block: NT_FB_ROWS in attention_flash_bf16.cu (4 warps × 16).</summary>
    public const int FlashBf16Rows = 64;
    /// <summary>Threads per bf16 block.</summary>
    public const int FlashBf16Threads = 128;

    /// <summary>Arguments of the bf16 tensor-core forward (attention_flash_bf16.cu): the fp32 forward's, plus z's bf16 shadow.</summary>
    /// <param name="Q">bf16 queries [rows, Heads · HeadDim].</param>
    /// <param name="K">bf16 keys [rows, KvHeads · HeadDim].</param>
    /// <param name="V">bf16 values [rows, KvHeads · HeadDim].</param>
    /// <param name="Z">fp32 output z [rows, Heads · HeadDim].</param>
    /// <param name="Lse">fp32 log-sum-exp per (row, head), what the backward recomputes P from.</param>
    /// <param name="Z16">z rounded to bf16 (its shadow: the o product's operand), or 0.</param>
    /// <param name="SeqLen">Positions per prompt.</param>
    /// <param name="Heads">Query heads.</param>
    /// <param name="KvHeads">Key/value heads (a divisor of Heads: GQA groups).</param>
    /// <param name="HeadDim">Channels per head (a multiple of 16, at most 128).</param>
    /// <param name="Scale">The score scale, 1/√HeadDim.</param>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct FlashBf16ForwardArgs(nint Q, nint K, nint V, nint Z, nint Lse, nint Z16,
        int SeqLen, int Heads, int KvHeads, int HeadDim, float Scale);
    internal static readonly Kernel<FlashBf16ForwardArgs> FlashBf16ForwardKernel = Kernel.Declare<FlashBf16ForwardArgs>("attention_flash_bf16_forward");
    internal static readonly Kernel<FlashBackwardDqArgs> FlashBf16BackwardDqKernel = Kernel.Declare<FlashBackwardDqArgs>("attention_flash_bf16_backward_dq");
    /// <summary>The fp32 dk/dv kernel's arguments, plus Dv16: where dv rounded to bf16 goes (or 0), rows Dv16Stride values
    /// apart: dv's columns of the [dq | dk | dv] operand, Heads·HeadDim + 2·KvHeads·HeadDim values a row.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct FlashBf16BackwardDkDvArgs(nint Dz, nint Q, nint K, nint V, nint Lse, nint DSum, nint Dk, nint Dv,
        nint Dv16, int Dv16Stride, int SeqLen, int Heads, int KvHeads, int HeadDim, float Scale, int Exact);
    internal static readonly Kernel<FlashBf16BackwardDkDvArgs> FlashBf16BackwardDkDvKernel = Kernel.Declare<FlashBf16BackwardDkDvArgs>("attention_flash_bf16_backward_dkdv");

    SafeHandle? flashBf16Scratch;  // bf16 copies of q, k, v (and dz) for one attention call, where they have no shadow
    long flashBf16Capacity;

    /// <summary>Whether attention runs on the bf16 tensor-core kernels: bf16 precision and a head dim they take.</summary>
    public bool UsesBf16Attention(AttentionShape s) => Precision == GemmPrecision.Bf16 && Bf16AttentionTakes(s.HeadDim);

    /// <summary>Whether the bf16 kernels take this head dim (a multiple of 16, at most 128); the memory plan asks too.</summary>
    public static bool Bf16AttentionTakes(int headDim) => headDim % 16 == 0 && headDim <= 128;

    /// <summary>Dynamic shared memory of the bf16 kernels: two buffers of 64 bf16 rows (head dim + 8, padded against bank
    /// conflicts) and two of 64 floats.</summary>
    public static int FlashBf16Shared(AttentionShape s) => 2 * FlashBf16Rows * (s.HeadDim + 8) * 2 + 2 * 2 * 32 * sizeof(float);

    /// <summary>Grid of the bf16 forward and dq (rows = packed (position, head) pairs of a kv group) or dk/dv (rows = keys).</summary>
    public static Dim3 FlashBf16Grid(AttentionShape s, bool keyMajor)
    {
        long rows = keyMajor ? s.SeqLen : (long)s.SeqLen * (s.Heads / s.KvHeads);
        return new((uint)((rows + FlashBf16Rows - 1) / FlashBf16Rows), (uint)s.KvHeads, (uint)s.Batch);
    }

    /// <summary>Rounds the given tensors into one scratch buffer, each copy at a 256-byte boundary; their addresses.</summary>
    nint[] Bf16Copies(params Tensor[] tensors)
    {
        long[] offsets = new long[tensors.Length];
        long total = 0;
        for (int i = 0; i < tensors.Length; i++)
        {
            offsets[i] = total;
            total += (tensors[i].Length * 2 + 255) / 256 * 256;
        }
        nint basePtr = Stage(ref flashBf16Scratch, ref flashBf16Capacity, Math.Max(total, 256));
        var result = new nint[tensors.Length];
        for (int i = 0; i < tensors.Length; i++)
        {
            // A tensor some product just read in bf16 is not converted again; a stored bf16 one (StoreForBackward) is its own.
            nint shadow = tensors[i] is CudaTensor { IsBf16: true } stored ? DevBf16(stored) : ShadowOf(tensors[i]);
            result[i] = shadow != 0 ? shadow : basePtr + (nint)offsets[i];
            if (shadow == 0) ConvertToBf16(In(tensors[i]), result[i], tensors[i].Length);
        }
        return result;
    }

    void DisposeStreamingScratch()
    {
        flashBf16Scratch?.Dispose();
        flashBf16Scratch = null;
        DisposeStoredScratch();
    }

    /// <summary>Dynamic shared memory of every attention_flash kernel: two tiles of head-dim rows and two of scalars.</summary>
    public static int FlashShared(AttentionShape s)
    {
        long bytes = (long)FlashTile * (2L * s.HeadDim + 2) * sizeof(float);
        if (bytes > MaxDynamicShared)
            throw new NotSupportedException($"streaming attention with head dim {s.HeadDim} needs {bytes} bytes of shared memory per block (at most {MaxDynamicShared})");
        return (int)bytes;
    }

    public static Dim3 FlashGrid(AttentionShape s, int heads) =>
        new((uint)((s.SeqLen + FlashRows - 1) / FlashRows), (uint)heads, (uint)s.Batch);

    public void StreamingAttention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor lse)
    {
        OpContracts.StreamingAttention(q, k, v, shape, z, lse);
        if (shape.Rows == 0 || shape.Heads == 0) return;
        using var _ = Range("attention_flash_forward");
        if (UsesBf16Attention(shape))
        {
            var c = Bf16Copies(q, k, v);
            // The backward reads the same q, k, v: their shadows stay (until it has read them, or they are written or
            // disposed); kept before z's slot is taken, so that slot cannot be one of theirs.
            Keep(q); Keep(k); Keep(v);
            var slot = ShadowSlot(z);   // z feeds the o product: its bf16 operand is stored beside it
            var work = FlashWork(shape, products: 2, bytesPerOperand: 2);
            Launch(FlashBf16ForwardKernel, FlashBf16Grid(shape, keyMajor: false), new Dim3(FlashBf16Threads), FlashBf16Shared(shape),
                new FlashBf16ForwardArgs(c[0], c[1], c[2], Dev(z), Dev(lse), slot.Address, shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, AttentionScale(shape)),
                work with { Bytes = work.Bytes + 2.0 * z.Length });
            Publish(slot, z);
            return;
        }
        Launch(FlashForwardKernel, FlashGrid(shape, shape.Heads), new Dim3(FlashRows), FlashShared(shape),
            new FlashForwardArgs(In(q), In(k), In(v), Dev(z), Dev(lse), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, AttentionScale(shape)),
            FlashWork(shape, products: 2));
    }

    public void StreamingAttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape,
        AttentionRule rule, Tensor dq, Tensor dk, Tensor dv)
    {
        bool exact = OpContracts.StreamingAttentionBackward(dz, q, k, v, o, lse, shape, rule, dq, dk, dv);
        if (shape.Rows == 0 || shape.Heads == 0) return;
        using var _ = Range("attention_flash_backward");
        long stats = (long)shape.Batch * shape.Heads * shape.SeqLen;
        // D = rowsum(dz ∘ o): [B, H, T] floats of the reusable score scratch (linear in T; unread when frozen).
        nint dsum = Scores(Math.Max(stats, 1));
        if (UsesBf16Attention(shape))
        {
            StreamingBackwardBf16(dz, q, k, v, o, lse, shape, exact, dsum, dq, dk, dv);
            return;
        }
        // q, k, v stored in bf16 (Bf16 with a head dim the bf16 kernels do not take) are widened for these fp32 kernels.
        var qkv = Fp32Operands(q, k, v);
        if (exact)
        {
            Launch(FlashRowDotKernel, GridFor(stats), new Dim3(ElementwiseBlock), 0,
                new FlashRowDotArgs(In(dz), In(o), dsum, shape.Batch, shape.SeqLen, shape.Heads, shape.HeadDim),
                OpWork.Streaming(stats * shape.HeadDim, 2, 2));
            Launch(FlashBackwardDqKernel, FlashGrid(shape, shape.Heads), new Dim3(FlashRows), FlashShared(shape),
                new FlashBackwardDqArgs(In(dz), qkv[0], qkv[1], qkv[2], In(lse), dsum, Dev(dq), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, AttentionScale(shape)),
                FlashWork(shape, products: 3));
        }
        else
        {
            Fill(dq, 0f);  // the frozen pattern passes nothing to q (nor k: the kernel writes zeros)
        }
        Launch(FlashBackwardDkDvKernel, FlashGrid(shape, shape.KvHeads), new Dim3(FlashRows), FlashShared(shape),
            new FlashBackwardDkDvArgs(In(dz), qkv[0], qkv[1], qkv[2], In(lse), dsum, Dev(dk), Dev(dv), shape.SeqLen, shape.Heads, shape.KvHeads,
                shape.HeadDim, AttentionScale(shape), exact ? 1 : 0),
            FlashWork(shape, products: exact ? 4 : 2));
    }

    void StreamingBackwardBf16(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape, bool exact,
        nint dsum, Tensor dq, Tensor dk, Tensor dv)
    {
        long stats = (long)shape.Batch * shape.Heads * shape.SeqLen;
        float scale = AttentionScale(shape);
        int shared = FlashBf16Shared(shape);
        if (exact && ShadowOf(dz) == 0)
        {
            // The row term D = rowsum(dz ∘ o) reads all of dz: it writes dz's bf16 shadow on the way.
            var slot = ShadowSlot(dz);
            Launch(FlashRowDotBf16Kernel, GridFor(stats), new Dim3(ElementwiseBlock), 0,
                new FlashRowDotBf16Args(In(dz), In(o), dsum, slot.Address, shape.Batch, shape.SeqLen, shape.Heads, shape.HeadDim),
                OpWork.Streaming(stats * shape.HeadDim, 2, 2) with { Bytes = stats * shape.HeadDim * 10.0 });
            Publish(slot, dz);
        }
        else if (exact)
        {
            Launch(FlashRowDotKernel, GridFor(stats), new Dim3(ElementwiseBlock), 0,
                new FlashRowDotArgs(In(dz), In(o), dsum, shape.Batch, shape.SeqLen, shape.Heads, shape.HeadDim),
                OpWork.Streaming(stats * shape.HeadDim, 2, 2));
        }
        var c = Bf16Copies(dz, q, k, v);
        if (exact)
        {
            Launch(FlashBf16BackwardDqKernel, FlashBf16Grid(shape, keyMajor: false), new Dim3(FlashBf16Threads), shared,
                new FlashBackwardDqArgs(c[0], c[1], c[2], c[3], In(lse), dsum, Dev(dq), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, scale),
                FlashWork(shape, products: 3, bytesPerOperand: 2));
        }
        else
        {
            Fill(dq, 0f);
        }
        // dv's bf16 copy goes straight into its columns of [dq | dk | dv], the stacked Q/K/V input-gradient product's
        // operand; the inverse RoPE on dq and dk writes theirs (Ops/Rope.cs), so the product converts nothing.
        int width = dq.Columns + dk.Columns + dv.Columns;
        nint concat = ConcatSlot((long)dv.Rows * width);
        var work = FlashWork(shape, products: exact ? 4 : 2, bytesPerOperand: 2);
        Launch(FlashBf16BackwardDkDvKernel, FlashBf16Grid(shape, keyMajor: true), new Dim3(FlashBf16Threads), shared,
            new FlashBf16BackwardDkDvArgs(c[0], c[1], c[2], c[3], In(lse), dsum, Dev(dk), Dev(dv), concat + (nint)(2L * (dq.Columns + dk.Columns)), width,
                shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, scale, exact ? 1 : 0),
            work with { Bytes = work.Bytes + 2.0 * dv.Length });
        PublishConcat([dq, dk, dv], written: dv);
        // The forward's q, k, v shadows were kept for this read: freed now.
        Release(q); Release(k); Release(v);
    }

    /// <summary>Declared work: <paramref name="products"/> head-dim dot products per causal (query, key) pair; operands read once, no pattern.</summary>
    static OpWork FlashWork(AttentionShape s, int products, int bytesPerOperand = sizeof(float))
    {
        double pairs = (double)s.Batch * s.Heads * s.SeqLen * (s.SeqLen + 1) / 2;
        double operands = (double)s.Rows * (2L * s.QWidth + 2L * s.KvWidth);
        double statistics = (double)s.Batch * s.Heads * s.SeqLen;
        return new OpWork(products * 2 * pairs * s.HeadDim, operands * bytesPerOperand + statistics * sizeof(float));
    }
}
