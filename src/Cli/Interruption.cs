using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace NeuronTrace.Cli;

/// <summary>
/// SIGINT and SIGTERM during a command: the hidden temporaries beside its outputs (<c>.NAME.GUID.partial</c>,
/// <c>.tmp</c>, <c>.old</c>, the naming every writer of ours uses) are removed, a moved-aside old output is put back,
/// and the process exits 130 or 143. Temporaries a killed run (SIGKILL, power loss) left are removed by the next run
/// writing the same output, once they have not been touched for <see cref="StaleAfter"/> (so a concurrent run's
/// temporaries survive).
/// </summary>
internal static class Interruption
{
    public static readonly TimeSpan StaleAfter = TimeSpan.FromMinutes(10);
    static readonly object Gate = new();
    static readonly List<string> Outputs = [];
    static int _termDeferred;

    /// <summary>
    /// Until disposed, SIGTERM is left to the caller (a shard checkpoints and stops, <see cref="ShardRun.StopSignal"/>)
    /// instead of exiting at once with "no output written", which would be false beside a checkpoint.
    /// </summary>
    public static IDisposable DeferTerm()
    {
        Interlocked.Increment(ref _termDeferred);
        return new Undo();
    }

    sealed class Undo : IDisposable
    {
        int _done;
        public void Dispose() { if (Interlocked.Exchange(ref _done, 1) == 0) Interlocked.Decrement(ref _termDeferred); }
    }

    /// <summary>Called by the output checks: <paramref name="full"/> is an output of this command.</summary>
    public static void Watch(string full)
    {
        lock (Gate) if (!Outputs.Contains(full)) Outputs.Add(full);
        RemoveTemporaries(full, DateTime.UtcNow - StaleAfter);
    }

    /// <summary>Installs the handlers for one command run; dispose to remove them.</summary>
    public static IDisposable Install()
    {
        lock (Gate) Outputs.Clear();
        var regs = new List<PosixSignalRegistration>();
        foreach (var (signal, exit) in new[] { (PosixSignal.SIGINT, 130), (PosixSignal.SIGTERM, 143) })
            regs.Add(PosixSignalRegistration.Create(signal, ctx =>
            {
                ctx.Cancel = true; // we exit ourselves, after cleaning up
                if (signal == PosixSignal.SIGTERM && Volatile.Read(ref _termDeferred) > 0) return;
                string[] outputs;
                lock (Gate) outputs = [.. Outputs];
                foreach (var o in outputs) RemoveTemporaries(o, DateTime.MaxValue);
                Console.Error.WriteLine($"neurontrace: interrupted ({(exit == 130 ? "SIGINT" : "SIGTERM")}); no output written");
                Environment.Exit(exit);
            }));
        return new Registrations(regs);
    }

    /// <summary>Our temporaries of <paramref name="full"/> last written before <paramref name="olderThan"/>: removed (an .old restored when the output is gone).</summary>
    public static void RemoveTemporaries(string full, DateTime olderThan)
    {
        string? parent = Path.GetDirectoryName(full);
        if (parent is null || !Directory.Exists(parent)) return;
        var pattern = new Regex("^\\." + Regex.Escape(Path.GetFileName(full)) + "\\.[0-9a-f]{32}\\.(partial|tmp|old)$");
        IEnumerable<string> entries;
        try { entries = Directory.EnumerateFileSystemEntries(parent).ToList(); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return; }
        foreach (var e in entries)
        {
            var m = pattern.Match(Path.GetFileName(e));
            if (!m.Success) continue;
            try
            {
                bool isDir = Directory.Exists(e);
                if ((isDir ? Directory.GetLastWriteTimeUtc(e) : File.GetLastWriteTimeUtc(e)) >= olderThan) continue;
                if (m.Groups[1].Value == "old" && !Path.Exists(full))
                {
                    if (isDir) Directory.Move(e, full); else File.Move(e, full);
                }
                else if (isDir) Directory.Delete(e, recursive: true);
                else File.Delete(e);
            }
            catch (Exception x) when (x is IOException or UnauthorizedAccessException) { }
        }
    }

    sealed class Registrations(List<PosixSignalRegistration> regs) : IDisposable
    {
        public void Dispose() { foreach (var r in regs) r.Dispose(); }
    }
}
