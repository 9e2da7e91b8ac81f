using System.Text.Json;

namespace NeuronTrace.Cli;

/// <summary>
/// The output policy of every command, checked before any work is done:
/// <list type="bullet">
/// <item>an empty path, a folder given where a file is written (or the reverse), or an output that is one of the
/// command's inputs is refused, --force or not;</item>
/// <item>an output that already exists is refused unless --force, except a command's own default output inside a run
/// folder (view.html, graph.json, edges.csv, edge_sweep.csv), which re-running replaces;</item>
/// <item>--force replaces a file, but a folder only when it is empty or of the kind the command writes (a run folder,
/// a scores folder, a converted model folder); anything else is refused;</item>
/// <item>a place where nothing can be created is reported naming the path given;</item>
/// <item>outputs are written to hidden temporaries beside the target and renamed into place at the end.</item>
/// </list>
/// Refusals are <see cref="UsageException"/> (exit 2); a place that cannot be written is an <see cref="IOException"/> (exit 1).
/// </summary>
internal static class OutputPaths
{
    public const string TraceFormat = NeuronTrace.Tracing.Runs.RunFormat.TraceId;
    public const string ScoresFormat = NeuronTrace.Tracing.Runs.RunFormat.ScoresId;

    /// <summary>The option's value; refused when empty or blank.</summary>
    public static string NotEmpty(string? path, string option = "--out") =>
        string.IsNullOrWhiteSpace(path) ? throw new UsageException($"{option}: empty path") : path;

    /// <summary>
    /// Checks a file output. <paramref name="run"/>: the run folder the command reads, whose files other than
    /// <paramref name="ownNames"/> (at its top level) are never written, and whose <paramref name="ownNames"/> are
    /// replaced without --force. <paramref name="inputs"/>: the paths the command reads (nulls ignored).
    /// Returns the full path.
    /// </summary>
    public static string CheckFile(string path, bool force, string?[] inputs, string? run = null, string[]? ownNames = null, string option = "--out") =>
        CheckFile(path, path, $"; {option} takes a file", force, inputs, run, ownNames, option);

    /// <summary>
    /// <c>CheckFile</c> for a file output and the second file the
    /// command writes beside it under a fixed name (graph.json, edge_sweep.csv). Returns both full paths.
    /// </summary>
    public static (string Full, string CompanionFull) CheckPair(string path, string companion, bool force, string?[] inputs,
        string? run = null, string[]? ownNames = null, string option = "--out")
    {
        string full = CheckFile(path, force, inputs, run, ownNames, option);
        if (Full(companion) == full)
            throw new UsageException($"{option} cannot be named {Path.GetFileName(companion)}: that file is written beside it");
        return (full, CheckFile(companion, $"{companion} (written beside {option})", "", force, inputs, run, ownNames, option));
    }

    static string CheckFile(string path, string shown, string folderHint, bool force, string?[] inputs, string? run, string[]? ownNames, string option)
    {
        NotEmpty(path, option);
        string full = Full(path);
        if (Directory.Exists(full)) throw new UsageException($"{shown} is a folder{folderHint}");
        foreach (var input in Inputs(inputs))
            if (full == input) throw new UsageException($"{shown} is an input of this command; write the output elsewhere");
            else if (Directory.Exists(input) && IsInside(full, input) && File.Exists(full))
                throw new UsageException($"{shown} is a file of the input folder {input}; write the output elsewhere");
        bool own = false;
        if (run is not null)
        {
            string runFull = Full(run);
            own = Path.GetDirectoryName(full) == runFull && (ownNames ?? []).Contains(Path.GetFileName(full));
            if (!own && IsInside(full, runFull) && File.Exists(full))
                throw new UsageException($"{shown} is a file of the run folder {run}; write the output elsewhere");
        }
        if (File.Exists(full) && !force && !own) throw new UsageException($"{shown} already exists (pass --force to replace it)");
        CheckWritable(path, full);
        Interruption.Watch(full);
        return full;
    }

    /// <summary>
    /// Checks a folder output. With --force an existing folder is replaced only when it is empty or
    /// <paramref name="isOurs"/> (described as <paramref name="kind"/>). Returns the full path.
    /// </summary>
    public static string CheckFolder(string path, bool force, string kind, Func<string, bool> isOurs, string?[] inputs, string option = "--out")
    {
        NotEmpty(path, option);
        string full = Full(path);
        if (File.Exists(full)) throw new UsageException($"{path} is a file; {option} takes a folder");
        foreach (var input in Inputs(inputs))
            if (full == input || IsInside(input, full))
                throw new UsageException($"{path} {(full == input ? "is" : "holds")} an input of this command; write the output elsewhere");
        if (Directory.Exists(full))
        {
            if (!force) throw new UsageException($"{path} already exists (pass --force to replace it)");
            if (Directory.EnumerateFileSystemEntries(full).Any() && !isOurs(full))
                throw new UsageException($"{path} is not empty and is not {kind}; --force only replaces an empty folder or {kind}");
        }
        CheckWritable(path, full);
        Interruption.Watch(full);
        return full;
    }

    /// <summary>A folder holding summary.json of format neurontrace-trace/1 (written by trace).</summary>
    public static bool IsRunFolder(string dir) => HasFormat(Path.Combine(dir, "summary.json"), TraceFormat);

    /// <summary>A folder holding scores.json of format neurontrace-scores/1 (written by attribute, or trace's scores/METHOD).</summary>
    public static bool IsScoresFolder(string dir) => HasFormat(Path.Combine(dir, "scores.json"), ScoresFormat);

    static bool HasFormat(string file, string format)
    {
        try
        {
            if (!File.Exists(file) || new FileInfo(file).Length > (16 << 20)) return false;
            using var doc = JsonDocument.Parse(File.ReadAllBytes(file));
            return doc.RootElement.ValueKind == JsonValueKind.Object && doc.RootElement.TryGetProperty("format", out var f)
                && f.ValueKind == JsonValueKind.String && f.GetString() == format;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException) { return false; }
    }

    /// <summary>
    /// Fills a hidden folder beside <paramref name="full"/> and renames it into place, replacing the folder there
    /// (which <paramref name="recheck"/>, the up-front check run again, must still allow): a failure leaves no partial folder.
    /// </summary>
    public static void WriteFolder(string shown, string full, Action<string> fill, Action recheck)
    {
        string parent = Path.GetDirectoryName(full)!;
        string tmp = NeuronTrace.Formats.OutputFiles.TempPathBeside(full, "partial");
        try
        {
            Directory.CreateDirectory(tmp);
            fill(tmp);
            recheck();
            if (Directory.Exists(full))
            {
                // Directory.Move cannot replace a folder: park the old one, move the new one in, then drop the old one.
                string old = NeuronTrace.Formats.OutputFiles.TempPathBeside(full, "old");
                Directory.Move(full, old);
                try { Directory.Move(tmp, full); }
                catch { Directory.Move(old, full); throw; }
                TryDelete(old);
            }
            else Directory.Move(tmp, full);
        }
        catch (Exception e)
        {
            TryDelete(tmp);
            if (e is (IOException or UnauthorizedAccessException) && e.Message.Contains(tmp, StringComparison.Ordinal))
                throw new IOException($"{shown}: cannot write ({e.Message.Replace(tmp, shown, StringComparison.Ordinal)})", e);
            throw;
        }
    }

    /// <summary>
    /// Writes several files together: each to a hidden temporary beside it, then all renamed into place, so a
    /// failure while writing leaves none of them. <paramref name="recheck"/>, the up-front checks run again, must
    /// still allow them just before the renames. Entries: (full path, path as given, content).
    /// </summary>
    public static void WriteFiles(Action recheck, params (string Full, string Shown, string Text)[] files) =>
        NeuronTrace.Formats.OutputFiles.WriteTogether(recheck, files);

    /// <summary>The nearest existing folder at or above the target's parent must be a folder in which files can be created.</summary>
    static void CheckWritable(string shown, string full)
    {
        string? dir = Path.GetDirectoryName(full);
        while (dir is not null && !Directory.Exists(dir))
        {
            if (File.Exists(dir)) throw new IOException($"{shown}: cannot write ({dir} is a file, not a folder)");
            dir = Path.GetDirectoryName(dir);
        }
        if (dir is null) throw new IOException($"{shown}: cannot write (no existing folder above it)");
        string probe = Path.Combine(dir, $".neurontrace-probe-{Guid.NewGuid():N}");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            TryDelete(probe);
            throw new IOException($"{shown}: cannot write (files cannot be created in {dir})", e);
        }
    }

    static IEnumerable<string> Inputs(string?[] inputs) => inputs.Where(p => !string.IsNullOrWhiteSpace(p)).Select(p => Full(p!));

    static string Full(string path)
    {
        string full = Path.GetFullPath(path);
        return full.Length > 1 ? full.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar) : full;
    }

    /// <summary>Whether <paramref name="path"/> lies strictly inside <paramref name="folder"/> (both full paths).</summary>
    static bool IsInside(string path, string folder) =>
        path.StartsWith(folder.EndsWith(Path.DirectorySeparatorChar) ? folder : folder + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    static void TryDelete(string path)
    {
        try
        {
            if (File.Exists(path)) File.Delete(path);
            else if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
