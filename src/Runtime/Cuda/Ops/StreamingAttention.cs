using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Launchers of native/kernels/attention_flash.cu: streaming causal GQA attention that keeps a log-sum-exp per row
/// instead of the [B, H, T, T] pattern (docs/streaming-attention.md), forward and backward (dq query-major, dk/dv
/// key-major, so no floating-point atomics).
/// </summary>
public sealed partial class CudaBackend
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

    /// <param name="Exact">1: the exact gradient (dk from the scores); 0: the frozen pattern (dk = 0, dv only).</param>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct FlashBackwardDkDvArgs(nint Dz, nint Q, nint K, nint V, nint Lse, nint DSum, nint Dk, nint Dv,
        int SeqLen, int Heads, int KvHeads, int HeadDim, float Scale, int Exact);
    internal static readonly Kernel<FlashBackwardDkDvArgs> FlashBackwardDkDvKernel = Kernel.Declare<FlashBackwardDkDvArgs>("attention_flash_backward_dkdv");

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

    /// <summary>Declared work: <paramref name="products"/> head-dim dot products per causal (query, key) pair; operands read once, no pattern.</summary>
    static OpWork FlashWork(AttentionShape s, int products)
    {
        double pairs = (double)s.Batch * s.Heads * s.SeqLen * (s.SeqLen + 1) / 2;
        double operands = (double)s.Rows * (2L * s.QWidth + 2L * s.KvWidth) + (double)s.Batch * s.Heads * s.SeqLen;
        return new OpWork(products * 2 * pairs * s.HeadDim, operands * sizeof(float));
    }
}
