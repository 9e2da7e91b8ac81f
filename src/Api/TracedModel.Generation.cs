using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace;

// Generation and the case-study metric: what `generate` and `attribute --metric top-logits` run.
public sealed partial class TracedModel
{
    /// <summary>
    /// Greedy (temperature 0) continuation of token ids, as <c>generate</c> runs it: positions are run until
    /// <paramref name="steps"/> (prompt included) or the model's context, whichever comes first.
    /// </summary>
    /// <param name="promptIds">The prompt's token ids (BOS first where the model expects one); at least one.</param>
    /// <param name="steps">Positions to run, prompt included (llama2.c's <c>-n</c>).</param>
    /// <param name="onToken">Called with each generated token as it is chosen (to stream it).</param>
    /// <param name="cancellation">Observed before each generated token.</param>
    /// <returns>The prompt's ids followed by the generated ones.</returns>
    /// <exception cref="ArgumentException">The prompt is empty or longer than the model's context.</exception>
    public IReadOnlyList<int> Generate(IReadOnlyList<int> promptIds, int steps, Action<int>? onToken = null, CancellationToken cancellation = default)
    {
        if (promptIds.Count == 0) throw new ArgumentException("an empty prompt: give at least one token (BOS)");
        if (promptIds.Count > Config.MaxSeqLen) throw new ArgumentException($"prompt of {promptIds.Count} tokens exceeds the model's context of {Config.MaxSeqLen}");
        cancellation.ThrowIfCancellationRequested();
        return GreedyGenerator.Generate(Llama, promptIds, steps, t => { cancellation.ThrowIfCancellationRequested(); onToken?.Invoke(t); });
    }

    /// <summary>
    /// The case studies' metric (<c>attribute --metric top-logits</c>): the sum of the logits of the model's own top-k next
    /// tokens at each clean prompt's last position, the tokens fixed here from one unmodified clean forward so that
    /// patched, interpolated and ablated runs all read the same k logits. Pass it as <see cref="AttributionOptions.Metric"/>.
    /// </summary>
    /// <param name="task">The prompts whose top tokens are fixed (the metric applies to these prompts only).</param>
    /// <param name="k">Logits summed per prompt, 1 to the vocabulary size.</param>
    /// <param name="batchSize">Prompts per forward.</param>
    /// <exception cref="ArgumentException"><paramref name="k"/> is outside 1 to the vocabulary size.</exception>
    public Metric TopLogitsMetric(PromptTask task, int k, int batchSize = 32) => Metric.SumOfTopKLogits(Llama, task, k, batchSize);
}
