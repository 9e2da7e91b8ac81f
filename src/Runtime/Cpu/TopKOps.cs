namespace NeuronTrace.Runtime.Cpu;

/// <summary>
/// The top-k of a block of score sums by |mean| (<see cref="IBackend.TopKByMagnitude"/>; native/kernels/topk.cu selects
/// the same k on the GPU). Every node gets a distinct 64-bit <see cref="Key"/> ordered as NodeRanking orders the nodes:
/// larger |mean| first, NaN last, ties by the lower flat index. The k largest keys are kept in a heap, O(n log k).
/// </summary>
internal static class TopKOps
{
    /// <summary>High word |mean|'s bits + 1 (0 for NaN, ranked below every number, as float.CompareTo does), low word ~flat.</summary>
    public static ulong Key(float mean, int flat)
    {
        uint magnitude = BitConverter.SingleToUInt32Bits(mean) & 0x7fffffffu;
        uint high = magnitude > 0x7f800000u ? 0u : magnitude + 1u;
        return ((ulong)high << 32) | ~(uint)flat;
    }

    /// <summary>See <see cref="IBackend.TopKByMagnitude"/>; <paramref name="sums"/> is the slab, <paramref name="stride"/> its columns.</summary>
    public static ScoredNode[] Select(ReadOnlySpan<float> sums, int stride, TopKBlock block, ReadOnlySpan<float> scales, int k)
    {
        k = (int)Math.Min(k, block.Nodes);
        if (k <= 0) return [];
        var heap = new PriorityQueue<ScoredNode, ulong>(k + 1);   // the smallest kept key on top
        int flat = block.FirstFlat;
        for (int l = 0; l < block.Layers; l++)
            for (int p = 0; p < block.Positions; p++)
            {
                var row = sums.Slice(checked((int)(((long)l * block.RowsPerLayer + p) * stride + block.FirstColumn)), block.Width);
                float scale = scales[p];
                for (int u = 0; u < row.Length; u++, flat++)
                {
                    float mean = row[u] * scale;
                    ulong key = Key(mean, flat);
                    if (heap.Count < k) heap.Enqueue(new ScoredNode(flat, mean), key);
                    else if (heap.TryPeek(out _, out ulong least) && key > least) heap.EnqueueDequeue(new ScoredNode(flat, mean), key);
                }
            }
        var top = new ScoredNode[heap.Count];
        for (int i = top.Length - 1; i >= 0; i--) top[i] = heap.Dequeue();
        return top;
    }

    /// <summary>Sorts nodes into ranking order (largest key first): how a device's unordered k results are handed out.</summary>
    public static void Sort(ScoredNode[] nodes) =>
        Array.Sort(nodes, (a, b) => Key(b.Mean, b.Flat).CompareTo(Key(a.Mean, a.Flat)));
}
