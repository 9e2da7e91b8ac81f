namespace NeuronTrace.Tracing.Tasks;

/// <summary>
/// One line of a feature-circuits task: a clean prompt and its counterfactual, each with a one-token answer.
/// Unpaired lines have no patch prompt (<see cref="PatchIds"/> is null). Ids include BOS.
/// </summary>
public sealed record PromptPair(int Line, int[] CleanIds, int[]? PatchIds, int CleanAnswer, int? PatchAnswer, string? Case = null)
{
    public bool IsPaired => PatchIds is not null;
}
