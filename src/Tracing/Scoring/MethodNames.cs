using NeuronTrace.Runtime;
namespace NeuronTrace.Tracing.Scoring;

/// <summary>The command-line names of the attribution methods.</summary>
internal static class MethodNames
{
    public static string Name(this AttributionMethod m) => m switch
    {
        AttributionMethod.AtP => "atp",
        AttributionMethod.IG => "ig",
        AttributionMethod.IGInputs => "ig-inputs",
        AttributionMethod.RelP => "relp",
        _ => throw new ArgumentOutOfRangeException(nameof(m)),
    };

    public static AttributionMethod Parse(string name) => name.Trim().ToLowerInvariant() switch
    {
        "atp" => AttributionMethod.AtP,
        "ig" => AttributionMethod.IG,
        "ig-inputs" => AttributionMethod.IGInputs,
        "relp" => AttributionMethod.RelP,
        _ => throw new FormatException($"unknown method {ErrorText.Quote(name)} (atp, ig, ig-inputs or relp)"),
    };

    public static AttributionMethod[] ParseList(string list)
    {
        var parts = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw new FormatException("no method given");
        return parts.Select(Parse).Distinct().ToArray();
    }
}
