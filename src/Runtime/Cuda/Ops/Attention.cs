using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Launchers of native/kernels/attention.cu: the materialising causal GQA attention (the pattern [B, H, T, T] is
/// written out, as the attribution rules read it) and its backward in two kernels, dq then dk/dv.
/// </summary>
internal sealed partial class CudaBackend
{
    public const int AttentionBlock = 128;
    /// <summary>Query (or key) rows per attention block: NT_ATTN_ROWS in attention.cu.</summary>
    public const int AttentionRows = 16;
    /// <summary>Keys per shared-memory tile: NT_ATTN_KEY_TILE in attention.cu.</summary>
    public const int AttentionKeyTile = 32;

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct AttentionForwardArgs(nint Q, nint K, nint V, nint Z, nint Probs,
        int SeqLen, int Heads, int KvHeads, int HeadDim, float Scale);
    internal static readonly Kernel<AttentionForwardArgs> AttentionForwardKernel = Kernel.Declare<AttentionForwardArgs>("attention_forward");

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct AttentionBackwardDqArgs(nint Dz, nint K, nint V, nint Probs, nint Ds, nint Dq,
        int SeqLen, int Heads, int KvHeads, int HeadDim, float Scale);
    internal static readonly Kernel<AttentionBackwardDqArgs> AttentionBackwardDqKernel = Kernel.Declare<AttentionBackwardDqArgs>("attention_backward_dq");

    /// <param name="Dz">Device pointer to the gradient of the attention output, [batch, SeqLen, Heads·HeadDim].</param>
    /// <param name="Q">Device pointer to the queries, [batch, SeqLen, Heads·HeadDim].</param>
    /// <param name="Probs">Device pointer to the forward's softmax pattern, [batch, Heads, SeqLen, SeqLen].</param>
    /// <param name="Ds">Device pointer to the score gradient the dq kernel wrote, laid out as <paramref name="Probs"/>; read only when <paramref name="Exact"/> is 1.</param>
    /// <param name="Dk">Device pointer the key gradient is written to, [batch, SeqLen, KvHeads·HeadDim].</param>
    /// <param name="Dv">Device pointer the value gradient is written to, [batch, SeqLen, KvHeads·HeadDim].</param>
    /// <param name="SeqLen">Tokens per prompt.</param>
    /// <param name="Heads">Query heads.</param>
    /// <param name="KvHeads">Key/value heads; <paramref name="Heads"/> is a multiple of it (grouped-query attention).</param>
    /// <param name="HeadDim">Channels per head.</param>
    /// <param name="Exact">1: ds holds the score gradient (from the dq kernel); 0: the frozen pattern, dk = 0.</param>
    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct AttentionBackwardDkDvArgs(nint Dz, nint Q, nint Probs, nint Ds, nint Dk, nint Dv,
        int SeqLen, int Heads, int KvHeads, int HeadDim, int Exact);
    internal static readonly Kernel<AttentionBackwardDkDvArgs> AttentionBackwardDkDvKernel = Kernel.Declare<AttentionBackwardDkDvArgs>("attention_backward_dkdv");

    public void Attention(Tensor q, Tensor k, Tensor v, AttentionShape shape, Tensor z, Tensor probs)
    {
        OpContracts.Attention(q, k, v, shape, z, probs);
        if (shape.Rows == 0 || shape.Heads == 0) return;
        using var _ = Range("attention_forward");
        Launch(AttentionForwardKernel, AttentionGrid(shape, shape.Heads), new Dim3(AttentionBlock), AttentionShared(shape),
            new AttentionForwardArgs(Dev(q), Dev(k), Dev(v), Dev(z), Dev(probs), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, AttentionScale(shape)),
            AttentionWork(shape, products: 2));
    }

    public void AttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor probs, AttentionShape shape, AttentionRule rule,
        Tensor dq, Tensor dk, Tensor dv)
    {
        bool exact = OpContracts.AttentionBackward(dz, q, k, v, probs, shape, rule, dq, dk, dv);
        if (shape.Rows == 0 || shape.Heads == 0) return;
        using var _ = Range("attention_backward");
        nint ds = 0;
        if (exact)
        {
            ds = Scores((long)shape.Batch * shape.Heads * shape.SeqLen * shape.SeqLen);
            Launch(AttentionBackwardDqKernel, AttentionGrid(shape, shape.Heads), new Dim3(AttentionBlock), AttentionShared(shape),
                new AttentionBackwardDqArgs(Dev(dz), Dev(k), Dev(v), Dev(probs), ds, Dev(dq), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, AttentionScale(shape)),
                AttentionWork(shape, products: 2));
        }
        else
        {
            Fill(dq, 0f);  // the frozen pattern passes nothing to q (nor k: the kernel writes zeros)
        }
        Launch(AttentionBackwardDkDvKernel, AttentionGrid(shape, shape.KvHeads), new Dim3(AttentionBlock), 0,
            new AttentionBackwardDkDvArgs(Dev(dz), Dev(q), Dev(probs), ds, Dev(dk), Dev(dv), shape.SeqLen, shape.Heads, shape.KvHeads, shape.HeadDim, exact ? 1 : 0),
            AttentionWork(shape, products: exact ? 2 : 1));
    }

    static Dim3 AttentionGrid(AttentionShape s, int heads) =>
        new((uint)((s.SeqLen + AttentionRows - 1) / AttentionRows), (uint)heads, (uint)s.Batch);

    /// <summary>Dynamic shared memory of attention_forward / attention_backward_dq: one key tile, rows padded by one.</summary>
    public static int AttentionShared(AttentionShape s)
    {
        long bytes = (long)AttentionKeyTile * (s.HeadDim + 1) * sizeof(float);
        if (bytes > MaxDynamicShared)
            throw new NotSupportedException($"attention with head dim {s.HeadDim} needs {bytes} bytes of shared memory per block (at most {MaxDynamicShared})");
        return (int)bytes;
    }

    /// <summary>The same float the CPU op computes, so both scale the scores identically.</summary>
    static float AttentionScale(AttentionShape s) => 1f / MathF.Sqrt(s.HeadDim);

    /// <summary>
    /// Declared work of one attention kernel: <paramref name="products"/> causal [T, T] × [T, hd] products per head
    /// (2·hd flops per query-key pair on or below the diagonal each), reading q/k/v-sized operands and the [T, T] pattern.
    /// </summary>
    static OpWork AttentionWork(AttentionShape s, int products)
    {
        double pairs = (double)s.Batch * s.Heads * s.SeqLen * (s.SeqLen + 1) / 2;
        double operands = (double)s.Rows * (2L * s.QWidth + 2L * s.KvWidth);
        double pattern = (double)s.Batch * s.Heads * s.SeqLen * s.SeqLen;
        return new OpWork(products * 2 * pairs * s.HeadDim, (operands + pattern) * sizeof(float));
    }
}
