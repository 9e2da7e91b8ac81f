namespace NeuronTrace.Runtime;

/// <summary>
/// Shape of a batched causal GQA attention. Rows are <c>b * SeqLen + t</c>; prompts are right-padded, so with a causal
/// mask the padding never reaches a real position and no extra mask is needed.
/// </summary>
internal readonly record struct AttentionShape(int Batch, int SeqLen, int Heads, int KvHeads, int HeadDim)
{
    public int Rows => Batch * SeqLen;
    public int QWidth => Heads * HeadDim;
    public int KvWidth => KvHeads * HeadDim;
    public int Group => Heads / KvHeads;
}
