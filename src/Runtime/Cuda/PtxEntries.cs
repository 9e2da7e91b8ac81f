using System.Text.RegularExpressions;

namespace NeuronTrace.Runtime.Cuda;

/// <summary>The kernel entry points a PTX module declares (<c>.visible .entry NAME(</c>), so a kernel is looked up
/// in the module that has it.</summary>
internal static partial class PtxEntries
{
    [GeneratedRegex(@"\.entry\s+([A-Za-z_$%][\w$%]*)\s*\(")]
    private static partial Regex EntryPattern();

    public static IEnumerable<string> Names(string ptx) => EntryPattern().Matches(ptx).Select(m => m.Groups[1].Value);
}
