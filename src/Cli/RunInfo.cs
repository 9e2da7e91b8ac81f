using System.Reflection;
using NeuronTrace.Tracing.Runs;

namespace NeuronTrace.Cli;

/// <summary>What summary.json records about the tool and machine a run ran on.</summary>
internal static class RunInfo
{
    public static string ToolVersion =>
        typeof(RunInfo).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    /// <summary>Both backends compute in float32 (weights stored in lower precision are widened on load).</summary>
    public static RunProvenance Provenance(string device, bool allLengths) => new(device, "float32", allLengths, ToolVersion);
}
