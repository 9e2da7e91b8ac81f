using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Tests;

/// <summary>Seeded random prompt pairs of equal lengths (per pair) for a small random model.</summary>
static class RandomTasks
{
    public static PromptTask Pairs(int count, int vocab, int seed, int minLen = 3, int maxLen = 7)
    {
        var rng = new Random(seed);
        var pairs = new List<PromptPair>();
        for (int i = 0; i < count; i++)
        {
            int len = rng.Next(minLen, maxLen + 1);
            var clean = new int[len];
            clean[0] = 1;
            for (int t = 1; t < len; t++) clean[t] = rng.Next(3, vocab);
            var patch = (int[])clean.Clone();
            int at = rng.Next(1, len);
            patch[at] = (patch[at] + 1 + rng.Next(vocab - 4)) % (vocab - 3) + 3;
            int a = rng.Next(3, vocab), b;
            do b = rng.Next(3, vocab); while (b == a);
            pairs.Add(new PromptPair(i + 1, clean, patch, a, b));
        }
        return new PromptTask("random", pairs);
    }
}
