namespace NeuronTrace.Formats;

/// <summary>
/// The one atomic writer of the project (model writers, run folders, CLI outputs): every output is written to a hidden
/// temporary beside it, named by <see cref="TempPathBeside"/> (<c>.NAME.GUID.SUFFIX</c>, one scheme everywhere), and
/// renamed over the target at the end, so a crash or exception never leaves a half-written file where a reader would
/// pick it up. Also streams encoded floats for the model writers.
/// </summary>
internal static class OutputFiles
{
    /// <summary>
    /// Writes <paramref name="path"/> through a temporary file in the same folder that is renamed over it at the end,
    /// so a crash or exception never leaves a half-written model where a reader would pick it up.
    /// </summary>
    public static void WriteAtomically(string path, Action<Stream> write)
    {
        string tmp = TempPathBeside(path, "tmp");
        try
        {
            using (var fs = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
                write(fs);
            File.Move(tmp, path, overwrite: true);
        }
        catch (Exception e)
        {
            TryDelete(tmp);
            if (NamingUserPath(e, tmp, path) is { } named) throw named;
            throw;
        }
    }

    /// <summary>Writes UTF-8 text (no byte-order mark) atomically.</summary>
    public static void WriteText(string path, string text) =>
        WriteAtomically(path, s => s.Write(new System.Text.UTF8Encoding(false).GetBytes(text)));

    /// <summary>
    /// Writes several files together: each to a hidden temporary beside it, then, once <paramref name="beforeRename"/>
    /// (e.g. the caller's up-front checks run again) has passed, all renamed into place, so a failure while writing
    /// leaves none of them. Entries: (full path, path as shown to the user, content). An I/O failure is re-worded as
    /// one <see cref="IOException"/> naming the shown path.
    /// </summary>
    public static void WriteTogether(Action beforeRename, params (string Full, string Shown, string Text)[] files)
    {
        var temps = files.Select(f => TempPathBeside(f.Full, "tmp")).ToArray();
        int i = 0;
        try
        {
            for (; i < files.Length; i++)
            {
                Directory.CreateDirectory(Path.GetDirectoryName(files[i].Full)!);
                File.WriteAllText(temps[i], files[i].Text, new System.Text.UTF8Encoding(false));
            }
            beforeRename();
            for (i = 0; i < files.Length; i++) File.Move(temps[i], files[i].Full, overwrite: true);
        }
        catch (Exception e)
        {
            foreach (var t in temps) TryDelete(t);
            if (e is not (IOException or UnauthorizedAccessException)) throw;
            int at = Math.Min(i, files.Length - 1);
            string why = e is UnauthorizedAccessException ? "permission denied" : e.Message.Replace(temps[at], files[at].Shown, StringComparison.Ordinal);
            throw new IOException($"{files[at].Shown}: cannot write ({why})", e);
        }
    }

    /// <summary>
    /// An I/O failure whose message names our temporary file or folder, re-worded to name the path the user gave
    /// (the hidden temp name means nothing to them); null for any other exception, which is rethrown as it is.
    /// </summary>
    public static IOException? NamingUserPath(Exception e, string tmp, string path)
    {
        if (e is not (IOException or UnauthorizedAccessException) || !e.Message.Contains(tmp, StringComparison.Ordinal)) return null;
        // One of ours ("<file inside the temp folder>: problem") only needs the folder renamed.
        string message = e.Message.StartsWith(tmp, StringComparison.Ordinal) ? e.Message : $"{path}: cannot write ({Reason(e, path)})";
        return new IOException(message.Replace(tmp, path, StringComparison.Ordinal), e);
    }

    static string Reason(Exception e, string path)
    {
        string parent = Path.GetDirectoryName(Path.GetFullPath(path.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar)))!;
        return e switch
        {
            DirectoryNotFoundException when File.Exists(parent) => $"{parent} is a file, not a folder",
            DirectoryNotFoundException => $"folder {parent} does not exist",
            UnauthorizedAccessException => "permission denied",
            _ => e.Message,
        };
    }

    /// <summary>A fresh hidden name in the folder of <paramref name="path"/> (same file system, so a rename is atomic).</summary>
    public static string TempPathBeside(string path, string suffix)
    {
        string full = Path.GetFullPath(path.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar));
        return Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.{suffix}");
    }

    public static void TryDelete(string path)
    {
        try
        {
            if (File.Exists(path)) File.Delete(path);
            else if (Directory.Exists(path)) Directory.Delete(path, recursive: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>Writes the values little-endian in <paramref name="encoding"/>, a bounded chunk at a time.</summary>
    public static void WriteFloats(Stream s, ReadOnlySpan<float> values, FloatEncoding encoding)
    {
        const int Chunk = 1 << 18;
        int size = Float16.SizeOf(encoding);
        var buf = new byte[Math.Min(values.Length, Chunk) * size];
        for (int i = 0; i < values.Length; i += Chunk)
        {
            int n = Math.Min(Chunk, values.Length - i);
            Float16.Encode(values.Slice(i, n), encoding, buf.AsSpan(0, n * size));
            s.Write(buf, 0, n * size);
        }
    }
}
