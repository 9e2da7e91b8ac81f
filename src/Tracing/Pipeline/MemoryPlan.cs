using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Pipeline;

/// <summary>
/// The predicted peak memory of an attribution run on one device, from shapes alone (no weights read), so a run that
/// cannot fit is refused before loading. Counts what <see cref="Llama"/> and <see cref="Attributor"/> allocate:
/// weights, the forward passes held at once (each layer's <see cref="LayerState"/>: O(rows·width), the streaming
/// attention keeps L [B, H, T] and no T² pattern), the backward's scratch and recorded site gradients, the score sums,
/// and a fixed runtime allowance. All tensors are fp32 today (4 bytes; <see cref="ElementBytes"/> is a parameter so
/// a lean-storage backend can be planned with the same code).
/// </summary>
internal sealed record MemoryPlan
{
    /// <summary>
    /// Resident size of the .NET runtime, JIT, thread stacks and pooled buffers beside the tensors: calibrated on the
    /// long-prompt benchmark at T = 256 (118 MB measured, 77 MB of it the items below).
    /// </summary>
    public const long RuntimeBytes = 40L << 20;

    public required LlamaConfig Config { get; init; }
    public required int Batch { get; init; }
    public required int PromptLength { get; init; }
    public required AttributionMethod Method { get; init; }
    public int ElementBytes { get; init; } = 4;
    /// <summary>(what, bytes), largest first.</summary>
    public required IReadOnlyList<(string Item, long Bytes)> Items { get; init; }
    /// <summary>For one device of a model split by layers: which device and layers (null: the whole model on one device).</summary>
    public string? Part { get; init; }

    public long TotalBytes => Items.Sum(i => i.Bytes);
    public string Dominant => Items[0].Item;

    /// <summary>
    /// The plan of <see cref="Attributor.Score"/> for <paramref name="batch"/> prompt pairs of up to
    /// <paramref name="promptLength"/> tokens. <paramref name="patchBaseline"/>: a second (patch) forward is held
    /// beside the clean one. <paramref name="weightCopies"/>: 2 on the CPU backend (the loaded arrays and the
    /// backend's copies are both alive during the run), 1 on a GPU.
    /// </summary>
    public static MemoryPlan ForAttribution(LlamaConfig c, int batch, int promptLength, IReadOnlyCollection<NodeSite> sites,
        AttributionMethod method, bool patchBaseline, int weightCopies = 2, int elementBytes = 4, int igRowsPerPass = 8192) =>
        ForLayers(c, batch, promptLength, sites, method, patchBaseline, elementBytes, igRowsPerPass,
            c.Layers, weightCopies * c.ParameterCount * elementBytes, logits: true, part: null);

    /// <summary>
    /// The plan of each device of a model split by layers over <paramref name="devices"/> GPUs (<see cref="LayerPlacement.Balanced"/>):
    /// a device holds its layers' weights, forward states, site gradients and score sums, one [rows, dim] input (the
    /// embedding, or the residual stream moved in), the full backward scratch while it runs, and the logits on the last.
    /// </summary>
    public static IReadOnlyList<MemoryPlan> ForSplitAttribution(LlamaConfig c, int devices, int batch, int promptLength,
        IReadOnlyCollection<NodeSite> sites, AttributionMethod method, bool patchBaseline, int elementBytes = 4, int igRowsPerPass = 8192)
    {
        int[] starts = LayerPlacement.BalancedStarts(c, devices);
        return Enumerable.Range(0, devices).Select(d =>
        {
            int first = starts[d], end = d + 1 < devices ? starts[d + 1] : c.Layers;
            long weights = LayerPlacement.ParametersOn(c, end - first, d == 0, d == devices - 1) * elementBytes;
            return ForLayers(c, batch, promptLength, sites, method, patchBaseline, elementBytes, igRowsPerPass, end - first, weights,
                logits: d == devices - 1, part: $"device {d} of {devices}: layers {first}..{end - 1}{(d == 0 ? " + embedding" : "")}{(d == devices - 1 ? " + head" : "")}");
        }).ToList();
    }

    static MemoryPlan ForLayers(LlamaConfig c, int batch, int promptLength, IReadOnlyCollection<NodeSite> sites, AttributionMethod method,
        bool patchBaseline, int elementBytes, int igRowsPerPass, int layers, long weightBytes, bool logits, string? part)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(promptLength, 1);
        long e = elementBytes;
        long rows = (long)batch * promptLength;
        int d = c.Dim, kv = c.KvDim, h = c.HiddenDim;
        long siteWidths = sites.Distinct().Sum(s => (long)s.Width(c));
        var items = new List<(string, long)>
        {
            ("weights", weightBytes),
            ("runtime", RuntimeBytes),
        };
        // LayerState per row: AttnNormed, Q, Z, AttnOut, Mid, FfnNormed, MlpOut, Output (d each), K, V (kv), Gate, Up,
        // Act (hidden), two rstd and L (one per head); plus the embedding and the last rows' logits.
        long perRowPerLayer = 8L * d + 2L * kv + 3L * h + 2 + c.Heads;
        long forward = (rows * perRowPerLayer * layers + rows * d + (logits ? (long)batch * c.VocabSize * 2 : 0)) * e;
        if (method is AttributionMethod.IG or AttributionMethod.IGInputs)
        {
            // IG replicates the prompt over the steps, up to igRowsPerPass rows per pass: one pass held at a time.
            long igRows = Math.Max(rows, Math.Min((long)igRowsPerPass, rows * 16));
            forward = (igRows * perRowPerLayer * layers + igRows * d) * e;
            rows = igRows;
            patchBaseline = false;
        }
        items.Add((patchBaseline ? "forward passes (clean + patch)" : "forward pass", (patchBaseline ? 2 : 1) * forward));
        // Backward: dZ, dUpstream, dNorm, dQ, dR (d), dK, dV (kv), dAct, dGate, dUp (hidden); the recorded site gradients.
        items.Add(("backward scratch", rows * (5L * d + 2L * kv + 3L * h) * e));
        items.Add(("site gradients", rows * siteWidths * layers * e));
        // ScoreSums: [positions + 1, width] per site and layer; one delta tensor at a time.
        items.Add(("score sums", ((long)(promptLength + 1) * siteWidths * layers + rows * h) * e));
        // Streaming attention scratch: per thread Kᵀ, Vᵀ, dKᵀ, dVᵀ of one head plus a few rows, O(T·headDim).
        items.Add(("attention scratch", Environment.ProcessorCount * (4L * c.HeadDim + 16) * promptLength * e));
        items.Sort((a, b) => b.Item2.CompareTo(a.Item2));
        return new MemoryPlan { Config = c, Batch = batch, PromptLength = promptLength, Method = method, ElementBytes = elementBytes, Items = items, Part = part };
    }

    /// <summary>Memory this process may use on the CPU: the GC's view, which honours container limits.</summary>
    public static long AvailableCpuBytes() => GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;

    /// <summary>The largest batch (≤ <paramref name="upTo"/>) whose plan fits in <paramref name="available"/> bytes; 0 if none.</summary>
    public static int LargestFittingBatch(Func<int, MemoryPlan> plan, int upTo, long available)
    {
        int lo = 0, hi = upTo;
        while (lo < hi)
        {
            int mid = (lo + hi + 1) / 2;
            if (plan(mid).TotalBytes <= available) lo = mid; else hi = mid - 1;
        }
        return lo;
    }

    /// <summary>One line when the plan does not fit: what it needs, what there is, and what to change; null when it fits.</summary>
    /// <param name="where">How the available bytes are described: "available" (the CPU) or "free on cuda:0".</param>
    public string? Refusal(long available, int fittingBatch, string where = "available")
    {
        if (TotalBytes <= available) return null;
        string change = fittingBatch >= 1
            ? $"use --batch {fittingBatch} or less"
            : "no batch fits this prompt length: use fewer --sites, shorter prompts or a device with more memory";
        return $"this run needs about {Gib(TotalBytes)} (mostly {Dominant}: {Gib(Items[0].Bytes)}) but {Gib(available)} is {where}; {change}";
    }

    /// <summary>
    /// The refusal line of an attribution run that cannot fit, null when it fits: trace and attribute call it before
    /// reading the weights. On the CPU (<paramref name="cpu"/>) the plan counts two weight copies and is compared with
    /// <see cref="AvailableCpuBytes"/>; on a GPU one copy, compared with <paramref name="deviceFreeBytes"/> (what
    /// <see cref="Runtime.Cuda.IDeviceRuntime.FreeBytes"/> or <see cref="Runtime.Cuda.CudaDevice.TryQueryMemory"/>
    /// reports for <paramref name="device"/>; null when unknown: no check).
    /// </summary>
    public static string? CheckAttribution(LlamaConfig c, int batch, int promptLength, IReadOnlyCollection<NodeSite> sites,
        AttributionMethod method, bool patchBaseline, bool cpu, long? deviceFreeBytes = null, string device = "the device")
    {
        if (batch < 1 || promptLength < 1) return null;
        long? available = cpu ? AvailableCpuBytes() : deviceFreeBytes;
        if (available is not long bytes) return null;
        MemoryPlan Plan(int n) => ForAttribution(c, n, promptLength, sites, method, patchBaseline, weightCopies: cpu ? 2 : 1);
        var plan = Plan(batch);
        return plan.TotalBytes <= bytes ? null : plan.Refusal(bytes, LargestFittingBatch(Plan, batch, bytes), cpu ? "available" : $"free on {device}");
    }

    public static string Gib(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):F2} GiB" : $"{bytes / (double)(1L << 20):F0} MiB";

    /// <summary>A table of the items, largest first, and the total.</summary>
    public string Describe()
    {
        var lines = new List<string>
        {
            $"memory plan: {Method.Name()}, batch {Batch} × {PromptLength} tokens, {Config.Layers} layers × dim {Config.Dim} ({Config.Heads} heads, {Config.KvHeads} kv), fp{ElementBytes * 8}" +
                (Part is null ? "" : $"; {Part}"),
        };
        foreach (var (item, bytes) in Items) lines.Add($"  {item,-32} {Gib(bytes),12}");
        lines.Add($"  {"total (predicted peak)",-32} {Gib(TotalBytes),12}");
        return string.Join(Environment.NewLine, lines);
    }
}
