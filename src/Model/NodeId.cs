using System.Globalization;
using System.Text.RegularExpressions;
using NeuronTrace.Runtime;

namespace NeuronTrace.Model;

/// <summary>
/// One node: a unit at a site of a layer at a token position. <see cref="Position"/> counts from the END of the prompt
/// (0 = the last token, where the metric is read), so prompts of different lengths align.
/// </summary>
/// <remarks>
/// The one spelling of a node everywhere (CSV <c>node</c> columns, circuit and graph JSON ids, CLI flags):
/// <c>SITE/L{layer}/P-{position from the end}/{index}</c>, e.g. <c>mlp_act/L3/P-0/17</c>. <see cref="Parse"/> also
/// accepts the older graph.json key <c>L{layer}/P{position}/N{index}</c> (an mlp_act node).
/// </remarks>
/// <param name="Site">The site the unit belongs to.</param>
/// <param name="Layer">The decoder layer, from 0.</param>
/// <param name="Position">The token position counted from the end of the prompt (0 = the last token).</param>
/// <param name="Index">The unit within the site's width (a neuron for mlp_act, a residual dimension for the others).</param>
public readonly record struct NodeId(NodeSite Site, int Layer, int Position, int Index)
{
    /// <summary>The node's one spelling, e.g. <c>mlp_act/L3/P-0/17</c> (see <see cref="Syntax"/>).</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Site.Name()}/L{Layer}/P-{Position}/{Index}");

    /// <summary>The syntax of a node id, for error messages and help text.</summary>
    public const string Syntax = "SITE/L<layer>/P-<position from the end>/<index>, e.g. mlp_act/L3/P-0/17";

    static readonly Regex Canonical = new(@"^(?<s>[a-z_]+)/L(?<l>\d{1,9})/P-(?<p>\d{1,9})/(?<i>\d{1,9})$", RegexOptions.CultureInvariant);
    static readonly Regex OldGraphKey = new(@"^L(?<l>\d{1,9})/P(?<p>\d{1,9})/N(?<i>\d{1,9})$", RegexOptions.CultureInvariant);

    /// <summary>Parses a node id in the canonical syntax (or the older graph.json key); false, and a default node, otherwise.</summary>
    /// <param name="text">The id; surrounding white space is ignored.</param>
    /// <param name="node">The node when the text parses.</param>
    public static bool TryParse(string? text, out NodeId node)
    {
        node = default;
        if (text is null) return false;
        var m = Canonical.Match(text.Trim());
        NodeSite site = NodeSite.MlpAct;
        if (!m.Success) m = OldGraphKey.Match(text.Trim());
        else if (!NodeSites.TryParse(m.Groups["s"].Value, out site)) return false;
        if (!m.Success) return false;
        node = new NodeId(site, int.Parse(m.Groups["l"].Value, CultureInfo.InvariantCulture),
            int.Parse(m.Groups["p"].Value, CultureInfo.InvariantCulture), int.Parse(m.Groups["i"].Value, CultureInfo.InvariantCulture));
        return true;
    }

    /// <summary>Parses a node id; a bad one is a one-line <see cref="FormatException"/> quoting it (shortened) and giving the syntax.</summary>
    /// <param name="text">The id, e.g. <c>mlp_act/L3/P-0/17</c>.</param>
    public static NodeId Parse(string text) =>
        TryParse(text, out var n) ? n
        : throw new FormatException($"bad node id {ErrorText.Quote(text)} (expected {Syntax})");
}
