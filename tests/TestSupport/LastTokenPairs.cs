using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.TestSupport;

/// <summary>
/// The prompt pairs the CUDA-against-CPU tests share: pair i has 3 + i mod 3 tokens (BOS, then seeded random ids), the
/// patch prompt changes its last token, and the answers are tokens 4 and 6.
/// </summary>
internal static class LastTokenPairs
{
    public static PromptTask Task(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        var pairs = Enumerable.Range(0, count).Select(i =>
        {
            int len = 3 + i % 3;
            var clean = Enumerable.Range(0, len).Select(t => t == 0 ? 1 : rng.Next(3, vocab)).ToArray();
            var patch = (int[])clean.Clone();
            patch[len - 1] = (patch[len - 1] + 1) % (vocab - 3) + 3;
            return new PromptPair(i + 1, clean, patch, 4, 6);
        }).ToList();
        return new PromptTask("random", pairs);
    }
}
