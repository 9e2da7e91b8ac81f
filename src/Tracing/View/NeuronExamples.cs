using NeuronTrace.Model;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.View;

/// <summary>One dataset example where a neuron fires strongly: the token, the prompt up to it, and the activation.</summary>
public sealed record NeuronExample(string Token, string Snippet, float Activation, int Line, int PositionFromEnd);

/// <summary>
/// Dataset examples per <c>mlp_act</c> neuron: runs the task's clean prompts and keeps, for each (layer, unit), the
/// <c>top</c> token positions with the largest |activation| (any position but BOS of any distinct clean prompt; the sign is kept).
/// </summary>
internal static class NeuronExamples
{
    public static Dictionary<(int Layer, int Unit), List<NeuronExample>> Collect(Llama model, PromptTask task, ITextTokenizer tokenizer,
        IEnumerable<(int Layer, int Unit)> neurons, int top = 5, int batchSize = 32, int snippetChars = 48)
    {
        var wanted = neurons.Distinct().ToList();
        var best = wanted.ToDictionary(n => n, _ => new List<(float Abs, int Pair, int Pos, float A, string Key)>());
        int w = model.Config.HiddenDim;
        var byLayer = wanted.GroupBy(n => n.Layer).ToList();
        // Tasks repeat clean prompts (one per counterfactual); each distinct prompt is run once.
        var prompts = task.Pairs.DistinctBy(p => string.Join(",", p.CleanIds)).ToList();
        for (int start = 0; start < prompts.Count; start += batchSize)
        {
            var pairs = prompts.Skip(start).Take(batchSize).ToList();
            var batch = new TokenBatch(pairs.Select(p => p.CleanIds).ToList());
            using var pass = model.Forward(batch, LogitRows.None);
            foreach (var layer in byLayer)
            {
                var a = pass.HostSite(NodeSite.MlpAct, layer.Key);
                foreach (var n in layer)
                {
                    var list = best[n];
                    for (int b = 0; b < pairs.Count; b++)
                        for (int t = 1; t < batch.Lengths[b]; t++) // position 0 is BOS: no token to show
                        {
                            float v = a[(b * batch.SeqLen + t) * w + n.Unit];
                            float abs = Math.Abs(v);
                            if (list.Count == top && abs <= list[^1].Abs) continue;
                            // Prompts sharing a prefix give the same activation there: keep one example per prefix.
                            string key = string.Join(",", pairs[b].CleanIds.Take(t + 1));
                            if (list.Any(x => x.Key == key)) continue;
                            list.Add((abs, start + b, t, v, key));
                            list.Sort((x, y) => y.Abs.CompareTo(x.Abs));
                            if (list.Count > top) list.RemoveAt(list.Count - 1);
                        }
                }
            }
        }
        var result = new Dictionary<(int, int), List<NeuronExample>>();
        foreach (var (n, list) in best)
            result[n] = list.Select(e =>
            {
                var ids = prompts[e.Pair].CleanIds;
                string token = tokenizer.Decode(ids[e.Pos - 1], ids[e.Pos]);
                string text = tokenizer.Decode(ids.Take(e.Pos + 1).ToList());
                if (text.Length > snippetChars) text = "…" + text[^snippetChars..];
                return new NeuronExample(token, text, e.A, prompts[e.Pair].Line, ids.Length - 1 - e.Pos);
            }).ToList();
        return result;
    }
}
