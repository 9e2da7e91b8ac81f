namespace NeuronTrace.TestSupport;

/// <summary>Where the tests find the repository's bundled files and the optional ../shared folder.</summary>
public static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string Models => Path.Combine(Root, "models");
    public static string Stories260KBin => Path.Combine(Root, "models", "stories260K", "stories260K.bin");
    public static string Stories260KGguf => Path.Combine(Root, "models", "stories260K", "stories260K.gguf");
    public static string Tok512 => Path.Combine(Root, "models", "stories260K", "tok512.bin");
    public static string Golden => Path.Combine(Root, "golden", "stories260K");
    public static string Tasks => Path.Combine(Root, "data", "tasks");
    public static string Fixtures => Path.Combine(Root, "tests", "fixtures");

    /// <summary>
    /// The ../shared folder beside the checkout (CI has it; a plain clone does not). Returns null when absent,
    /// except under CI (env CI=true), where its absence is a failure: there every test must run.
    /// </summary>
    public static string? Shared
    {
        get
        {
            string p = Path.GetFullPath(Path.Combine(Root, "..", "shared"));
            if (Directory.Exists(p)) return p;
            if (Environment.GetEnvironmentVariable("CI") == "true")
                throw new InvalidOperationException($"CI=true but {p} is missing; CI must provide ../shared beside the clone");
            return null;
        }
    }

    /// <summary>A fresh empty temporary folder.</summary>
    public static string TempDir(string prefix)
    {
        string d = Path.Combine(Path.GetTempPath(), $"neurontrace-{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(d);
        return d;
    }

    static string FindRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "NeuronTrace.sln")))
            dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("cannot find NeuronTrace.sln above " + AppContext.BaseDirectory);
    }
}
