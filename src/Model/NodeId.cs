namespace NeuronTrace.Model;

/// <summary>
/// One node: a unit at a site of a layer at a token position. <see cref="Position"/> counts from the END of the prompt
/// (0 = the last token, where the metric is read), so prompts of different lengths align.
/// </summary>
public readonly record struct NodeId(NodeSite Site, int Layer, int Position, int Index)
{
    public override string ToString() => $"{Site.Name()}/L{Layer}/P-{Position}/{Index}";
}
