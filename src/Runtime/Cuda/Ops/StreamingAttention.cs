using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Launchers of native/kernels/attention_flash.cu (fp32) and attention_flash_bf16.cu (bf16 tensor cores): streaming
/// causal GQA attention that keeps a log-sum-exp per row instead of the [B, H, T, T] pattern
/// (docs/streaming-attention.md), forward and backward (dq query-major, dk/dv key-major, so no floating-point
/// atomics). Under <see cref="GemmPrecision.Bf16"/> with a head dim the bf16 kernels take (a multiple of 16, at
/// most 128) q, k, v and dz are rounded to bf16 copies and the tensor-core kernels run; Fp32 and TF32 keep the fp32
/// kernels, which are exact up to summation order.
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

    internal static readonly Kernel<FlashForwardArgs> FlashBf16ForwardKernel = Kernel.Declare<FlashForwardArgs>("attention_flash_bf16_forward");
    internal static readonly Kernel<FlashBackwardDqArgs> FlashBf16BackwardDqKernel = Kernel.Declare<FlashBackwardDqArgs>("attention_flash_bf16_backward_dq");
    internal static readonly Kernel<FlashBackwardDkDvArgs> FlashBf16BackwardDkDvKernel = Kernel.Declare<FlashBackwardDkDvArgs>("attention_flash_bf16_backward_dkdv");

    SafeHandle? flashBf16Scratch;  // bf16 copies of q, k, v (and dz) for one attention call
    long flashBf16Capacity;

    /// <summary>Whether attention runs on the bf16 tensor-core kernels: bf16 precision and a head dim they take.</summary>
    public bool UsesBf16Attention(AttentionShape s) => Precision == GemmPrecision.Bf16 && s.HeadDim % 16 == 0 && s.HeadDim <= 128;

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
            nint shadow = ShadowOf(tensors[i]);   // a tensor some product just read in bf16 is not converted again
            result[i] = shadow != 0 ? shadow : basePtr + (nint)offsets[i];
            if (shadow == 0) ConvertToBf16(Dev(tensors[i]), result[i], tensors[i].Length);
        }
        return result;
    }

    void DisposeStreamingScratch()
    {
        flashBf16Scratch?.Dispose();
        flashBf16Scratch = null;
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
            Launch(FlashBf16ForwardKernel, FlashBf16Grid(shape, keyMajor: false), new Dim3(FlashBf16Threads), FlashBf16Shared(shape),
                new FlashForwardArgs(c[0], c[1], c[2], Dev(z), Dev(lse), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, AttentionScale(shape)),
                FlashWork(shape, products: 2, bytesPerOperand: 2));
            return;
        }
        Launch(FlashForwardKernel, FlashGrid(shape, shape.Heads), new Dim3(FlashRows), FlashShared(shape),
            new FlashForwardArgs(Dev(q), Dev(k), Dev(v), Dev(z), Dev(lse), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, AttentionScale(shape)),
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
        if (exact)
        {
            Launch(FlashRowDotKernel, GridFor(stats), new Dim3(ElementwiseBlock), 0,
                new FlashRowDotArgs(Dev(dz), Dev(o), dsum, shape.Batch, shape.SeqLen, shape.Heads, shape.HeadDim),
                OpWork.Streaming(stats * shape.HeadDim, 2, 2));
            Launch(FlashBackwardDqKernel, FlashGrid(shape, shape.Heads), new Dim3(FlashRows), FlashShared(shape),
                new FlashBackwardDqArgs(Dev(dz), Dev(q), Dev(k), Dev(v), Dev(lse), dsum, Dev(dq), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, AttentionScale(shape)),
                FlashWork(shape, products: 3));
        }
        else
        {
            Fill(dq, 0f);  // the frozen pattern passes nothing to q (nor k: the kernel writes zeros)
        }
        Launch(FlashBackwardDkDvKernel, FlashGrid(shape, shape.KvHeads), new Dim3(FlashRows), FlashShared(shape),
            new FlashBackwardDkDvArgs(Dev(dz), Dev(q), Dev(k), Dev(v), Dev(lse), dsum, Dev(dk), Dev(dv), shape.SeqLen, shape.Heads, shape.KvHeads,
                shape.HeadDim, AttentionScale(shape), exact ? 1 : 0),
            FlashWork(shape, products: exact ? 4 : 2));
    }

    void StreamingBackwardBf16(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape, bool exact,
        nint dsum, Tensor dq, Tensor dk, Tensor dv)
    {
        long stats = (long)shape.Batch * shape.Heads * shape.SeqLen;
        var c = Bf16Copies(dz, q, k, v);
        float scale = AttentionScale(shape);
        int shared = FlashBf16Shared(shape);
        if (exact)
        {
            Launch(FlashRowDotKernel, GridFor(stats), new Dim3(ElementwiseBlock), 0,
                new FlashRowDotArgs(Dev(dz), Dev(o), dsum, shape.Batch, shape.SeqLen, shape.Heads, shape.HeadDim),
                OpWork.Streaming(stats * shape.HeadDim, 2, 2));
            Launch(FlashBf16BackwardDqKernel, FlashBf16Grid(shape, keyMajor: false), new Dim3(FlashBf16Threads), shared,
                new FlashBackwardDqArgs(c[0], c[1], c[2], c[3], Dev(lse), dsum, Dev(dq), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, scale),
                FlashWork(shape, products: 3, bytesPerOperand: 2));
        }
        else
        {
            Fill(dq, 0f);
        }
        Launch(FlashBf16BackwardDkDvKernel, FlashBf16Grid(shape, keyMajor: true), new Dim3(FlashBf16Threads), shared,
            new FlashBackwardDkDvArgs(c[0], c[1], c[2], c[3], Dev(lse), dsum, Dev(dk), Dev(dv), shape.SeqLen, shape.Heads, shape.KvHeads,
                shape.HeadDim, scale, exact ? 1 : 0),
            FlashWork(shape, products: exact ? 4 : 2, bytesPerOperand: 2));
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
