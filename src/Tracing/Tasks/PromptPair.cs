namespace NeuronTrace.Tracing.Tasks;

/// <summary>
/// One line of a feature-circuits task: a clean prompt and its counterfactual, each with a one-token answer.
/// Unpaired lines have no patch prompt (<see cref="PatchIds"/> is null). Ids include BOS.
/// </summary>
/// <param name="Line">The line of the task file (from 1), for messages.</param>
/// <param name="CleanIds">The clean prompt's token ids.</param>
/// <param name="PatchIds">The counterfactual prompt's token ids; null when the line is unpaired.</param>
/// <param name="CleanAnswer">The clean answer's token id.</param>
/// <param name="PatchAnswer">The counterfactual answer's token id; null when the line has none.</param>
/// <param name="Case">The line's <c>case</c> label, if any.</param>
public sealed record PromptPair(int Line, int[] CleanIds, int[]? PatchIds, int CleanAnswer, int? PatchAnswer, string? Case = null)
{
    /// <summary>Whether the line has a counterfactual prompt.</summary>
    public bool IsPaired => PatchIds is not null;
}
