namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// Finds the folder of PTX modules (one <c>&lt;family&gt;.ptx</c> per native/kernels/*.cu) that <see cref="CudaDevice"/>
/// loads. The PTX is shipped as files rather than embedded resources so that a GPU machine can rebuild it with its
/// own nvcc (scripts/gpu/run-gpu.sh) without rebuilding the .NET assemblies. Searched in order:
/// <list type="number">
/// <item>the folder passed in explicitly;</item>
/// <item>$NEURONTRACE_PTX_DIR;</item>
/// <item><c>ptx/</c> next to the application (where a published bundle puts it);</item>
/// <item><c>native/build/ptx</c> in the first folder above the application that has one (a development checkout,
/// after native/build.sh).</item>
/// </list>
/// </summary>
internal static class PtxLocator
{
    public const string EnvironmentVariable = "NEURONTRACE_PTX_DIR";

    /// <summary>The folder, or null with <paramref name="searched"/> listing the places looked at.</summary>
    public static string? Find(string? explicitDirectory, out string searched)
    {
        var tried = new List<string>();
        foreach (string dir in Candidates(explicitDirectory))
        {
            tried.Add(dir);
            if (Directory.Exists(dir) && Directory.EnumerateFiles(dir, "*.ptx").Any()) { searched = string.Join(", ", tried); return dir; }
        }
        searched = string.Join(", ", tried);
        return null;
    }

    static IEnumerable<string> Candidates(string? explicitDirectory)
    {
        if (!string.IsNullOrEmpty(explicitDirectory)) { yield return Path.GetFullPath(explicitDirectory); yield break; }
        if (Environment.GetEnvironmentVariable(EnvironmentVariable) is { Length: > 0 } env) yield return Path.GetFullPath(env);
        yield return Path.Combine(AppContext.BaseDirectory, "ptx");
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "native", "build", "ptx");
            if (Directory.Exists(candidate)) { yield return candidate; yield break; }
        }
    }
}
