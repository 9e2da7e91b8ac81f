using Xunit;
using NeuronTrace.TestSupport;

namespace NeuronTrace.Formats.Tests;

/// <summary>
/// Tests that read ../shared (the Meta tokenizers and their cases). A plain clone has no ../shared: there they are
/// reported as skipped with the reason, never passed silently. Under CI (CI=true) RepoPaths.Shared throws when the
/// folder is missing, so in CI they always run.
/// </summary>
static class SharedFolder
{
    /// <summary>The skip reason when ../shared/<paramref name="sub"/> is absent, otherwise null.</summary>
    public static string? SkipReason(string sub) =>
        RepoPaths.Shared is { } shared && Directory.Exists(Path.Combine(shared, sub))
            ? null
            : $"needs ../shared/{sub} beside the clone (CI provides it): not run here";

    /// <summary>For the null branch the skip already rules out: the folder vanished during the run.</summary>
    public static Exception Missing(string sub) => new InvalidOperationException($"../shared/{sub} disappeared during the test run");
}

/// <summary>A fact that is skipped, visibly, when ../shared/<c>sub</c> is absent.</summary>
public sealed class SharedFactAttribute : FactAttribute
{
    public SharedFactAttribute(string sub) { if (SharedFolder.SkipReason(sub) is { } r) Skip = r; }
}

/// <summary>A theory that is skipped, visibly, when ../shared/<c>sub</c> is absent.</summary>
public sealed class SharedTheoryAttribute : TheoryAttribute
{
    public SharedTheoryAttribute(string sub) { if (SharedFolder.SkipReason(sub) is { } r) Skip = r; }
}
