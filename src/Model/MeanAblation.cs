using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// One site and layer's mean-ablation edit, as <see cref="IBackend.MeanAblate"/> takes it: the means [positions, width]
/// on the backend (borrowed: the caller owns them, so many plans can share one upload), the keep bits
/// ([mask rows, <see cref="AblationMask.WordsPerRow"/>] words) and, per batch row, its mask row and mean row (−1: none).
/// </summary>
internal sealed record MeanAblation(Tensor Means, uint[] KeepBits, int[] KeepRow, int[] MeanRow);
