using NeuronTrace.Tracing.Pipeline;

namespace NeuronTrace.Cli;

/// <summary>A one-line progress bar on stderr (only when stderr is a terminal, so logs and pipes stay clean).</summary>
public sealed class ProgressBar : IProgress<WorkProgress>
{
    readonly bool _enabled = !Console.IsErrorRedirected;
    readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
    string _stage = "";
    long _lastDraw;

    public void Report(WorkProgress p)
    {
        if (!_enabled) return;
        long now = _clock.ElapsedMilliseconds;
        if (p.Stage == _stage && p.Done < p.Total && now - _lastDraw < 100) return;
        _stage = p.Stage;
        _lastDraw = now;
        const int width = 30;
        double f = p.Total == 0 ? 1 : Math.Clamp((double)p.Done / p.Total, 0, 1);
        int filled = (int)(f * width);
        Console.Error.Write($"\r{p.Stage,-22} [{new string('#', filled)}{new string('.', width - filled)}] {p.Done}/{p.Total} {_clock.Elapsed.TotalSeconds,6:F1}s ");
        if (p.Done >= p.Total) Console.Error.WriteLine();
    }
}
