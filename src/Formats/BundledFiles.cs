namespace NeuronTrace.Formats;

/// <summary>Finds files shipped with NeuronTrace (the default model, the tasks): next to the executable, or in the repository.</summary>
internal static class BundledFiles
{
    public static string Find(params string[] relative)
    {
        string rel = Path.Combine(relative);
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                string p = Path.Combine(dir.FullName, rel);
                if (File.Exists(p)) return p;
            }
        return Path.Combine(AppContext.BaseDirectory, rel);
    }
}
