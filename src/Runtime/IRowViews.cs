namespace NeuronTrace.Runtime;

/// <summary>
/// A backend whose tensors can alias a run of another tensor's leading-dimension slices without a copy. The CUDA
/// backend's paired attribution forward (PairedForward in the model) reads its clean and patch halves this way: a
/// split would cost a copy per tensor per layer (more launches than the second forward it saves).
/// </summary>
internal interface IRowViews
{
    /// <summary>
    /// A tensor of shape [<paramref name="count"/>, the rest of <paramref name="t"/>'s shape] over slices
    /// <paramref name="first"/> .. first + count − 1 of <paramref name="t"/>'s leading dimension, in the same memory:
    /// read it, do not write it (a write through one would not be seen by a derived copy the backend keeps of the
    /// other). The memory lives until <paramref name="t"/> and every view of it are disposed, in any order.
    /// </summary>
    Tensor ViewLeading(Tensor t, int first, int count);
}
