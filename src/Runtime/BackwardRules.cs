namespace NeuronTrace.Runtime;

/// <summary>How the backward pass treats an RMSNorm's scale 1/sqrt(mean(x^2)+eps).</summary>
public enum NormRule
{
    /// <summary>The true gradient (the scale depends on x).</summary>
    Exact,
    /// <summary>RelP LN-rule: the scale is a constant (stop-gradient), dx = w * rho * dy.</summary>
    FrozenScale,
}

/// <summary>How the backward pass treats the softmax attention pattern.</summary>
public enum AttentionRule
{
    /// <summary>The true gradient through softmax into Q and K (what the authors' released RelP code runs).</summary>
    Gradient,
    /// <summary>RelP AH-rule: the pattern is a constant; gradient flows only through V.</summary>
    FreezePattern,
}

/// <summary>How the backward pass treats the SwiGLU product h = silu(g) * u.</summary>
public enum GateRule
{
    /// <summary>The true gradient: dg = silu'(g) u dh, du = silu(g) dh.</summary>
    Exact,
    /// <summary>RelP: SiLU identity rule (sigmoid(g) constant) and the half rule on the product: dg = ½ σ(g) u dh, du = ½ silu(g) dh.</summary>
    IdentityHalf,
    /// <summary>Identity rule without the half rule: dg = σ(g) u dh, du = silu(g) dh.</summary>
    Identity,
}

/// <summary>
/// The rule set of one backward pass. Exact gradients and RelP differ only in this value;
/// there is one backward implementation.
/// </summary>
/// <param name="Norm">The RMSNorm rule.</param>
/// <param name="Attention">The attention-pattern rule.</param>
/// <param name="Gate">The SwiGLU rule.</param>
public sealed record BackwardRules(NormRule Norm, AttentionRule Attention, GateRule Gate)
{
    /// <summary>Ordinary gradients (attribution patching, integrated gradients).</summary>
    public static BackwardRules Exact { get; } = new(NormRule.Exact, AttentionRule.Gradient, GateRule.Exact);

    /// <summary>
    /// RelP as the authors' released code runs it (TransluceAI/circuits): LN-rule, identity + half rule on the gate,
    /// ordinary gradient through the attention softmax.
    /// </summary>
    public static BackwardRules RelP { get; } = new(NormRule.FrozenScale, AttentionRule.Gradient, GateRule.IdentityHalf);

    /// <summary>RelP with the AH-rule of the RelP paper's rule table (frozen attention pattern). Conserves relevance.</summary>
    public static BackwardRules RelPFrozenAttention { get; } = new(NormRule.FrozenScale, AttentionRule.FreezePattern, GateRule.IdentityHalf);

    /// <summary>The two RelP rule sets, in the order <c>--relp-attention</c> lists them.</summary>
    public static IReadOnlyList<BackwardRules> RelPVariants { get; } = [RelP, RelPFrozenAttention];

    /// <summary>
    /// The <c>--relp-attention</c> name of a RelP rule set (<c>gradient</c> or <c>freeze</c>), the one spelling the
    /// option, summaries and shard manifests share; null for a rule set that is not a RelP variant.
    /// </summary>
    public string? RelPAttentionName => this == RelP ? "gradient" : this == RelPFrozenAttention ? "freeze" : null;

    /// <summary>The RelP rule set of a <c>--relp-attention</c> name (the inverse of <see cref="RelPAttentionName"/>).</summary>
    /// <param name="name">gradient or freeze.</param>
    /// <param name="rules">The rule set, when the name is one of them.</param>
    /// <returns>Whether the name is one of them.</returns>
    public static bool TryParseRelPAttention(string name, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out BackwardRules? rules)
    {
        rules = RelPVariants.FirstOrDefault(r => r.RelPAttentionName == name);
        return rules is not null;
    }
}
