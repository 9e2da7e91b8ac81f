using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>How a node's contribution to the metric is estimated (every method scores (a_baseline − a_clean) ⊙ a gradient).</summary>
public enum AttributionMethod
{
    /// <summary>Attribution patching: (a_p − a_c) ⊙ ∂m/∂a at the clean run.</summary>
    AtP,
    /// <summary>Integrated gradients in activation space, one site at a time (docs/method.md §3.2, feature-circuits style).</summary>
    IG,
    /// <summary>Integrated gradients over interpolated input embeddings, all sites from one path (EAP-IG style).</summary>
    IGInputs,
    /// <summary>RelP: (a_p − a_c) ⊙ the RelP-rule gradient, one backward for all sites (docs/method.md §3.4).</summary>
    RelP,
}

/// <summary>
/// What the "patch" activation is when scoring. Every baseline scores (a_baseline − a_clean) ⊙ g, so a node whose move
/// to its baseline value raises the metric scores positive. (TC's case-study engine writes the zero and mean baselines
/// the other way round, a_c ⊙ g and (a_c − mean) ⊙ g: the negatives of ours, same magnitudes and rankings.)
/// </summary>
public enum Baseline
{
    /// <summary>The activation on the counterfactual prompt (paired data).</summary>
    Patch,
    /// <summary>Zero (unpaired data): score = −a_c ⊙ g.</summary>
    Zero,
    /// <summary>
    /// The mean over all the task's clean prompts at the same layer and position from the end (not per batch, so
    /// scores do not depend on the batch size): score = (mean − a_c) ⊙ g.
    /// </summary>
    Mean,
}

/// <summary>How an attribution runs: the method, the sites scored, the metric and baseline, and batching.</summary>
public sealed record AttributionOptions
{
    /// <summary>The attribution method (default RelP).</summary>
    public AttributionMethod Method { get; init; } = AttributionMethod.RelP;
    /// <summary>The node sites scored (default: all of <see cref="NodeSites.All"/>).</summary>
    public IReadOnlyList<NodeSite> Sites { get; init; } = NodeSites.All;
    /// <summary>Riemann steps for IG (alpha = k/N, k = 0..N−1).</summary>
    public int IgSteps { get; init; } = 10;
    /// <summary>Null = Patch for paired tasks, Zero for unpaired.</summary>
    public Baseline? Baseline { get; init; }
    /// <summary>The rule set RelP uses (default: the authors' released code: LN-rule, identity+half gate rule, softmax gradient).</summary>
    public BackwardRules RelPRules { get; init; } = BackwardRules.RelP;
    /// <summary>Null = <see cref="Metric.TowardsPatch"/> for paired tasks, <see cref="Metric.AnswerLogit"/> for unpaired.</summary>
    public Metric? Metric { get; init; }
    /// <summary>Prompt pairs per forward/backward.</summary>
    public int BatchSize { get; init; } = 32;
    /// <summary>
    /// Token rows (prompt rows × IG path points) one IG forward/backward may hold; the path runs in as many passes as
    /// that needs (at least one point per pass). Every saved activation has this many rows: memory, not results.
    /// The cap binds once steps × rows pass it, and from there peak memory no longer grows with the step count
    /// (issue 15). At 8,192 it bound only past ~200 steps on the bundled task (8 prompts, two halves of ~40 rows), so
    /// 100 steps ran one 4,000-row pass and 800 steps four 8,000-row passes (peak RSS 445 vs 574 MB); at 2,048 both
    /// run ~2,000-row passes.
    /// </summary>
    public int IgRowsPerPass { get; init; } = DefaultIgRowsPerPass;

    /// <summary>The default of <see cref="IgRowsPerPass"/> (also what <see cref="Pipeline.MemoryPlan"/> plans with).</summary>
    public const int DefaultIgRowsPerPass = 2048;
    /// <summary>
    /// Activation checkpointing: every forward keeps only each layer's input r_l and the backward recomputes the layer's
    /// forward from it (one more layer forward per layer; one layer's activations held instead of all). Same scores.
    /// Set by trace and attribute when the memory plan says the stored activations do not fit; forced on by
    /// <c>NEURONTRACE_CHECKPOINT_LAYERS=1</c>.
    /// </summary>
    public bool CheckpointLayers { get; init; }

    /// <summary>
    /// AtP and RelP compute every row: the backward including the rows where no score can be non-zero (before a pair's
    /// first differing token, and padding), which it otherwise leaves out (<see cref="Model.BackwardRows"/>), and the
    /// paired forward's top layer on every row (otherwise its Q, W_o and MLP on the prompts' last rows only, the rows
    /// that reach the logits). Same scores, bit for bit: the reference that tests and the benchmark compare with.
    /// </summary>
    internal bool ComputeEveryRow { get; init; }

    /// <summary>Whether <c>NEURONTRACE_CHECKPOINT_LAYERS=1</c> forces <see cref="CheckpointLayers"/> on (tests, memory experiments).</summary>
    public static bool CheckpointForced => Environment.GetEnvironmentVariable("NEURONTRACE_CHECKPOINT_LAYERS") == "1";
}
