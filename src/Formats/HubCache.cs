using System.Text.RegularExpressions;
using NeuronTrace.Model;

namespace NeuronTrace.Formats;

/// <summary>
/// Resolves a Hugging Face model id <c>ORG/NAME[@REVISION]</c> to a snapshot folder in the local hub cache, the layout
/// <c>huggingface_hub</c> writes: <c>models--ORG--NAME/refs/REVISION</c> holds a commit hash,
/// <c>models--ORG--NAME/snapshots/HASH/FILE</c> are (usually symlinked) files whose content lies in <c>blobs/</c>.
/// Nothing is downloaded: a missing id or revision is a one-line error naming the folder looked in and the
/// <c>huggingface-cli download</c> command that would fill it.
/// </summary>
internal static partial class HubCache
{
    /// <summary>
    /// The cache folder as <c>huggingface_hub</c> finds it: <c>$HF_HUB_CACHE</c>, else <c>$HF_HOME/hub</c>, else
    /// <c>~/.cache/huggingface/hub</c> (<paramref name="env"/> reads a variable; the process environment by default).
    /// </summary>
    public static string Folder(Func<string, string?>? env = null)
    {
        env ??= Environment.GetEnvironmentVariable;
        if (env("HF_HUB_CACHE") is { Length: > 0 } hub) return hub;
        if (env("HF_HOME") is { Length: > 0 } home) return Path.Combine(home, "hub");
        return Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "huggingface", "hub");
    }

    /// <summary>Whether <paramref name="text"/> is spelled like a hub id (ORG/NAME with an optional @REVISION).</summary>
    public static bool IsModelId(string text) => IdPattern().IsMatch(text);

    /// <summary>
    /// The snapshot folder of <paramref name="id"/> (revision <c>main</c> unless given after <c>@</c>; a branch or tag
    /// name found under refs/, or a commit hash found under snapshots/) in <paramref name="cacheFolder"/>
    /// (<see cref="Folder"/> by default).
    /// </summary>
    /// <exception cref="ModelFormatException">the id is not in the cache, or not at that revision</exception>
    public static string Resolve(string id, string? cacheFolder = null)
    {
        var m = IdPattern().Match(id);
        if (!m.Success) throw new ModelFormatException(id, "is not a Hugging Face model id (ORG/NAME or ORG/NAME@REVISION)");
        string repo = m.Groups["repo"].Value;
        string? revision = m.Groups["rev"].Success ? m.Groups["rev"].Value : null;
        string cache = cacheFolder ?? Folder();
        string repoDir = Path.Combine(cache, "models--" + repo.Replace("/", "--"));
        string download = $"huggingface-cli download {repo}{(revision is null ? "" : " --revision " + revision)}";
        if (!Directory.Exists(repoDir))
            throw new ModelFormatException(id, $"is neither a file or folder nor in the Hugging Face cache (looked for {repoDir}); nothing is downloaded, `{download}` would fill it");

        string rev = revision ?? "main";
        string refFile = Path.Combine(repoDir, "refs", rev);
        string? hash = null;
        if (File.Exists(refFile))
        {
            hash = File.ReadAllText(refFile).Trim();
            if (!HashPattern().IsMatch(hash)) throw new ModelFormatException(refFile, "does not hold a commit hash");
        }
        else if (HashPattern().IsMatch(rev))
            hash = rev;
        string? snapshot = hash is null ? null : Path.Combine(repoDir, "snapshots", hash);
        if (snapshot is null || !Directory.Exists(snapshot))
        {
            string have = string.Join(", ", Names(Path.Combine(repoDir, "refs")).Concat(Names(Path.Combine(repoDir, "snapshots"))));
            throw new ModelFormatException(id, $"revision {rev} is not in the Hugging Face cache (looked in {repoDir}; it has {(have.Length == 0 ? "no revisions" : have)}); nothing is downloaded, `{download}` would fill it");
        }
        return snapshot;
    }

    static IEnumerable<string> Names(string dir) =>
        Directory.Exists(dir) ? Directory.EnumerateFileSystemEntries(dir).Select(p => Path.GetFileName(p)).Order(StringComparer.Ordinal) : [];

    // Hub names: letters, digits, '-', '_', '.'; no leading '.' or '-' (so ./x, ../x and absolute paths never match).
    [GeneratedRegex(@"^(?<repo>[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*)(@(?<rev>[A-Za-z0-9][A-Za-z0-9_.\-]*))?$")]
    private static partial Regex IdPattern();

    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex HashPattern();
}
