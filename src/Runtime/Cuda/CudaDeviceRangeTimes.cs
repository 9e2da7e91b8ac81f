using NeuronTrace.Runtime.Cuda.Native;

namespace NeuronTrace.Runtime.Cuda;

// Op timing by in-stream events: the per-op GPU time of a pass with no host wait between ops (the benchmark's table).
internal sealed unsafe partial class CudaDevice
{
    /// <summary>
    /// While true, each range (<see cref="PushRange"/>/<see cref="PopRange"/>, an op or a layer) records a CUDA event
    /// on the stream where it opens and where it closes: the GPU time of every op with no host wait between ops.
    /// <see cref="ReadRangeTimes"/> waits once and returns the times. Not while capturing a graph (its ranges are not timed).
    /// </summary>
    public bool TimeRanges { get; set; }
    readonly List<CudaEventHandle> events = [];
    int eventsUsed;
    readonly List<(string Name, int Parent, int Start, int End, double Flops, double Bytes)> timed = [];
    readonly Stack<int> openTimed = new();   // index into timed, or -1 for a range opened untimed
    bool capturing;

    int RecordEvent()
    {
        if (eventsUsed == events.Count)
        {
            nint e;
            CudaException.Check(CudaDriver.cuEventCreate(&e, 0), "cuEventCreate");
            events.Add(new CudaEventHandle(context, e));
        }
        CudaException.Check(CudaDriver.cuEventRecord(events[eventsUsed].DangerousGetHandle(), stream.DangerousGetHandle()), "cuEventRecord");
        return eventsUsed++;
    }

    /// <summary>
    /// Waits for the stream, then per range name: how many ranges closed, their GPU milliseconds inclusive of the
    /// ranges inside them, and exclusive (less the ranges directly inside). Forgets them (the events are reused).
    /// </summary>
    public Dictionary<string, RangeTime> ReadRangeTimes()
    {
        Synchronize();
        var inclusive = new double[timed.Count];
        var childMs = new double[timed.Count];
        for (int i = 0; i < timed.Count; i++)
        {
            var (_, parent, start, end, _, _) = timed[i];
            if (end < 0) continue;   // still open
            float ms;
            CudaException.Check(CudaDriver.cuEventElapsedTime(&ms, events[start].DangerousGetHandle(), events[end].DangerousGetHandle()), "cuEventElapsedTime");
            inclusive[i] = ms;
            if (parent >= 0) childMs[parent] += ms;
        }
        var result = new Dictionary<string, RangeTime>();
        for (int i = 0; i < timed.Count; i++)
        {
            var t = timed[i];
            if (t.End < 0) continue;
            result.TryGetValue(t.Name, out var r);
            result[t.Name] = new RangeTime(r.Calls + 1, r.InclusiveMs + inclusive[i], r.ExclusiveMs + inclusive[i] - childMs[i], r.Flops + t.Flops, r.Bytes + t.Bytes);
        }
        timed.Clear();
        openTimed.Clear();
        eventsUsed = 0;
        return result;
    }

    /// <summary>While ranges are timed: the declared work of each launch, added to the innermost timed range (the op).</summary>
    public void DeclareWork(OpWork work)
    {
        if (!TimeRanges) return;
        foreach (int open in openTimed)
        {
            if (open < 0) continue;
            timed[open] = timed[open] with { Flops = timed[open].Flops + work.Flops, Bytes = timed[open].Bytes + work.Bytes };
            return;
        }
    }
}

/// <summary>
/// One range name's event-timed totals: ranges closed, GPU milliseconds with and without the ranges inside them, and
/// the declared FLOP and bytes of the launches made directly inside.
/// </summary>
internal readonly record struct RangeTime(long Calls, double InclusiveMs, double ExclusiveMs, double Flops, double Bytes);
