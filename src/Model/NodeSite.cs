using NeuronTrace.Runtime;
namespace NeuronTrace.Model;

/// <summary>Where in a decoder block a node lives (docs/method.md §1.2). Values are per token position and unit.</summary>
public enum NodeSite : byte
{
    /// <summary><c>resid</c>: the residual stream after block l (the decoder layer's output), width dim.</summary>
    Resid,
    /// <summary><c>attn</c>: the attention output, o_proj's OUTPUT, width dim.</summary>
    Attn,
    /// <summary><c>attn_z</c>: o_proj's INPUT, the concatenated head outputs, width dim (the reference code's attention site).</summary>
    AttnZ,
    /// <summary><c>mlp_out</c>: the MLP output, down_proj's output, width dim.</summary>
    MlpOut,
    /// <summary><c>mlp_act</c>: the MLP activations silu(gate)·up, down_proj's INPUT, width hidden_dim: the neurons.</summary>
    MlpAct,
}

/// <summary>Names, widths and parsing of <see cref="NodeSite"/>s.</summary>
public static class NodeSites
{
    /// <summary>Every site, from the residual stream to the neurons.</summary>
    public static IReadOnlyList<NodeSite> All { get; } = [NodeSite.Resid, NodeSite.Attn, NodeSite.AttnZ, NodeSite.MlpOut, NodeSite.MlpAct];

    /// <summary>The site's name in files and on the command line: <c>resid</c>, <c>attn</c>, <c>attn_z</c>, <c>mlp_out</c>, <c>mlp_act</c>.</summary>
    /// <param name="site">A defined site.</param>
    public static string Name(this NodeSite site) => site switch
    {
        NodeSite.Resid => "resid",
        NodeSite.Attn => "attn",
        NodeSite.AttnZ => "attn_z",
        NodeSite.MlpOut => "mlp_out",
        NodeSite.MlpAct => "mlp_act",
        _ => throw new ArgumentOutOfRangeException(nameof(site)),
    };

    /// <summary>The site's width per token position: <see cref="LlamaConfig.HiddenDim"/> for mlp_act, <see cref="LlamaConfig.Dim"/> otherwise.</summary>
    /// <param name="site">The site.</param>
    /// <param name="config">The model.</param>
    public static int Width(this NodeSite site, LlamaConfig config) => site == NodeSite.MlpAct ? config.HiddenDim : config.Dim;

    /// <summary>The site of a name as <see cref="Name"/> spells it; false when there is none.</summary>
    /// <param name="name">A site name, e.g. <c>mlp_act</c>.</param>
    /// <param name="site">The site when the name is known.</param>
    public static bool TryParse(string name, out NodeSite site)
    {
        foreach (var s in All)
            if (s.Name() == name) { site = s; return true; }
        site = default;
        return false;
    }

    /// <summary>Parses a comma-separated list such as "mlp_act,mlp_out,attn,resid"; throws a one-line error naming a bad entry.</summary>
    /// <param name="list">Site names separated by commas; repeats are dropped, order is kept.</param>
    public static NodeSite[] ParseList(string list)
    {
        var parts = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw new FormatException("no node sites given");
        var result = new List<NodeSite>();
        foreach (var p in parts)
        {
            if (!TryParse(p, out var s))
                throw new FormatException($"unknown node site {ErrorText.Quote(p)} (known: {string.Join(", ", All.Select(x => x.Name()))})");
            if (!result.Contains(s)) result.Add(s);
        }
        return result.ToArray();
    }
}
