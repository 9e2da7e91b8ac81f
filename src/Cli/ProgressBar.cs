using System.Diagnostics;
using NeuronTrace.Tracing.Pipeline;
using Spectre.Console;

namespace NeuronTrace.Cli;

/// <summary>
/// Progress of long work on stderr, in one of three forms: a live Spectre.Console display with rate and ETA when stderr
/// is a terminal; plain lines (<see cref="PlainProgressLog"/>) every few seconds when it is not (a log, a pipe, a Slurm
/// output file), so unattended runs still show where they are; nothing with <c>--quiet</c>. Stdout stays clean either way.
/// </summary>
internal sealed class ProgressBar : IProgress<WorkProgress>, IDisposable
{
    /// <summary>Set from the root command's <c>--quiet</c> before a command runs.</summary>
    public static bool Quiet { get; set; }

    readonly IProgress<WorkProgress>? _sink;
    readonly LiveProgress? _live;

    public ProgressBar()
    {
        if (Quiet) return;
        if (Console.IsErrorRedirected) { var clock = Stopwatch.StartNew(); _sink = new PlainProgressLog(Console.Error, () => clock.Elapsed); }
        else _sink = _live = new LiveProgress();
    }

    public void Report(WorkProgress value) => _sink?.Report(value);

    public void Dispose() => _live?.Dispose();

    /// <summary>
    /// Spectre's live display runs its own render loop inside <c>Start</c>; the library reports through
    /// <see cref="IProgress{T}"/> from any thread, so the display runs on a background thread until disposed.
    /// </summary>
    sealed class LiveProgress : IProgress<WorkProgress>, IDisposable
    {
        readonly Lock _gate = new();
        readonly Dictionary<string, ProgressTask> _tasks = [];
        readonly ManualResetEventSlim _done = new();
        readonly TaskCompletionSource<ProgressContext> _context = new(TaskCreationOptions.RunContinuationsAsynchronously);
        readonly Thread _thread;

        public LiveProgress()
        {
            var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
            var progress = console.Progress().AutoClear(false).HideCompleted(false).Columns(
                new TaskDescriptionColumn(), new ProgressBarColumn(), new CountColumn(), new PercentageColumn(),
                new RateColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn());
            _thread = new Thread(() => progress.Start(ctx => { _context.SetResult(ctx); _done.Wait(); })) { IsBackground = true, Name = "progress" };
            _thread.Start();
        }

        public void Report(WorkProgress p)
        {
            var ctx = _context.Task.Result;
            lock (_gate)
            {
                if (!_tasks.TryGetValue(p.Stage, out var task))
                    _tasks[p.Stage] = task = ctx.AddTask(Markup.Escape(p.Stage), maxValue: Math.Max(1, p.Total));
                task.MaxValue = Math.Max(1, p.Total);
                task.Value = ProgressMath.Clamped(p);
            }
        }

        public void Dispose()
        {
            if (_context.Task.IsCompleted) _context.Task.Result.Refresh();
            _done.Set();
            _thread.Join();
        }
    }

    sealed class CountColumn : ProgressColumn
    {
        public override Spectre.Console.Rendering.IRenderable Render(Spectre.Console.Rendering.RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
            new Text($"{task.Value:0}/{task.MaxValue:0}");
    }

    sealed class RateColumn : ProgressColumn
    {
        public override Spectre.Console.Rendering.IRenderable Render(Spectre.Console.Rendering.RenderOptions options, ProgressTask task, TimeSpan deltaTime) =>
            new Text(task.Speed is { } s ? $"{s:0.##}/s" : "");
    }
}

/// <summary>Counts shown never pass their total, whatever the reporter sends.</summary>
internal static class ProgressMath
{
    public static long Clamped(WorkProgress p) => Math.Clamp(p.Done, 0, Math.Max(0, p.Total));

    /// <summary>Seconds left at the average rate so far, or null before any work is done.</summary>
    public static double? EtaSeconds(long done, long total, double elapsedSeconds) =>
        done <= 0 || elapsedSeconds <= 0 ? null : (total - done) * elapsedSeconds / done;
}

/// <summary>
/// Plain progress lines for a log: <c>progress: STAGE DONE/TOTAL (P%), R/s, eta Ns, elapsed Ns</c>, at most one per
/// <paramref name="interval"/>. Work shorter than the interval prints nothing (a one-second run needs no progress in
/// its log, and its stderr stays the one line of the error contract); a stage that printed also prints its end.
/// </summary>
internal sealed class PlainProgressLog(TextWriter output, Func<TimeSpan> now, TimeSpan? interval = null) : IProgress<WorkProgress>
{
    readonly Lock _gate = new();
    readonly TimeSpan _interval = interval ?? TimeSpan.FromSeconds(5);
    string? _stage;
    TimeSpan _stageStart, _lastLine;
    // A stage's work began when the previous stage's ended (or when the log was made), not at its first report.
    TimeSpan _lastReport = now();
    bool _printed, _ended;

    public void Report(WorkProgress p)
    {
        lock (_gate)
        {
            var time = now();
            if (p.Stage != _stage) { _stage = p.Stage; _stageStart = _lastReport; _printed = _ended = false; }
            _lastReport = time;
            long done = ProgressMath.Clamped(p);
            bool end = done >= p.Total;
            bool due = time - (_printed ? _lastLine : _stageStart) >= _interval;
            if (_ended || !(due || (end && _printed))) return;
            _lastLine = time;
            _printed = true;
            _ended = end;
            double elapsed = (time - _stageStart).TotalSeconds;
            string rate = elapsed > 0 ? $"{done / elapsed:0.##}/s" : "-";
            string eta = ProgressMath.EtaSeconds(done, p.Total, elapsed) is { } s ? $"{s:0}s" : "-";
            double percent = p.Total == 0 ? 100 : 100.0 * done / p.Total;
            output.WriteLine($"progress: {p.Stage} {done}/{p.Total} ({percent:0}%), {rate}, eta {eta}, elapsed {elapsed:0.0}s");
        }
    }
}
