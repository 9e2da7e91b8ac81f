using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Model;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Tracing.Pipeline;

/// <summary>
/// The predicted peak memory of an attribution run on one device, from shapes alone (no weights read), so a run that
/// cannot fit is refused (or its batch lowered, or its layers checkpointed) before loading. Counts what
/// <see cref="Llama"/> and <see cref="Attributor"/> allocate: weights, the forward passes held at once (each layer's
/// <see cref="LayerState"/>: O(rows·width), the streaming attention keeps L [B, H, T] and no T² pattern; or, with
/// activation checkpointing, each layer's input and one recomputed layer), the CPU's paired forward, the backward's
/// scratch, the score sums, and a fixed runtime allowance. On the CPU every freed tensor's array stays in the pool for
/// the next batch, so the peak resident memory is what is allocated at once over the run's shapes, which these items
/// add up (tests/Tracing.Tests/MemoryPlanTests checks them against the pool's resident counter). Tensors are fp32
/// (<see cref="ElementBytes"/>) but for a GPU run under bf16 products, whose stored q, k, v, gate and up take 2 bytes.
/// </summary>
internal sealed record MemoryPlan
{
    /// <summary>
    /// Resident size of the .NET runtime, JIT, thread stacks and the GC's spare heap beside the tensors. On the
    /// long-prompt benchmark (bench/results/long-prompt) peak RSS minus the other items came to 34-44 MB at T = 256 ..
    /// 2048; 64 MB leaves headroom, so the plan is 3-7% above the measured peak from T = 512 on.
    /// </summary>
    public const long RuntimeBytes = 64L << 20;

    public required LlamaConfig Config { get; init; }
    public required int Batch { get; init; }
    public required int PromptLength { get; init; }
    public required AttributionMethod Method { get; init; }
    public int ElementBytes { get; init; } = 4;
    /// <summary>Whether the plan is of a run with activation checkpointing (<see cref="AttributionOptions.CheckpointLayers"/>).</summary>
    public bool Checkpoint { get; init; }
    /// <summary>(what, bytes), largest first.</summary>
    public required IReadOnlyList<(string Item, long Bytes)> Items { get; init; }
    /// <summary>For one device of a model split by layers: which device and layers (null: the whole model on one device).</summary>
    public string? Part { get; init; }
    /// <summary>Whether the plan is of a CPU run (this process's memory) rather than one GPU's.</summary>
    public bool Cpu { get; init; }

    public long TotalBytes => Items.Sum(i => i.Bytes);
    public string Dominant => Items[0].Item;

    /// <summary>
    /// The plan of <see cref="Attributor.Score"/> for <paramref name="batch"/> prompt pairs of up to
    /// <paramref name="promptLength"/> tokens. <paramref name="patchBaseline"/>: a second (patch) forward is held
    /// beside the clean one. <paramref name="weightCopies"/>: 2 on the CPU backend (the loaded arrays and the
    /// backend's copies are both alive during the run), 1 on a GPU; it also says which backend runs (the CPU pairs the
    /// clean and patch forwards and may split a batch over two threads). <paramref name="checkpoint"/>: activation
    /// checkpointing. <paramref name="cudaPrecision"/>: the GPU run's product precision (null: what
    /// <see cref="GemmPrecisions.FromEnvironment"/> gives the CUDA backend), which says how it stores the weights
    /// (<see cref="WeightBytes"/>). <paramref name="saeBytes"/>: the SAEs the run loads (<c>SparseAutoencoder.PlannedBytes</c>,
    /// from their configs), held in host memory: counted in a CPU plan (a GPU plan is of the device's memory).
    /// </summary>
    public static MemoryPlan ForAttribution(LlamaConfig c, int batch, int promptLength, IReadOnlyCollection<NodeSite> sites,
        AttributionMethod method, bool patchBaseline, int weightCopies = 2, int elementBytes = 4, int igRowsPerPass = AttributionOptions.DefaultIgRowsPerPass, bool checkpoint = false,
        int igSteps = 10, GemmPrecision? cudaPrecision = null, long saeBytes = 0) =>
        ForLayers(c, batch, promptLength, sites, method, patchBaseline, elementBytes, igRowsPerPass, igSteps,
            c.Layers, WeightBytes(c, c.Layers, embedding: true, head: true, weightCopies, elementBytes, cudaPrecision), logits: true, part: null, cpu: weightCopies == 2, checkpoint,
            cudaPrecision, saeBytes);

    /// <summary>
    /// The bytes of the weights of <paramref name="layers"/> layers (with the embedding and/or the head) as the backend
    /// holds them. The CPU (<paramref name="weightCopies"/> 2: the loaded arrays and the backend's) and a GPU in fp32 or
    /// TF32 hold every value in <paramref name="elementBytes"/>; the CUDA backend under <see cref="GemmPrecision.Bf16"/>
    /// stores each matrix once as bf16 (2 bytes, no fp32 copy; the stacked [Wq; Wk; Wv] and [W1; W3] are the same
    /// values in one block) and the norm gains as fp32 (Ops/Bf16Operands.cs, StoresBf16). The device pool rounds each
    /// block up to its size class (DeviceMemoryPool.SizeClass; well under 1% at 8B shapes), which this does not count.
    /// </summary>
    public static long WeightBytes(LlamaConfig c, int layers, bool embedding, bool head, int weightCopies, int elementBytes, GemmPrecision? cudaPrecision)
    {
        long values = LayerPlacement.ParametersOn(c, layers, embedding, head);
        bool bf16 = weightCopies == 1 && (cudaPrecision ?? GemmPrecisions.FromEnvironmentOrFp32()) == GemmPrecision.Bf16;
        if (!bf16) return weightCopies * values * elementBytes;
        long gains = (long)layers * 2 * c.Dim + (head ? c.Dim : 0);   // attention and MLP norm gains per layer, the final norm's
        return 2 * (values - gains) + 4 * gains;
    }

    /// <summary>
    /// Columns of the compact backward scratch per row: for each width, the most tensors of that width one of the
    /// backward's input-gradient products holds (its operands and its result), summed over the widths.
    /// </summary>
    static long CompactBackwardWidths(LlamaConfig c)
    {
        int d = c.Dim, kv = c.KvDim, h = c.HiddenDim;
        int[][] products = [[d, h], [h, h, d], [d, d], [d, kv, kv, d]];   // operands then result: W2, W1/W3, Wo, Wq/Wk/Wv
        return products.SelectMany(p => p).Distinct().Sum(w => (long)w * products.Max(p => p.Count(x => x == w)));
    }

    /// <summary>
    /// The plan of each device of a model split by layers over <paramref name="devices"/> GPUs (<see cref="LayerPlacement.Balanced"/>):
    /// a device holds its layers' weights, forward states and score sums, one [rows, dim] input (the
    /// embedding, or the residual stream moved in), the full backward scratch while it runs, and the logits on the last.
    /// </summary>
    public static IReadOnlyList<MemoryPlan> ForSplitAttribution(LlamaConfig c, int devices, int batch, int promptLength,
        IReadOnlyCollection<NodeSite> sites, AttributionMethod method, bool patchBaseline, int elementBytes = 4, int igRowsPerPass = AttributionOptions.DefaultIgRowsPerPass,
        GemmPrecision? cudaPrecision = null)
    {
        int[] starts = LayerPlacement.BalancedStarts(c, devices);
        return Enumerable.Range(0, devices).Select(d =>
        {
            int first = starts[d], end = d + 1 < devices ? starts[d + 1] : c.Layers;
            long weights = WeightBytes(c, end - first, d == 0, d == devices - 1, weightCopies: 1, elementBytes, cudaPrecision);
            return ForLayers(c, batch, promptLength, sites, method, patchBaseline, elementBytes, igRowsPerPass, 10, end - first, weights,
                logits: d == devices - 1, part: $"device {d} of {devices}: layers {first}..{end - 1}{(d == 0 ? " + embedding" : "")}{(d == devices - 1 ? " + head" : "")}",
                cpu: false, checkpoint: false, cudaPrecision);
        }).ToList();
    }

    static MemoryPlan ForLayers(LlamaConfig c, int batch, int promptLength, IReadOnlyCollection<NodeSite> sites, AttributionMethod method,
        bool patchBaseline, int elementBytes, int igRowsPerPass, int igSteps, int layers, long weightBytes, bool logits, string? part, bool cpu, bool checkpoint,
        GemmPrecision? cudaPrecision = null, long saeBytes = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(promptLength, 1);
        long e = elementBytes;
        long rows = (long)batch * promptLength;
        int d = c.Dim, kv = c.KvDim, h = c.HiddenDim;
        var distinct = sites.Distinct().ToArray();
        long siteWidths = distinct.Sum(s => (long)s.Width(c));
        bool ig = method is AttributionMethod.IG or AttributionMethod.IGInputs;
        var items = new List<(string, long)>
        {
            ("weights", weightBytes),
            ("runtime", RuntimeBytes),
        };
        ArgumentOutOfRangeException.ThrowIfNegative(saeBytes);
        // The SAEs' fp32 arrays live on the host beside the run (loaded after the plan, before the weights).
        if (cpu && saeBytes > 0) items.Add(("SAE weights", saeBytes));
        // LayerState per row: AttnNormed, Q, Z, AttnOut, Mid, FfnNormed, MlpOut, Output (d each), K, V (kv), Gate, Up,
        // Act (hidden), two rstd and L (one per head). A pass adds its embedding and (the clean one) the last rows' logits
        // and final norm input; checkpointed, it keeps each layer's input r_l and one recomputed layer at a time.
        // On a GPU under Bf16, Q, K, V and Gate, Up are stored in bf16 (IBackend.StoreForBackward: the bf16 attention's
        // q, k, v operands themselves, and what SwiGLU's backward reads), 2 bytes where the rest take e.
        long perRowPerLayer = 8L * d + 2L * kv + 3L * h + 2 + c.Heads;
        bool bf16Stored = !cpu && (cudaPrecision ?? GemmPrecisions.FromEnvironmentOrFp32()) == GemmPrecision.Bf16;
        long stateBytes = bf16Stored ? e * (7L * d + h + 2 + c.Heads) + 2 * (d + 2L * kv + 2L * h) : e * perRowPerLayer;
        long logitBytes = logits ? (long)batch * (c.VocabSize + d + 1) * e : 0;
        // A forward pass of n rows, in bytes.
        long Pass(long n) => checkpoint ? n * d * layers * e + n * stateBytes : n * stateBytes * layers + n * d * e;
        // IG holds the clean pass (and the patch pass, for the endpoints) beside one path pass of up to igRowsPerPass rows.
        int passes = patchBaseline ? 2 : 1;
        string held = checkpoint ? ", checkpointed: layer inputs + one layer" : "";
        // The CPU runs the clean and patch forwards as one (PairedForward, where both row counts take the same GEMM
        // kernel): two paired layers of 2·rows at a time beside the halves, and the paired embedding; every forward of
        // the run takes those arrays back from the pool. Its patch half keeps only its embedding and its site values.
        // A GPU pairs too (PairedForward.RunAsViews), its halves views of one forward of 2·rows: what two passes hold.
        bool paired = cpu && patchBaseline && !checkpoint && rows <= int.MaxValue / 2 && Gemm.SameRowArithmetic((int)rows, 2 * (int)rows);
        long patchPass = !patchBaseline ? 0 : paired ? (rows * d + rows * siteWidths * layers) * e : Pass(rows);
        if (bf16Stored) held += "; q, k, v, gate, up in bf16";
        items.Add((passes == 2 ? $"forward passes (clean + patch{(paired ? ": embedding and site values" : held)})" : $"forward pass{(held.Length > 0 ? $" ({held[2..]})" : "")}",
            Pass(rows) + patchPass + logitBytes));
        long igRows = rows;
        if (ig)
        {
            // The path replicates the prompt over the steps, up to igRowsPerPass rows per pass (at least one point).
            // As Attributor's PathPointsPerPass: the most points a pass takes, evened out over the passes.
            long most = Math.Clamp(igRowsPerPass / rows, 1, Math.Max(1, igSteps)), igPasses = (igSteps + most - 1) / most;
            igRows = rows * Math.Max(1, (igSteps + igPasses - 1) / igPasses);
        }
        // A path pass of two points has the paired layers' shapes: it takes their arrays back from the pool.
        if (paired && !(ig && igRows == 2 * rows)) items.Add(("paired forward (2 layers at 2× rows)", (2 * 2 * rows * perRowPerLayer + 2 * rows * d) * e));
        if (ig)
        {
            long edits = method == AttributionMethod.IG ? 2 * igRows * distinct.Max(s => (long)s.Width(c)) : 2 * igRows * d;
            items.Add(("IG path pass", Pass(igRows) + ((long)(igRows / Math.Max(1, promptLength)) * (c.VocabSize + d + 1) + edits) * e));
            // The path backward records its sites' gradients (IG: one site down to its layer; ig-inputs: all) and sums them per row.
            long recorded = method == AttributionMethod.IG ? distinct.Max(s => (long)s.Width(c)) : siteWidths;
            items.Add(("site gradients", (igRows * recorded * layers + rows * (method == AttributionMethod.IG ? recorded : siteWidths * layers)) * e));
        }
        // Backward: dZ, dUpstream, dNorm, dQ, dR (d), dK, dV (kv), dAct, dGate, dUp (hidden). AtP and RelP hand each site
        // gradient to the score op where it is produced: none is recorded.
        items.Add(("backward scratch", igRows * (5L * d + 2L * kv + 3L * h) * e));
        // AtP and RelP on the CPU leave out the rows where no score can be non-zero (BackwardRows): the input-gradient
        // products then run on compact copies of the computed rows, at most every row, one tensor per operand of a width
        // and the product's result (BackwardScratch.Compact); the top layer's MLP and W_o products on a second set of
        // the logit rows, at least the few-row kernel's bound plus one (BackwardRows.TopLayer).
        long topRows = Math.Min(rows, Math.Max(batch, Gemm.SmallMPlain + 1));
        if (cpu && !ig) items.Add(("backward scratch (computed rows)", (rows + topRows) * CompactBackwardWidths(c) * e));
        // ScoreSums: one [positions + 1, Σ widths] slab per layer, scores added in place (no delta tensor); a CPU batch
        // split over two threads adds the second thread's slab.
        long slab = (long)(promptLength + 1) * siteWidths * layers;
        bool split = cpu && batch >= 2 && Attributor.IsSmallModelWork(c, rows);
        items.Add((split ? "score sums (two threads)" : "score sums", (split ? 2 : 1) * slab * e));
        // At the end the means are formed on the device a group of layers at a time ([group · positions, Σ widths],
        // beside the pooled arrays of the run; ScoreSums.LayersPerMeansGroup, all layers unless that passes 1 GiB) and,
        // on the CPU, each group downloaded into a host array and split into the per-site score arrays (all layers).
        long meansPerLayer = (long)promptLength * siteWidths;
        long meansGroup = meansPerLayer * ScoreSums.LayersPerMeansGroup(promptLength, siteWidths, layers);
        items.Add(("score means", meansGroup * e));
        if (cpu) items.Add(("score means (host copies)", (meansPerLayer * layers + meansGroup) * 4));
        // Streaming attention scratch, per thread (thread-static, kept): forward Kᵀ [hd, T]; backward Kᵀ, Vᵀ, dKᵀ, dVᵀ
        // [hd, T] and two pattern rows [QB = 4, T] (AttentionOps.Streaming*).
        if (cpu) items.Add(("attention scratch", Environment.ProcessorCount * (5L * c.HeadDim + 8) * promptLength * 4));
        // On a GPU: the bf16 operand copies of one op at a time (Bf16Operands' shadows and the bf16 attention kernels' q,
        // k, v, dz copies; counted for every GPU plan, a little over for fp32 math). Measured on the recording runtime at
        // 8B width, 4 layers: the pool's peak less weights is 0.37 GB above the other items at T = 8192 (this item: 0.40 GB).
        // A GPU runs the clean and patch forwards as one of 2·rows (PairedForward.RunAsViews; not checkpointed): that
        // forward's operand copies are twice a pass's (recording runtime, 8B width, 1 layer, T = 8192: the peak rose by
        // 0.64 GB with the pairing, 0.40 GB of it this item's doubling; the rest is the stacked product output below).
        // The rows of one GPU forward (the IG path pass, or clean and patch paired when not checkpointed).
        long gpuForwardRows = patchBaseline && !checkpoint ? Math.Max(igRows, 2 * rows) : igRows;
        if (!cpu) items.Add(("bf16 operand scratch", gpuForwardRows * (c.HiddenDim + 2L * d + 2L * kv) * 2));
        // Under bf16 a GPU runs Q/K/V and gate/up as stacked products into one kept fp32 staging buffer (MatMul.cs
        // StackedProduct; gate/up at any width since SwiGLU reads its halves in place): the widest stack, [Wq; Wk; Wv]
        // or [W1; W3], at the forward's rows (2·rows when clean and patch pair).
        if (bf16Stored)
            items.Add(("stacked product output", gpuForwardRows * Math.Max(2L * h, d + 2L * kv) * 4));
        items.Sort((a, b) => b.Item2.CompareTo(a.Item2));
        return new MemoryPlan
        {
            Config = c, Batch = batch, PromptLength = promptLength, Method = method, ElementBytes = elementBytes, Items = items, Part = part, Checkpoint = checkpoint, Cpu = cpu,
        };
    }

    /// <summary>
    /// What a GPU run's scores take in host memory: the per-site score arrays the task's means are split into
    /// (positions × Σ site widths × layers floats, whatever the batch), and the page-locked buffers the readout beside
    /// the backward copies them through (ScoreSums: a group of layers, at most 1 GiB). A CPU plan counts these as
    /// "score means (host copies)".
    /// </summary>
    public static long HostScoreBytes(LlamaConfig c, int promptLength, IReadOnlyCollection<NodeSite> sites)
    {
        long arrays = (long)promptLength * sites.Distinct().Sum(s => (long)s.Width(c)) * c.Layers * 4;
        return arrays + Math.Min(arrays, 1L << 30);
    }

    /// <summary>
    /// The refusal line of a GPU run whose scores do not fit the host's <paramref name="hostAvailable"/> bytes (null: they
    /// fit, or the host's memory is unknown). No batch changes it: the scores are per position of the whole prompt.
    /// </summary>
    public static string? HostRefusal(LlamaConfig c, int promptLength, IReadOnlyCollection<NodeSite> sites, long? hostAvailable)
    {
        long need = HostScoreBytes(c, promptLength, sites);
        if (hostAvailable is not long have || need <= have) return null;
        return $"the scores of this run take about {Gib(need)} of host memory ({promptLength} positions × {string.Join(",", sites.Distinct().Select(s => s.Name()))} " +
            $"× {c.Layers} layers, with the readout's page-locked buffers) but {Gib(have)} is available; score fewer sites (--sites) or shorter prompts";
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
    /// <param name="available">Bytes the device has for the run.</param>
    /// <param name="fittingBatch">The largest batch that fits (<see cref="LargestFittingBatch"/>), or 0 when none does.</param>
    /// <param name="where">How the available bytes are described: "available" (the CPU) or "free on cuda:0".</param>
    public string? Refusal(long available, int fittingBatch, string where = "available")
    {
        if (TotalBytes <= available) return null;
        string change = fittingBatch >= 1
            ? $"use --batch {fittingBatch} or less"
            : "no batch fits this prompt length: use fewer --sites, shorter prompts or a device with more memory" +
              (!Cpu && GemmPrecisions.FromEnvironmentOrFp32() != GemmPrecision.Bf16 ? " (or NEURONTRACE_CUDA_MATH=bf16: weights stored in bf16)" : "");
        return $"this run needs about {Gib(TotalBytes)} (mostly {Dominant}: {Gib(Items[0].Bytes)}) but {Gib(available)} is {where}; {change}";
    }

    /// <summary>
    /// What an attribution run is given to fit in <paramref name="available"/> bytes (null: unknown, the run goes as
    /// asked): the requested batch when it fits; else the largest batch that fits, with <see cref="AttributionFit.Note"/>
    /// saying so; else, when even batch 1's stored activations do not fit, activation checkpointing and the largest batch
    /// that fits with it; else <see cref="AttributionFit.Refusal"/>, one line with what it needs, what there is and what
    /// to change. Scores do not depend on the batch (nor on checkpointing), so only memory and time change.
    /// On the CPU (<paramref name="cpu"/>) the plan counts two weight copies, on a GPU one.
    /// </summary>
    /// <param name="c">The model's configuration.</param>
    /// <param name="batch">The requested batch (prompt pairs per forward).</param>
    /// <param name="promptLength">The longest prompt, in tokens.</param>
    /// <param name="sites">The scored sites.</param>
    /// <param name="method">The attribution method (IG also holds a pass of path rows).</param>
    /// <param name="patchBaseline">Whether a patch forward is held beside the clean one.</param>
    /// <param name="cpu">Whether the run is on the CPU backend (two weight copies) rather than a GPU (one).</param>
    /// <param name="available">Bytes the device has for the run; null: unknown, the run goes as asked.</param>
    /// <param name="where">How the available bytes are described: "available" (the CPU) or "free on cuda:0".</param>
    /// <param name="igSteps">IG steps per example (the integration path's points).</param>
    /// <param name="saeBytes">The SAEs the run loads, in bytes (see <see cref="ForAttribution"/>).</param>
    public static AttributionFit FitAttribution(LlamaConfig c, int batch, int promptLength, IReadOnlyCollection<NodeSite> sites,
        AttributionMethod method, bool patchBaseline, bool cpu, long? available, string where = "available", int igSteps = 10, long saeBytes = 0)
    {
        if (batch < 1 || promptLength < 1 || available is not long bytes) return new(batch, false, null, null);
        MemoryPlan Plan(int n, bool checkpoint) =>
            ForAttribution(c, n, promptLength, sites, method, patchBaseline, weightCopies: cpu ? 2 : 1, checkpoint: checkpoint, igSteps: igSteps, saeBytes: saeBytes);
        var asked = Plan(batch, false);
        if (asked.TotalBytes <= bytes) return new(batch, false, null, null);
        int fits = LargestFittingBatch(n => Plan(n, false), batch, bytes);
        if (fits >= 1)
            return new(fits, false, $"memory plan: batch {batch} needs about {Gib(asked.TotalBytes)} but {Gib(bytes)} is {where}; running in batches of {fits} (about {Gib(Plan(fits, false).TotalBytes)})", null);
        int checkpointed = LargestFittingBatch(n => Plan(n, true), batch, bytes);
        if (checkpointed >= 1)
            return new(checkpointed, true, $"memory plan: batch 1 needs about {Gib(Plan(1, false).TotalBytes)} but {Gib(bytes)} is {where}; recomputing each layer in the backward " +
                $"(activation checkpointing), batches of {checkpointed} (about {Gib(Plan(checkpointed, true).TotalBytes)})", null);
        return new(0, true, null, Plan(1, true).Refusal(bytes, 0, where));
    }

    /// <summary>
    /// What a run of <paramref name="methods"/> over one task is given, before its weights are read (trace, attribute and
    /// the facade). Not <paramref name="pinned"/> (no <c>--batch</c> given): the plan chooses the batch, the largest up to
    /// <paramref name="batch"/> that fits every method (checkpointing where batch 1 does not), and
    /// <see cref="AttributionFit.Note"/> says what it chose. <paramref name="pinned"/>: the batch is kept (with
    /// checkpointing if that is what fits it) or the run refused, naming the batch that would fit. Null
    /// <paramref name="available"/>: unknown, the run goes as asked. <paramref name="saeBytes"/>: the SAEs the run loads
    /// after the plan (see <see cref="ForAttribution"/>). <paramref name="hostAvailable"/>: on a GPU run, the host's
    /// available bytes, which must hold the scores (<see cref="HostRefusal"/>; null: not checked).
    /// </summary>
    public static AttributionFit FitTask(LlamaConfig c, int batch, bool pinned, int examples, int promptLength, IReadOnlyCollection<NodeSite> sites,
        IReadOnlyList<AttributionMethod> methods, bool patchBaseline, bool cpu, long? available, string where = "available", int igSteps = 10, long saeBytes = 0,
        long? hostAvailable = null)
    {
        if (!cpu && promptLength >= 1 && HostRefusal(c, promptLength, sites, hostAvailable) is { } hostLine) return new(0, true, null, hostLine);
        int asked = Math.Min(batch, Math.Max(examples, 1));
        if (asked < 1 || promptLength < 1 || available is not long bytes) return new(batch, false, null, null);
        int chosen = asked;
        bool checkpoint = false;
        foreach (var m in methods)
        {
            MemoryPlan Plan(int n, bool checkpointed) =>
                ForAttribution(c, n, promptLength, sites, m, patchBaseline, weightCopies: cpu ? 2 : 1, checkpoint: checkpointed, igSteps: igSteps, saeBytes: saeBytes);
            if (pinned)
            {
                // The batch asked for, with checkpointing if that is what fits it; else the largest batch that fits.
                if (Plan(asked, false).TotalBytes <= bytes) continue;
                if (Plan(asked, true).TotalBytes <= bytes) { checkpoint = true; continue; }
                int fits = LargestFittingBatch(n => Plan(n, false), asked, bytes);
                if (fits == 0) fits = LargestFittingBatch(n => Plan(n, true), asked, bytes);
                return new(0, true, null, $"--batch {batch}: " + Plan(asked, true).Refusal(bytes, fits, where));
            }
            var fit = FitAttribution(c, asked, promptLength, sites, m, patchBaseline, cpu, bytes, where, igSteps, saeBytes);
            if (fit.Refusal is not null) return fit;
            chosen = Math.Min(chosen, fit.Batch);
            checkpoint |= fit.Checkpoint;
        }
        // The stderr line only when the plan changed the run: an error after it must still be the one line of stderr.
        if (!checkpoint && (pinned || chosen == asked)) return new(pinned ? batch : chosen, false, null, null);
        var peak = methods.Select(m => ForAttribution(c, chosen, promptLength, sites, m, patchBaseline, weightCopies: cpu ? 2 : 1, checkpoint: checkpoint, igSteps: igSteps, saeBytes: saeBytes))
            .MaxBy(p => p.TotalBytes)!;
        string why = chosen < asked ? $" (batch {asked} does not fit)" : "";
        return new(chosen, checkpoint, $"memory plan: batch {chosen} × {promptLength} tokens{why}{(checkpoint ? ", activation checkpointing" : "")}, " +
            $"about {Gib(peak.TotalBytes)} (mostly {peak.Dominant}) of {Gib(bytes)} {where}", null);
    }

    /// <summary>
    /// The refusal line of an attribution run that cannot fit even at batch 1 with activation checkpointing, null
    /// otherwise (see <see cref="FitAttribution"/>, which trace and attribute call before reading the weights). On the
    /// CPU the plan is compared with <see cref="AvailableCpuBytes"/>; on a GPU with <paramref name="deviceFreeBytes"/>
    /// (what <see cref="Runtime.Cuda.IDeviceRuntime.FreeBytes"/> or <see cref="Runtime.Cuda.CudaDevice.TryQueryMemory"/>
    /// reports for <paramref name="device"/>; null when unknown: no check).
    /// </summary>
    public static string? CheckAttribution(LlamaConfig c, int batch, int promptLength, IReadOnlyCollection<NodeSite> sites,
        AttributionMethod method, bool patchBaseline, bool cpu, long? deviceFreeBytes = null, string device = "the device") =>
        FitAttribution(c, batch, promptLength, sites, method, patchBaseline, cpu, cpu ? AvailableCpuBytes() : deviceFreeBytes,
            cpu ? "available" : $"free on {device}").Refusal;

    public static string Gib(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):F2} GiB" : $"{bytes / (double)(1L << 20):F0} MiB";

    /// <summary>A table of the items, largest first, and the total.</summary>
    public string Describe()
    {
        var lines = new List<string>
        {
            $"memory plan: {Method.Name()}, batch {Batch} × {PromptLength} tokens, {Config.Layers} layers × dim {Config.Dim} ({Config.Heads} heads, {Config.KvHeads} kv), fp{ElementBytes * 8}" +
                (Checkpoint ? ", activation checkpointing" : "") +
                (Part is not null ? $"; per device: {Part}" : Cpu ? "; on the CPU (this process)" : "; per device: the whole model on one GPU"),
        };
        int width = Math.Max(32, Items.Max(i => i.Item.Length));
        foreach (var (item, bytes) in Items) lines.Add($"  {item.PadRight(width)} {Gib(bytes),12}");
        lines.Add($"  {"total (predicted peak)".PadRight(width)} {Gib(TotalBytes),12}");
        return string.Join(Environment.NewLine, lines);
    }
}

/// <summary>The batch and checkpointing an attribution run is given by <see cref="MemoryPlan.FitAttribution"/>; the line saying what changed (null: as asked); the refusal line (null: it runs).</summary>
internal sealed record AttributionFit(int Batch, bool Checkpoint, string? Note, string? Refusal);
