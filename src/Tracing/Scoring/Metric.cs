using NeuronTrace.Model;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>
/// A scalar read off the logits at a prompt's last position, with its gradient w.r.t. those logits.
/// Sign conventions are pinned here (docs/method.md §2) and in the README.
/// </summary>
public abstract class Metric
{
    /// <summary>The metric's formula as reports print it, e.g. <c>logit(patch) - logit(clean)</c>.</summary>
    public abstract string Name { get; }

    /// <summary>The metric of one example from its last-position logits.</summary>
    public abstract float Value(ReadOnlySpan<float> logits, PromptPair example);

    /// <summary>Writes ∂metric/∂logits for one example (overwrites <paramref name="gradient"/>).</summary>
    public abstract void Gradient(ReadOnlySpan<float> logits, PromptPair example, Span<float> gradient);

    /// <summary>
    /// For a metric linear in the logits: the non-zeros of <see cref="Gradient"/> for one example as (token, weight),
    /// which do not depend on the logits, so attribution seeds its backward with them on the device and never reads the
    /// logits back. Null (the default) for a metric whose gradient depends on the logits: it is formed densely on the host.
    /// </summary>
    internal virtual (int Token, float Weight)[]? ConstantGradient(PromptPair example) => null;

    /// <summary>
    /// The example mean of the metric for each of <paramref name="replicas"/> copies of <paramref name="examples"/> laid out
    /// back to back in last-position logits [replicas · examples, vocab] (one copy per mask in batched ablation runs).
    /// </summary>
    internal double[] MeanPerReplica(ReadOnlySpan<float> logits, int vocab, IReadOnlyList<PromptPair> examples, int replicas)
    {
        var result = new double[replicas];
        AddPerReplica(logits, vocab, examples, result);
        for (int r = 0; r < replicas; r++) result[r] /= examples.Count;
        return result;
    }

    /// <summary>
    /// Adds each replica's metric over <paramref name="examples"/>, one example at a time in order, to
    /// <paramref name="sums"/> (one per replica): sums run on over batches of a task add as one pass over the task would.
    /// </summary>
    internal void AddPerReplica(ReadOnlySpan<float> logits, int vocab, IReadOnlyList<PromptPair> examples, Span<double> sums)
    {
        for (int r = 0; r < sums.Length; r++)
            for (int b = 0; b < examples.Count; b++) sums[r] += Value(logits.Slice((r * examples.Count + b) * vocab, vocab), examples[b]);
    }

    /// <summary>
    /// Attribution metric for paired data: logit(patch_answer) − logit(clean_answer) on the clean run, so a node whose
    /// move from its clean to its patch value pushes towards the patch answer scores positive (the reference code's sign).
    /// </summary>
    public static Metric TowardsPatch { get; } = new LogitDifference(towardsPatch: true);

    /// <summary>Evaluation metric: logit(clean_answer) − logit(patch_answer), the correct minus the incorrect answer.</summary>
    public static Metric CleanMinusPatch { get; } = new LogitDifference(towardsPatch: false);

    /// <summary>Unpaired attribution metric: logit(clean_answer).</summary>
    public static Metric AnswerLogit { get; } = new AnswerLogitMetric();

    /// <summary>What a task attributes by default: <see cref="TowardsPatch"/> when every line has patch_answer, else <see cref="AnswerLogit"/>.</summary>
    public static Metric AttributionDefault(PromptTask task) => HasPatchAnswers(task) ? TowardsPatch : AnswerLogit;

    /// <summary>What circuits are evaluated by: <see cref="CleanMinusPatch"/> when every line has patch_answer, else <see cref="AnswerLogit"/>.</summary>
    public static Metric EvaluationDefault(PromptTask task) => HasPatchAnswers(task) ? CleanMinusPatch : AnswerLogit;

    static bool HasPatchAnswers(PromptTask task) => task.Pairs.All(p => p.PatchAnswer is not null);

    /// <summary>
    /// Case-study metric (docs/method.md §2, the Dallas → Austin study): the sum of the logits of the model's own top-k next
    /// tokens at each clean prompt's last position. The tokens are fixed here, from one unmodified clean forward (the
    /// reference's focus_logits), so interpolated (IG), patched and ablated runs all read the same k logits.
    /// </summary>
    internal static FocusLogitsMetric SumOfTopKLogits(Llama model, PromptTask task, int k, int batchSize = 32)
    {
        int vocab = model.Config.VocabSize;
        if (k < 1 || k > vocab) throw new ArgumentException($"top-k logits: k = {k} is outside 1..{vocab} (the vocabulary size)");
        var focus = new Dictionary<PromptPair, int[]>(ReferenceEqualityComparer.Instance);
        for (int start = 0; start < task.Count; start += batchSize)
        {
            var pairs = task.Pairs.Skip(start).Take(batchSize).ToList();
            using var pass = model.Forward(new TokenBatch(pairs.Select(p => p.CleanIds).ToList()), LogitRows.Last);
            var logits = pass.HostLogits();
            for (int b = 0; b < pairs.Count; b++) focus[pairs[b]] = TopK(logits.AsSpan(b * vocab, vocab), k);
        }
        return new FocusLogitsMetric(k, focus);
    }

    /// <summary>Indices of the k largest values, largest first; ties broken by the lower index.</summary>
    internal static int[] TopK(ReadOnlySpan<float> values, int k)
    {
        var idx = new List<int>(k + 1);
        for (int i = 0; i < values.Length; i++)
        {
            int at = idx.Count;
            while (at > 0 && values[idx[at - 1]] < values[i]) at--;
            if (at < k) { idx.Insert(at, i); if (idx.Count > k) idx.RemoveAt(k); }
        }
        return idx.ToArray();
    }
}

sealed class LogitDifference(bool towardsPatch) : Metric
{
    public override string Name => towardsPatch ? "logit(patch) - logit(clean)" : "logit(clean) - logit(patch)";

    public override float Value(ReadOnlySpan<float> logits, PromptPair e)
    {
        int patch = e.PatchAnswer ?? throw new InvalidOperationException($"line {e.Line}: a logit difference needs patch_answer");
        float d = logits[e.CleanAnswer] - logits[patch];
        return towardsPatch ? -d : d;
    }

    public override void Gradient(ReadOnlySpan<float> logits, PromptPair e, Span<float> g)
    {
        int patch = e.PatchAnswer ?? throw new InvalidOperationException($"line {e.Line}: a logit difference needs patch_answer");
        g.Clear();
        float sign = towardsPatch ? -1f : 1f;
        g[e.CleanAnswer] += sign;
        g[patch] -= sign;
    }

    internal override (int Token, float Weight)[] ConstantGradient(PromptPair e)
    {
        int patch = e.PatchAnswer ?? throw new InvalidOperationException($"line {e.Line}: a logit difference needs patch_answer");
        float sign = towardsPatch ? -1f : 1f;
        return patch == e.CleanAnswer ? [] : [(e.CleanAnswer, sign), (patch, -sign)];
    }
}

sealed class AnswerLogitMetric : Metric
{
    public override string Name => "logit(clean_answer)";
    public override float Value(ReadOnlySpan<float> logits, PromptPair e) => logits[e.CleanAnswer];
    public override void Gradient(ReadOnlySpan<float> logits, PromptPair e, Span<float> g) { g.Clear(); g[e.CleanAnswer] = 1f; }
    internal override (int Token, float Weight)[] ConstantGradient(PromptPair e) => [(e.CleanAnswer, 1f)];
}

/// <summary>The sum of fixed logits per example: the clean prompt's own top-k tokens (see <see cref="Metric.SumOfTopKLogits"/>).</summary>
internal sealed class FocusLogitsMetric : Metric
{
    readonly IReadOnlyDictionary<PromptPair, int[]> _focus;

    internal FocusLogitsMetric(int k, IReadOnlyDictionary<PromptPair, int[]> focus) { K = k; _focus = focus; }

    public int K { get; }
    public override string Name => $"sum of the clean top-{K} logits";

    /// <summary>The example's k tokens, largest clean logit first.</summary>
    public IReadOnlyList<int> FocusTokens(PromptPair e) =>
        _focus.TryGetValue(e, out var ids) ? ids : throw new ArgumentException($"line {e.Line}: this top-{K} metric was fixed on another task's prompts");

    public override float Value(ReadOnlySpan<float> logits, PromptPair e)
    {
        float s = 0;
        foreach (int i in FocusTokens(e)) s += logits[i];
        return s;
    }

    public override void Gradient(ReadOnlySpan<float> logits, PromptPair e, Span<float> g)
    {
        g.Clear();
        foreach (int i in FocusTokens(e)) g[i] = 1f;
    }

    internal override (int Token, float Weight)[] ConstantGradient(PromptPair e) => FocusTokens(e).Select(i => (i, 1f)).ToArray();
}
