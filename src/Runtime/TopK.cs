namespace NeuronTrace.Runtime;

/// <summary>A node of a top-k selection: its flat index (NodeGrid's) and its mean score.</summary>
internal readonly record struct ScoredNode(int Flat, float Mean);

/// <summary>
/// One site's nodes in a slab of score sums (ScoreSums), for <see cref="IBackend.TopKByMagnitude"/>: node (l, p, u),
/// l &lt; <paramref name="Layers"/>, p &lt; <paramref name="Positions"/>, u &lt; <paramref name="Width"/>, sums at row
/// l · <paramref name="RowsPerLayer"/> + p, column <paramref name="FirstColumn"/> + u; its flat index is
/// <paramref name="FirstFlat"/> + (l · positions + p) · width + u (the slab's first layer's offset in the whole grid).
/// </summary>
internal readonly record struct TopKBlock(int FirstColumn, int Width, int Layers, int Positions, int RowsPerLayer, int FirstFlat)
{
    public long Nodes => (long)Layers * Positions * Width;
}

/// <summary>
/// A tensor's rows on their way to the host (<see cref="IBackend.StartReadOnHost"/>): the copy is queued, and
/// <see cref="Read"/> hands the values over once it is done (the first read waits for every pending one, one host
/// wait). The tensor must not change, nor be disposed, until it is read.
/// </summary>
internal abstract class PendingHostRead : IDisposable
{
    public abstract void Read(HostValuesReader read);
    public virtual void Dispose() { }
}
