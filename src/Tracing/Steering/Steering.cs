using NeuronTrace.Model;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Steering;

/// <summary>One candidate next token: its id, readable piece (null without a tokenizer), logit and softmax probability.</summary>
/// <param name="Id">The token id.</param>
/// <param name="Piece">The token as text; null without a tokenizer.</param>
/// <param name="Logit">Its logit at the prompt's last position.</param>
/// <param name="Prob">Its softmax probability there.</param>
public sealed record TokenScore(int Id, string? Piece, float Logit, float Prob);

/// <summary>What steering did: next-token candidates and greedy continuations without and with the edits.</summary>
/// <param name="Before">The top next tokens of the unedited run, most likely first.</param>
/// <param name="After">The top next tokens with the edits.</param>
/// <param name="ContinuationBefore">The greedy continuation of the unedited run (token ids).</param>
/// <param name="ContinuationAfter">The greedy continuation with the edits.</param>
/// <param name="EditedValues">How many neuron values (edit × position) the edits changed.</param>
public sealed record SteeringResult(
    IReadOnlyList<TokenScore> Before, IReadOnlyList<TokenScore> After,
    IReadOnlyList<int> ContinuationBefore, IReadOnlyList<int> ContinuationAfter,
    int EditedValues);

/// <summary>Interchange flip rates of a circuit and of a random set of the same size (docs/method.md §7.2).</summary>
/// <param name="Lines">Task lines evaluated.</param>
/// <param name="Nodes">How many <c>mlp_act</c> nodes the circuit patches (nodes of other sites are ignored).</param>
/// <param name="BaselineRate">Fraction of lines where the unedited clean run already prefers the patch answer.</param>
/// <param name="CircuitRate">Fraction where logit(patch answer) &gt; logit(clean answer) after patching the circuit.</param>
/// <param name="RandomRate">The same for <paramref name="Nodes"/> random <c>mlp_act</c> nodes.</param>
public sealed record FlipRates(int Lines, int Nodes, double BaselineRate, double CircuitRate, double RandomRate);

/// <summary>
/// Steering in the neuron basis (docs/method.md §7): edits of <c>mlp_act</c> units (down_proj inputs) applied through an
/// <see cref="InterventionPlan"/> (value ← value ⊙ scale + offset), and interchange patching of circuits.
/// </summary>
internal static class Steering
{
    /// <summary>
    /// Runs the prompt with and without <paramref name="edits"/>: the top next tokens of each, then a greedy continuation
    /// of <paramref name="continueSteps"/> tokens of each. In the edited continuation the edits are re-applied at the same
    /// prompt positions every step; generated positions are never edited. FromSource edits need <paramref name="sourceIds"/>.
    /// </summary>
    public static SteeringResult Run(Llama model, int[] promptIds, IReadOnlyList<NeuronEdit> edits, int topTokens, int continueSteps,
        int[]? sourceIds = null, ITextTokenizer? tokenizer = null)
    {
        if (promptIds.Length == 0) throw new ArgumentException("the prompt has no tokens");
        if (topTokens < 1) throw new ArgumentException("topTokens must be at least 1");
        if (continueSteps < 0) throw new ArgumentException("continueSteps must not be negative");
        var resolved = Resolve(model, promptIds, edits, sourceIds);

        List<TokenScore> before, after;
        using (var pass = model.Forward(new TokenBatch([promptIds]), LogitRows.Last))
            before = Top(pass.HostLogits(), topTokens, tokenizer);
        using (var plan = BuildPlan(model, resolved, promptIds.Length))
        using (var pass = model.Forward(new TokenBatch([promptIds]), LogitRows.Last, plan))
            after = Top(pass.HostLogits(), topTokens, tokenizer);

        var contBefore = Continue(model, promptIds, [], continueSteps);
        var contAfter = Continue(model, promptIds, resolved, continueSteps);
        return new SteeringResult(before, after, contBefore, contAfter, resolved.Count);
    }

    /// <summary>One edited value: value ← value · Scale + Offset at (layer, absolute position, neuron).</summary>
    public readonly record struct ResolvedEdit(int Layer, int Position, int Neuron, float Scale, float Offset);

    /// <summary>
    /// Turns edits into per-value scale/offset pairs for a prompt; several edits of the same value compose in order.
    /// FromSource reads the source prompt's <c>mlp_act</c> at the same position from the end; a single-position =src edit the
    /// source prompt is too short for is an error, an @all edit skips the positions the source does not have.
    /// </summary>
    public static List<ResolvedEdit> Resolve(Llama model, int[] promptIds, IReadOnlyList<NeuronEdit> edits, int[]? sourceIds)
    {
        var c = model.Config;
        int n = promptIds.Length;
        foreach (var e in edits)
        {
            if (e.Layer < 0 || e.Layer >= c.Layers) throw new ArgumentException($"edit {e}: layer {e.Layer} is out of range (the model has {c.Layers} layers)");
            if (e.Neuron < 0 || e.Neuron >= c.HiddenDim) throw new ArgumentException($"edit {e}: neuron {e.Neuron} is out of range (mlp_act has {c.HiddenDim} units)");
            if (e.PositionKind != PositionKind.All && (e.Position < 0 || e.Position >= n))
                throw new ArgumentException($"edit {e}: position {e.Position} is outside the {n}-token prompt");
        }
        Dictionary<int, float[]>? source = null;
        int sourceLen = 0;
        if (edits.Any(e => e.Mode == EditMode.FromSource))
        {
            if (sourceIds is null || sourceIds.Length == 0) throw new ArgumentException("a FromSource (=src) edit needs a source prompt");
            sourceLen = sourceIds.Length;
            // A single-position =src edit whose position the source prompt does not have would change nothing: refuse it.
            foreach (var e in edits.Where(e => e.Mode == EditMode.FromSource && e.PositionKind != PositionKind.All))
            {
                int fromEnd = e.PositionKind == PositionKind.FromEnd ? e.Position : n - 1 - e.Position;
                if (fromEnd >= sourceLen)
                    throw new ArgumentException($"edit {e}: position {fromEnd} from the end is outside the {sourceLen}-token source prompt");
            }
            source = new();
            using var pass = model.Forward(new TokenBatch([sourceIds]), LogitRows.None);
            foreach (int l in edits.Where(e => e.Mode == EditMode.FromSource).Select(e => e.Layer).Distinct())
                source[l] = pass.HostSite(NodeSite.MlpAct, l);
        }

        var map = new Dictionary<(int, int, int), (float Scale, float Offset)>();
        var order = new List<(int, int, int)>();
        foreach (var e in edits)
            foreach (int p in e.AbsolutePositions(n))
            {
                float s, o;
                switch (e.Mode)
                {
                    case EditMode.Scale: s = e.Value; o = 0f; break;
                    case EditMode.Set: s = 0f; o = e.Value; break;
                    default:
                        int fromEnd = n - 1 - p, srcPos = sourceLen - 1 - fromEnd;
                        if (srcPos < 0) continue;
                        s = 0f; o = source![e.Layer][srcPos * c.HiddenDim + e.Neuron];
                        break;
                }
                var key = (e.Layer, p, e.Neuron);
                if (map.TryGetValue(key, out var prev)) map[key] = (prev.Scale * s, prev.Offset * s + o);
                else { map[key] = (s, o); order.Add(key); }
            }
        return order.Select(k => new ResolvedEdit(k.Item1, k.Item2, k.Item3, map[k].Scale, map[k].Offset)).ToList();
    }

    /// <summary>An <c>mlp_act</c> plan for one prompt of <paramref name="length"/> tokens (positions ≥ length of the prompt's edits are untouched).</summary>
    public static InterventionPlan BuildPlan(Llama model, IReadOnlyList<ResolvedEdit> edits, int length)
    {
        var be = model.Backend;
        int w = model.Config.HiddenDim;
        var plan = new InterventionPlan();
        foreach (var layer in edits.GroupBy(e => e.Layer))
        {
            var scale = new float[length * w];
            var offset = new float[length * w];
            Array.Fill(scale, 1f);
            foreach (var e in layer)
            {
                if (e.Position >= length) continue;
                scale[e.Position * w + e.Neuron] = e.Scale;
                offset[e.Position * w + e.Neuron] = e.Offset;
            }
            plan.Set(NodeSite.MlpAct, layer.Key, be.Upload(scale, length, w), be.Upload(offset, length, w));
        }
        return plan;
    }

    /// <summary>Greedy continuation (no KV cache: each step re-runs the prefix with the prompt edits); stops at BOS or the context end.</summary>
    static List<int> Continue(Llama model, int[] promptIds, IReadOnlyList<ResolvedEdit> edits, int steps)
    {
        var ids = new List<int>(promptIds);
        var generated = new List<int>();
        for (int s = 0; s < steps && ids.Count < model.Config.MaxSeqLen; s++)
        {
            using var plan = edits.Count > 0 ? BuildPlan(model, edits, ids.Count) : null;
            using var pass = model.Forward(new TokenBatch([ids.ToArray()]), LogitRows.Last, plan);
            int next = GreedyGenerator.ArgMax(pass.HostLogits());
            if (next == model.Config.BosId) break;
            ids.Add(next);
            generated.Add(next);
        }
        return generated;
    }

    static List<TokenScore> Top(float[] logits, int k, ITextTokenizer? tok)
    {
        float max = logits.Max();
        double z = 0;
        foreach (float v in logits) z += Math.Exp(v - max);
        return Metric.TopK(logits, k)
            .Select(i => new TokenScore(i, tok?.Piece(i), logits[i], (float)(Math.Exp(logits[i] - max) / z))).ToList();
    }

    /// <summary>
    /// Interchange test of a circuit: for each task line, the circuit's <c>mlp_act</c> nodes (positions from the end) take
    /// their values from the patch prompt in a run of the clean prompt, and the line flips when logit(patch answer) &gt;
    /// logit(clean answer). The control patches the same number of distinct random <c>mlp_act</c> nodes (seeded), uniform
    /// over layers, units and the positions from the end that every line has. Nodes of other sites are ignored.
    /// </summary>
    public static FlipRates FlipRate(Llama model, PromptTask task, IEnumerable<NodeId> circuit, int randomSeed, int batchSize = 16)
    {
        var c = model.Config;
        var nodes = circuit.Where(n => n.Site == NodeSite.MlpAct).Distinct().ToList();
        var pairs = task.Pairs.Where(p => p.PatchIds is not null && p.PatchAnswer is not null).ToList();
        if (pairs.Count == 0) throw new ArgumentException($"{task.Name}: flip rates need paired lines (patch_prefix and patch_answer)");
        foreach (var n in nodes)
            if (n.Layer < 0 || n.Layer >= c.Layers || n.Index < 0 || n.Index >= c.HiddenDim || n.Position < 0)
                throw new ArgumentException($"circuit node {n} does not fit the model");
        // Random nodes come from the positions every line has, so each of them is patched on every line.
        int positions = pairs.Min(p => Math.Min(p.CleanIds.Length, p.PatchIds!.Length));
        var random = RandomNodes(nodes.Count, c.Layers, positions, c.HiddenDim, randomSeed);

        int baseFlips = 0, circuitFlips = 0, randomFlips = 0;
        for (int start = 0; start < pairs.Count; start += batchSize)
        {
            var chunk = pairs.Skip(start).Take(batchSize).ToList();
            baseFlips += Flips(model, chunk, []);
            circuitFlips += Flips(model, chunk, nodes);
            randomFlips += Flips(model, chunk, random);
        }
        double N = pairs.Count;
        return new FlipRates(pairs.Count, nodes.Count, baseFlips / N, circuitFlips / N, randomFlips / N);
    }

    static List<NodeId> RandomNodes(int k, int layers, int positions, int width, int seed)
    {
        var rng = new Random(seed);
        long total = (long)layers * positions * width;
        k = (int)Math.Min(k, total);
        var chosen = new HashSet<long>();
        while (chosen.Count < k) chosen.Add(rng.NextInt64(total));
        return chosen.Select(f => new NodeId(NodeSite.MlpAct, (int)(f / ((long)positions * width)), (int)(f / width % positions), (int)(f % width))).ToList();
    }

    /// <summary>How many lines prefer the patch answer when <paramref name="nodes"/> take their patch-prompt values.</summary>
    static int Flips(Llama model, List<PromptPair> pairs, IReadOnlyList<NodeId> nodes)
    {
        var c = model.Config; var be = model.Backend;
        int w = c.HiddenDim;
        var clean = new TokenBatch(pairs.Select(p => p.CleanIds).ToList());
        using var plan = new InterventionPlan();
        if (nodes.Count > 0)
        {
            var patch = new TokenBatch(pairs.Select(p => p.PatchIds!).ToList());
            using var patchPass = model.Forward(patch, LogitRows.None);
            foreach (var layer in nodes.GroupBy(n => n.Layer))
            {
                var a = patchPass.HostSite(NodeSite.MlpAct, layer.Key);
                var scale = new float[clean.Rows * w];
                var offset = new float[clean.Rows * w];
                Array.Fill(scale, 1f);
                foreach (var n in layer)
                    for (int b = 0; b < pairs.Count; b++)
                    {
                        int row = clean.RowFromEnd(b, n.Position), src = patch.RowFromEnd(b, n.Position);
                        if (row < 0 || src < 0) continue;
                        scale[row * w + n.Index] = 0f;
                        offset[row * w + n.Index] = a[src * w + n.Index];
                    }
                plan.Set(NodeSite.MlpAct, layer.Key, be.Upload(scale, clean.Rows, w), be.Upload(offset, clean.Rows, w));
            }
        }
        using var pass = model.Forward(clean, LogitRows.Last, plan.IsEmpty ? null : plan);
        var logits = pass.HostLogits();
        int v = c.VocabSize, flips = 0;
        for (int b = 0; b < pairs.Count; b++)
            if (logits[b * v + pairs[b].PatchAnswer!.Value] > logits[b * v + pairs[b].CleanAnswer]) flips++;
        return flips;
    }
}
