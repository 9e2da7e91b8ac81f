namespace NeuronTrace.Model;

/// <summary>
/// Temperature-0 generation as llama2.c's <c>generate</c> runs it: <c>steps</c> positions in all, the prompt tokens
/// forced, stopping early when the model emits BOS. Each step re-runs the prefix (no KV cache): simple and exact,
/// fine for the demo models; attribution never generates.
/// </summary>
internal static class GreedyGenerator
{
    /// <returns>The prompt ids followed by the generated ids (BOS not appended when it stops the run).</returns>
    public static List<int> Generate(Llama model, IReadOnlyList<int> promptIds, int steps, Action<int>? onToken = null)
    {
        if (promptIds.Count == 0) throw new ArgumentException("the prompt has no tokens (not even BOS)");
        if (steps < 1) throw new ArgumentException("steps must be at least 1");
        steps = Math.Min(steps, model.Config.MaxSeqLen);
        var ids = new List<int>(promptIds);
        for (int pos = 0; pos < steps; pos++)
        {
            int next;
            if (pos + 1 < promptIds.Count) next = promptIds[pos + 1];
            else
            {
                using var pass = model.Forward(new TokenBatch([ids.Take(pos + 1).ToArray()]), LogitRows.Last);
                next = ArgMax(pass.HostLogits());
                if (next == model.Config.BosId) break;
                ids.Add(next);
                onToken?.Invoke(next);
                continue;
            }
            if (next == model.Config.BosId) break;
        }
        return ids;
    }

    public static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}
