using System.Text.RegularExpressions;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Sae;

/// <summary>
/// Maps the hook point an SAE names in its config (TransformerLens spelling, as SAELens and Llama Scope write it) to a
/// NeuronTrace site and layer:
/// <code>
///   blocks.L.hook_resid_post → resid L        blocks.L.hook_resid_pre → resid L−1 (L ≥ 1)
///   blocks.L.hook_attn_out   → attn L         blocks.L.attn.hook_z    → attn_z L (heads concatenated, head-major)
///   blocks.L.hook_mlp_out    → mlp_out L      blocks.L.mlp.hook_post  → mlp_act L
/// </code>
/// Other hooks (hook_resid_mid, hook_embed, ln outputs, …) have no NeuronTrace site and are refused in one line.
/// </summary>
internal static partial class SaeHookPoint
{
    public static (NodeSite Site, int Layer) Parse(string hook, string file)
    {
        var m = Pattern().Match(hook);
        if (m.Success && int.TryParse(m.Groups["layer"].Value, out int layer))
        {
            switch (m.Groups["hook"].Value)
            {
                case "hook_resid_post": return (NodeSite.Resid, layer);
                case "hook_resid_pre" when layer >= 1: return (NodeSite.Resid, layer - 1);
                case "hook_attn_out": return (NodeSite.Attn, layer);
                case "attn.hook_z": return (NodeSite.AttnZ, layer);
                case "hook_mlp_out": return (NodeSite.MlpOut, layer);
                case "mlp.hook_post": return (NodeSite.MlpAct, layer);
            }
        }
        throw new ModelFormatException(file, $"hook point {ErrorText.Quote(hook)} has no NeuronTrace site (supported: blocks.L.hook_resid_post, blocks.L.hook_resid_pre with L >= 1, blocks.L.hook_attn_out, blocks.L.attn.hook_z, blocks.L.hook_mlp_out, blocks.L.mlp.hook_post)");
    }

    /// <summary>The TransformerLens name of a NeuronTrace site (the inverse of <see cref="Parse"/>, resid as hook_resid_post).</summary>
    public static string Name(NodeSite site, int layer) => site switch
    {
        NodeSite.Resid => $"blocks.{layer}.hook_resid_post",
        NodeSite.Attn => $"blocks.{layer}.hook_attn_out",
        NodeSite.AttnZ => $"blocks.{layer}.attn.hook_z",
        NodeSite.MlpOut => $"blocks.{layer}.hook_mlp_out",
        NodeSite.MlpAct => $"blocks.{layer}.mlp.hook_post",
        _ => throw new ArgumentOutOfRangeException(nameof(site)),
    };


    [GeneratedRegex(@"^blocks\.(?<layer>[0-9]{1,4})\.(?<hook>hook_resid_post|hook_resid_pre|hook_attn_out|attn\.hook_z|hook_mlp_out|mlp\.hook_post)$")]
    private static partial Regex Pattern();
}
