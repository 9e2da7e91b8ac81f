using System.Globalization;
using System.Text.RegularExpressions;
using NeuronTrace.Model;
using NeuronTrace.Runtime;

namespace NeuronTrace.Tracing.Steering;

/// <summary>How an edit changes a neuron's value a (an <c>mlp_act</c> unit): a ← m·a, a ← c, or a ← the source prompt's a.</summary>
public enum EditMode
{
    /// <summary>a ← Value · a (Value 0 = zero ablation).</summary>
    Scale,
    /// <summary>a ← Value.</summary>
    Set,
    /// <summary>a ← a_source at the same layer and unit, at the same position counted from the end (interchange).</summary>
    FromSource,
}

/// <summary>Which prompt positions an edit covers.</summary>
public enum PositionKind
{
    /// <summary>Position counted from the end of the prompt (0 = last prompt token).</summary>
    FromEnd,
    /// <summary>Absolute position (0 = BOS).</summary>
    Absolute,
    /// <summary>Every prompt position.</summary>
    All,
}

/// <summary>An edit of one <c>mlp_act</c> neuron (down_proj input unit) at prompt positions of one layer.</summary>
/// <param name="Layer">The decoder layer, from 0.</param>
/// <param name="Neuron">The neuron (mlp_act unit) within the layer.</param>
/// <param name="PositionKind">How <paramref name="Position"/> counts.</param>
/// <param name="Position">The prompt position (ignored for <see cref="PositionKind.All"/>).</param>
/// <param name="Mode">What the edit does to the neuron's value.</param>
/// <param name="Value">The multiplier (<see cref="EditMode.Scale"/>) or the value (<see cref="EditMode.Set"/>); unused for <see cref="EditMode.FromSource"/>.</param>
public sealed record NeuronEdit(int Layer, int Neuron, PositionKind PositionKind, int Position, EditMode Mode, float Value = 0f)
{
    /// <summary>a ← <paramref name="multiplier"/> · a at one position from the end (0 zero-ablates).</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="neuron">The neuron.</param>
    /// <param name="positionFromEnd">The position counted from the end (0 = last prompt token).</param>
    /// <param name="multiplier">The factor.</param>
    public static NeuronEdit Scale(int layer, int neuron, int positionFromEnd, float multiplier) =>
        new(layer, neuron, PositionKind.FromEnd, positionFromEnd, EditMode.Scale, multiplier);

    /// <summary>a ← <paramref name="value"/> at one position from the end.</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="neuron">The neuron.</param>
    /// <param name="positionFromEnd">The position counted from the end (0 = last prompt token).</param>
    /// <param name="value">The value set.</param>
    public static NeuronEdit Set(int layer, int neuron, int positionFromEnd, float value) =>
        new(layer, neuron, PositionKind.FromEnd, positionFromEnd, EditMode.Set, value);

    /// <summary>a ← the source prompt's value of the neuron at the same position from the end (interchange).</summary>
    /// <param name="layer">The layer.</param>
    /// <param name="neuron">The neuron.</param>
    /// <param name="positionFromEnd">The position counted from the end (0 = last prompt token).</param>
    public static NeuronEdit FromSource(int layer, int neuron, int positionFromEnd) =>
        new(layer, neuron, PositionKind.FromEnd, positionFromEnd, EditMode.FromSource);

    /// <summary>The absolute prompt positions this edit covers in a prompt of <paramref name="length"/> tokens (none when out of range).</summary>
    internal IEnumerable<int> AbsolutePositions(int length) => PositionKind switch
    {
        PositionKind.All => Enumerable.Range(0, length),
        PositionKind.FromEnd => Position >= 0 && Position < length ? [length - 1 - Position] : [],
        PositionKind.Absolute => Position >= 0 && Position < length ? [Position] : [],
        _ => [],
    };

    /// <summary>The edit in the syntax <see cref="Parse"/> reads, e.g. <c>L3/N17@P0=x2</c>.</summary>
    public override string ToString()
    {
        string pos = PositionKind switch { PositionKind.All => "@all", PositionKind.Absolute => $"@A{Position}", _ => $"@P{Position}" };
        string what = Mode switch
        {
            EditMode.Scale => "x" + Value.ToString("G6", CultureInfo.InvariantCulture),
            EditMode.Set => "c" + Value.ToString("G6", CultureInfo.InvariantCulture),
            _ => "src",
        };
        return $"L{Layer}/N{Neuron}{pos}={what}";
    }

    static readonly Regex Spec = new(
        @"^L(?<l>\d+)/N(?<n>\d+)(?:@(?:(?<all>all)|P(?<p>\d+)|A(?<a>\d+)))?=(?:(?<x>x)(?<xv>[-+0-9.eE]+)|(?<c>c)(?<cv>[-+0-9.eE]+)|(?<src>src))$",
        RegexOptions.CultureInvariant | RegexOptions.IgnoreCase);

    /// <summary>
    /// Parses <c>L{layer}/N{neuron}[@P{posFromEnd}|@A{absolute}|@all]=x{mult}|c{value}|src</c>; no position means @P0
    /// (the last token). The node id spelling <c>mlp_act/L{layer}/P-{posFromEnd}/{neuron}=…</c> is accepted too. Throws a one-line <see cref="FormatException"/> on a bad spec.
    /// </summary>
    /// <param name="spec">The edit, e.g. <c>L3/N17=x2</c> or <c>mlp_act/L3/P-0/17=c0.5</c>.</param>
    public static NeuronEdit Parse(string spec)
    {
        // The node id spelling (mlp_act/L3/P-0/17=x2, as in circuits, CSVs and graphs) names one position from the end.
        if (spec.Trim() is var t && t.StartsWith(NodeSites.Name(NodeSite.MlpAct) + "/", StringComparison.Ordinal) && t.IndexOf('=') is var eq and > 0)
        {
            if (!NodeId.TryParse(t[..eq], out var id))
                throw new FormatException($"bad edit {ErrorText.Quote(spec)}: {ErrorText.Quote(t[..eq])} is not a node id ({NodeId.Syntax})");
            return Parse($"L{id.Layer}/N{id.Index}@P{id.Position}{t[eq..]}");
        }
        var m = Spec.Match(spec.Trim());
        if (!m.Success)
            throw new FormatException($"bad edit {ErrorText.Quote(spec)} (expected L<layer>/N<neuron>[@P<pos-from-end>|@A<abs-pos>|@all]=x<mult>|c<value>|src, e.g. L3/N17@P0=x2, or a node id: mlp_act/L3/P-0/17=x2)");
        int layer = int.Parse(m.Groups["l"].Value, CultureInfo.InvariantCulture);
        int neuron = int.Parse(m.Groups["n"].Value, CultureInfo.InvariantCulture);
        var (kind, pos) = m.Groups["all"].Success ? (PositionKind.All, 0)
            : m.Groups["a"].Success ? (PositionKind.Absolute, int.Parse(m.Groups["a"].Value, CultureInfo.InvariantCulture))
            : (PositionKind.FromEnd, m.Groups["p"].Success ? int.Parse(m.Groups["p"].Value, CultureInfo.InvariantCulture) : 0);
        if (m.Groups["src"].Success) return new NeuronEdit(layer, neuron, kind, pos, EditMode.FromSource);
        string num = m.Groups["x"].Success ? m.Groups["xv"].Value : m.Groups["cv"].Value;
        if (!float.TryParse(num, NumberStyles.Float, CultureInfo.InvariantCulture, out float v) || !float.IsFinite(v))
            throw new FormatException($"bad edit {ErrorText.Quote(spec)}: {ErrorText.Quote(num)} is not a number");
        return new NeuronEdit(layer, neuron, kind, pos, m.Groups["x"].Success ? EditMode.Scale : EditMode.Set, v);
    }
}
