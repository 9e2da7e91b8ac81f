namespace NeuronTrace.Runtime.Cuda;

/// <summary>Launchers of attention_flash.cu: the streaming attention ops (no [B, H, T, T] buffer, forward or backward).</summary>
public sealed partial class CudaBackend
{
    /// <summary>Threads (query or key rows) per streaming-attention block: NT_FLASH_ROWS in attention_flash.cu.</summary>
    public const int FlashRows = 64;
    /// <summary>Rows per shared-memory tile: NT_FLASH_TILE in attention_flash.cu.</summary>
    public const int FlashTile = 32;

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
        CheckStreaming(shape, q, k, v, lse);
        CheckLength(z, (long)shape.Rows * shape.QWidth, "StreamingAttention z");
        if (shape.Rows == 0 || shape.Heads == 0) return;
        using var _ = Range("attention_flash_forward");
        var a = new KernelArgs();
        a.Pointer(Dev(q)); a.Pointer(Dev(k)); a.Pointer(Dev(v)); a.Pointer(Dev(z)); a.Pointer(Dev(lse));
        a.Int(shape.SeqLen); a.Int(shape.Heads); a.Int(shape.KvHeads); a.Int(shape.HeadDim); a.Float(AttentionScale(shape));
        Launch("attention_flash_forward", FlashGrid(shape, shape.Heads), new Dim3(FlashRows), FlashShared(shape), ref a);
    }

    public void StreamingAttentionBackward(Tensor dz, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, AttentionShape shape,
        AttentionRule rule, Tensor dq, Tensor dk, Tensor dv)
    {
        CheckStreaming(shape, q, k, v, lse);
        CheckLength(dz, q.Length, "StreamingAttentionBackward dz");
        CheckLength(o, q.Length, "StreamingAttentionBackward o");
        CheckLength(dq, q.Length, "StreamingAttentionBackward dq");
        CheckLength(dk, k.Length, "StreamingAttentionBackward dk");
        CheckLength(dv, v.Length, "StreamingAttentionBackward dv");
        bool exact = rule switch
        {
            AttentionRule.Gradient => true,
            AttentionRule.FreezePattern => false,
            _ => throw new ArgumentOutOfRangeException(nameof(rule)),
        };
        if (shape.Rows == 0 || shape.Heads == 0) return;
        using var _ = Range("attention_flash_backward");
        long stats = (long)shape.Batch * shape.Heads * shape.SeqLen;
        // D = rowsum(dz ∘ o): [B, H, T] floats of the reusable score scratch (linear in T; unread when frozen).
        nint dsum = Scores(Math.Max(stats, 1));
        if (exact)
        {
            var r = new KernelArgs();
            r.Pointer(Dev(dz)); r.Pointer(Dev(o)); r.Pointer(dsum);
            r.Int(shape.Batch); r.Int(shape.SeqLen); r.Int(shape.Heads); r.Int(shape.HeadDim);
            Launch("attention_flash_rowdot", GridFor(stats), new Dim3(ElementwiseBlock), 0, ref r);
            var a = new KernelArgs();
            a.Pointer(Dev(dz)); a.Pointer(Dev(q)); a.Pointer(Dev(k)); a.Pointer(Dev(v)); a.Pointer(Dev(lse)); a.Pointer(dsum); a.Pointer(Dev(dq));
            a.Int(shape.SeqLen); a.Int(shape.Heads); a.Int(shape.KvHeads); a.Int(shape.HeadDim); a.Float(AttentionScale(shape));
            Launch("attention_flash_backward_dq", FlashGrid(shape, shape.Heads), new Dim3(FlashRows), FlashShared(shape), ref a);
        }
        else
        {
            Fill(dq, 0f);  // the frozen pattern passes nothing to q (nor k: the kernel writes zeros)
        }
        var b = new KernelArgs();
        b.Pointer(Dev(dz)); b.Pointer(Dev(q)); b.Pointer(Dev(k)); b.Pointer(Dev(v)); b.Pointer(Dev(lse)); b.Pointer(dsum);
        b.Pointer(Dev(dk)); b.Pointer(Dev(dv));
        b.Int(shape.SeqLen); b.Int(shape.Heads); b.Int(shape.KvHeads); b.Int(shape.HeadDim); b.Float(AttentionScale(shape)); b.Int(exact ? 1 : 0);
        Launch("attention_flash_backward_dkdv", FlashGrid(shape, shape.KvHeads), new Dim3(FlashRows), FlashShared(shape), ref b);
    }

    static void CheckStreaming(AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor lse)
    {
        if (s.Batch < 0 || s.SeqLen < 0 || s.Heads < 0 || s.KvHeads <= 0 || s.HeadDim <= 0 || s.Heads % s.KvHeads != 0)
            throw new ArgumentException($"attention shape {s} is not a valid GQA shape");
        CheckLength(q, (long)s.Rows * s.QWidth, "attention q");
        CheckLength(k, (long)s.Rows * s.KvWidth, "attention k");
        CheckLength(v, (long)s.Rows * s.KvWidth, "attention v");
        CheckLength(lse, (long)s.Batch * s.Heads * s.SeqLen, "attention lse");
    }
}
