// Over the ~350-line guide on purpose: the four methods share one batch context (clean and baseline site values, the
// metric gradient, the replicated IG path), and splitting it per method would spread that shared state over files.
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Tracing.Scoring;

/// <summary>
/// Scores every node of the chosen sites on a task: the example mean of (a_patch − a_clean) ⊙ gradient, where the
/// gradient is the clean-run gradient (AtP), the RelP-rule gradient (RelP) or an integrated-gradients path mean (IG).
/// </summary>
internal static class Attributor
{
    public static NodeScores Score(Llama model, PromptTask task, AttributionOptions options, IProgress<WorkProgress>? progress = null) =>
        ScoreWithPairing(model, task, options, progress, pairForwards: true);

    /// <param name="model">The model on its backend.</param>
    /// <param name="task">The examples to attribute (paired or not).</param>
    /// <param name="options">Method, sites, metric, baseline, IG steps, batch and RelP rules.</param>
    /// <param name="progress">Progress per batch (per IG step for IG); null for none.</param>
    /// <param name="pairForwards">Whether a batch's clean and patch forwards run as one (<see cref="PairedForward"/>);
    /// false runs them apart, the reference the tests compare the paired scores with bit for bit.</param>
    internal static NodeScores ScoreWithPairing(Llama model, PromptTask task, AttributionOptions options, IProgress<WorkProgress>? progress, bool pairForwards)
    {
        using var scores = Accumulate(model, task, options, progress, pairForwards, readOutBesideBackward: true);
        return scores.Download();
    }

    /// <summary>
    /// <see cref="Score"/> with the scores left where they were summed (a GPU's slab): nothing is downloaded until the
    /// caller asks (<see cref="DeviceScores.TopK"/> brings only k nodes to the host).
    /// </summary>
    public static DeviceScores ScoreOnDevice(Llama model, PromptTask task, AttributionOptions options, IProgress<WorkProgress>? progress = null) =>
        Accumulate(model, task, options, progress, pairForwards: true, readOutBesideBackward: false);

    /// <summary>The batches of <see cref="ScoreWithPairing"/> (its parameters), their sums left on the backend.</summary>
    /// <param name="model">The model on its backend.</param>
    /// <param name="task">The examples to attribute.</param>
    /// <param name="options">Method, sites, metric, baseline, IG steps, batch and RelP rules.</param>
    /// <param name="progress">Progress per batch (per IG step for IG); null for none.</param>
    /// <param name="pairForwards">Whether a batch's clean and patch forwards run as one.</param>
    /// <param name="readOutBesideBackward">Whether the last batch's backward queues each finished layer's means for the host
    /// as it goes (<see cref="ScoreSums.ReadOutAsLayersFinish"/>), for a caller that downloads them all.</param>
    static DeviceScores Accumulate(Llama model, PromptTask task, AttributionOptions options, IProgress<WorkProgress>? progress, bool pairForwards,
        bool readOutBesideBackward)
    {
        var baseline = options.Baseline ?? (task.IsPaired ? Baseline.Patch : Baseline.Zero);
        if (baseline == Baseline.Patch && !task.IsPaired)
            throw new ArgumentException($"{task.Name}: the patch baseline needs patch_prefix on every line; use the zero or mean baseline");
        if (options.Method == AttributionMethod.IGInputs && (!task.IsPaired || baseline != Baseline.Patch))
            throw new ArgumentException($"{task.Name}: input-interpolation IG (ig-inputs) runs from the patch prompts' embeddings; it needs paired prompts and the patch baseline");
        if (options.IgSteps < 1) throw new ArgumentException("IG needs at least one step");
        task.RequireAnswersWithin(model.Config.VocabSize);
        if (baseline == Baseline.Patch && task.Pairs.FirstOrDefault(p => p.PatchIds!.Length != p.CleanIds.Length) is { } uneven)
            throw new ArgumentException($"{task.Name}: line {uneven.Line}: the clean prompt has {uneven.CleanIds.Length} tokens and the patch prompt {uneven.PatchIds!.Length}; patching pairs positions, so they must be equal");
        if (options.IgRowsPerPass < 1) throw new ArgumentException("IG rows per pass must be at least 1");
        var metric = options.Metric ?? Metric.AttributionDefault(task);
        var sites = options.Sites.Distinct().ToArray();
        bool checkpoint = options.CheckpointLayers || AttributionOptions.CheckpointForced;
        int positions = task.Pairs.Max(p => p.CleanIds.Length);
        // The mean baseline is the mean over the whole task's clean prompts (per position from the end), formed once:
        // a mean per batch would make every score depend on the batch size (and be zero for a batch of one).
        var cleanMeans = baseline == Baseline.Mean
            ? SiteMeans.Compute(model, task.Pairs.Select(p => p.CleanIds).ToList(), sites, Math.Max(1, options.BatchSize))
            : null;
        var sums = new ScoreSums(model.Placement, model.Config, sites, positions);
        try
        {
            using var meanBaseline = cleanMeans is null ? null : new PositionMeans(sums, model.Config, cleanMeans, sites, positions);
            var counts = new int[positions];

            int batchSize = Math.Max(1, options.BatchSize);
            int batches = (task.Count + batchSize - 1) / batchSize;
            long unitsPerBatch = options.Method == AttributionMethod.IG ? sites.Length * model.Config.Layers : 1;
            long done = 0;
            var progressGate = new Lock();
            bool splitBatches = SplitsBatches(model, task, batchSize);
            // IG reports every (site, layer) step of every batch run; a split batch is two runs, each reporting its steps,
            // so the total counts runs (it was batches, and the count went past it: 80/40).
            long igRuns = 0;
            for (int start = 0; start < task.Count; start += batchSize)
                igRuns += splitBatches && Math.Min(batchSize, task.Count - start) >= 2 ? 2 : 1;
            using var secondSums = splitBatches ? new ScoreSums(model.Placement, model.Config, sites, positions) : null;
            for (int start = 0; start < task.Count; start += batchSize)
            {
                var pairs = task.Pairs.Skip(start).Take(batchSize).ToList();
                foreach (var p in pairs)
                    for (int i = 0; i < p.CleanIds.Length; i++) counts[i]++;
                // The last batch: its backward can hand each finished layer's scores to the host as it goes. Not where
                // batches are split over two threads (the second thread's sums are added after the last batch).
                if (readOutBesideBackward && !splitBatches && start + batchSize >= task.Count) sums.ReadOutAsLayersFinish(counts);
                if (splitBatches && pairs.Count >= 2)
                {
                    int half = pairs.Count / 2;
                    try
                    {
                        Parallel.Invoke(
                            () => RunBatch(pairs.GetRange(0, half), sums, concurrentPatch: false),
                            () => RunBatch(pairs.GetRange(half, pairs.Count - half), secondSums!, concurrentPatch: false));
                    }
                    catch (AggregateException e) when (e.InnerExceptions.Count >= 1)
                    {
                        // the caller sees the error itself, as from a serial run (the CLI turns it into one line)
                        System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
                    }
                }
                else RunBatch(pairs, sums, concurrentPatch: model.Backend.SupportsConcurrentCalls);
                if (options.Method != AttributionMethod.IG) progress?.Report(new("attribute", ++done, batches));
            }
            if (secondSums is not null) sums.Add(secondSums);

            // IG reports each (site, layer) step; with split batches two threads report, one at a time and in order.
            void ReportIgStep()
            {
                lock (progressGate) progress?.Report(new("ig", ++done, igRuns * unitsPerBatch));
            }

            void RunBatch(List<PromptPair> pairs, ScoreSums into, bool concurrentPatch)
            {
                using var ctx = new BatchContext(model, pairs, metric, baseline, cleanMeans, meanBaseline, sites, positions, concurrentPatch, options.IgRowsPerPass,
                    pairForwards && !checkpoint, checkpoint, options.ComputeEveryRow, options.Method is AttributionMethod.AtP or AttributionMethod.RelP);
                switch (options.Method)
                {
                    case AttributionMethod.AtP: ctx.GradientTimesDelta(BackwardRules.Exact, into); break;
                    case AttributionMethod.RelP: ctx.GradientTimesDelta(options.RelPRules, into); break;
                    case AttributionMethod.IG: ctx.IntegratedGradients(options.IgSteps, into, ReportIgStep); break;
                    case AttributionMethod.IGInputs: ctx.InputIntegratedGradients(options.IgSteps, into); break;
                }
            }

            return new DeviceScores(sums, counts);
        }
        catch
        {
            sums.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Whether each batch is cut in two halves scored on two threads at once. For small models every op is too small
    /// to spread over the cores itself (thread hand-offs cost more than the work), so the two halves keep both cores
    /// busy instead, each with its own score sums; big models split their matrix products across the cores already.
    /// Only on a backend that takes concurrent calls (the CPU).
    /// </summary>
    static bool SplitsBatches(Llama model, PromptTask task, int batchSize)
    {
        if (!model.Backend.SupportsConcurrentCalls || Environment.ProcessorCount < 2 || Math.Min(batchSize, task.Count) < 2) return false;
        long rows = (long)Math.Min(batchSize, task.Count) * task.Pairs.Max(p => p.CleanIds.Length);
        return IsSmallModelWork(model.Config, rows);
    }

    /// <summary>Whether a batch of <paramref name="rows"/> token rows is small enough work to be split in halves (the memory plan counts the second score slab then).</summary>
    internal static bool IsSmallModelWork(LlamaConfig c, long rows) => rows * c.Dim * c.HiddenDim < SmallModelWork;

    /// <summary>Multiply-adds of a batch's largest product (rows · dim · hidden) below which batches are split.</summary>
    const long SmallModelWork = 1L << 26;

    /// <summary>One batch of examples: the clean and baseline site values and the metric gradient plumbing.</summary>
    sealed class BatchContext : IDisposable
    {
        readonly Llama _model;
        readonly List<PromptPair> _pairs;
        readonly Metric _metric;
        readonly NodeSite[] _sites;
        readonly TokenBatch _clean;
        readonly ForwardPass _cleanPass;
        readonly Task<ForwardPass>? _patchForward;
        readonly Baseline _baseline;
        readonly SiteMeans? _cleanMeans;
        readonly PositionMeans? _meanBaseline;
        readonly int _igRowsPerPass;
        /// <summary>Every forward keeps only its layers' inputs; the backward recomputes each layer (<see cref="AttributionOptions.CheckpointLayers"/>).</summary>
        readonly bool _checkpoint;
        /// <summary><see cref="AttributionOptions.ComputeEveryRow"/>.</summary>
        readonly bool _computeEveryRow;
        /// <summary>Each clean row's position from the end, the score row it adds into; padding rows go to the spare last row.</summary>
        readonly int[] _scoreRowOf;

        public BatchContext(Llama model, List<PromptPair> pairs, Metric metric, Baseline baseline, SiteMeans? cleanMeans, PositionMeans? meanBaseline,
            NodeSite[] sites, int positions, bool concurrentPatch, int igRowsPerPass, bool pairForwards, bool checkpoint, bool computeEveryRow,
            bool gradientTimesDelta)
        {
            _model = model; _pairs = pairs; _metric = metric; _sites = sites; _baseline = baseline; _cleanMeans = cleanMeans;
            _meanBaseline = meanBaseline; _igRowsPerPass = igRowsPerPass; _checkpoint = checkpoint; _computeEveryRow = computeEveryRow;
            _clean = new TokenBatch(pairs.Select(p => p.CleanIds).ToList());
            _scoreRowOf = new int[_clean.Rows];
            Array.Fill(_scoreRowOf, positions);
            for (int b = 0; b < _clean.Size; b++)
                for (int p = 0; p < _clean.Lengths[b]; p++) _scoreRowOf[_clean.RowFromEnd(b, p)] = p;
            if (baseline == Baseline.Patch && pairForwards && !checkpoint && PairedForward.Applies(model, _clean.Rows))
            {
                // One forward over the clean and patch prompts together: each weight is read once for both. Not when
                // checkpointed: the paired forward keeps every layer (the memory plan counts it only unchecked).
                // A sparse seed (MetricGradient) never reads the logits: the classifier product is skipped.
                bool sparseSeed = pairs.All(p => metric.ConstantGradient(p) is { Length: <= SparseSeedTerms });
                // AtP and RelP read the top layer only through their scores and backward: its Q, W_o and MLP on the last
                // rows only (PairedForward.TopLayerRows). IG reads every row's values (its path endpoints).
                var (cleanPass, patchPass) = PairedForward.Run(model, _clean, new TokenBatch(pairs.Select(p => p.PatchIds!).ToList()), sites,
                    logits: !sparseSeed, lastRowsAtTop: gradientTimesDelta && !computeEveryRow);
                _cleanPass = cleanPass;
                _patchForward = Task.FromResult(patchPass);
                return;
            }
            if (baseline == Baseline.Patch)
            {
                var patch = new TokenBatch(pairs.Select(p => p.PatchIds!).ToList());
                // The patch forward is independent of the clean forward and of its backward: when asked (the CPU
                // backend, on a batch not already split in halves across threads) it runs on a second thread meanwhile.
                _patchForward = concurrentPatch
                    ? Task.Run(() => model.Forward(patch, LogitRows.None, checkpoint: checkpoint))
                    : Task.FromResult(model.Forward(patch, LogitRows.None, checkpoint: checkpoint));
            }
            try { _cleanPass = model.Forward(_clean, LogitRows.Last, checkpoint: checkpoint); }
            catch
            {
                if (_patchForward is not null)
                {
                    try { _patchForward.Wait(); } catch (AggregateException) { }
                    if (_patchForward.IsCompletedSuccessfully) _patchForward.Result.Dispose();
                }
                throw;
            }
        }

        /// <summary>The patch run's forward, waiting for it if it still runs on its thread.</summary>
        ForwardPass PatchPass => _patchForward!.GetAwaiter().GetResult();

        LlamaConfig Config => _model.Config;
        /// <summary>Where layer <paramref name="l"/>'s site values, gradients and score sums live (one backend unless the model is split).</summary>
        IBackend Be(int l) => _model.LayerBackend(l);

        /// <summary>
        /// AtP and RelP: one backward from the clean run gives the gradient at every site; each is added into the scores
        /// where the backward produces it (no copy of any gradient, no delta tensor).
        /// </summary>
        public void GradientTimesDelta(BackwardRules rules, ScoreSums sums)
        {
            using var seed = MetricGradient(_cleanPass, replicas: 1);
            _model.Backward(_cleanPass, seed.Gradient, rules, _sites,
                (s, l, g) => sums.Accumulate(s, l, _cleanPass.Site(s, l), BaselineOf(s, l), g, 1f, _scoreRowOf),
                rows: _computeEveryRow ? null : ScoredRows());
        }

        /// <summary>
        /// The rows where a score can be non-zero, the only ones the backward needs (<see cref="BackwardRows"/>): each
        /// prompt's real tokens, and against a patch baseline only from the first token where the patch prompt differs
        /// (before it both runs' values are the same bit for bit, so the delta is 0). Null when that is every row.
        /// </summary>
        BackwardRows? ScoredRows()
        {
            var first = _baseline == Baseline.Patch
                ? BackwardRows.FirstDifferences(_pairs.Select(p => p.CleanIds).ToList(), _pairs.Select(p => p.PatchIds!).ToList())
                : new int[_pairs.Count];
            // Unequal lengths pair rows of different positions: no prefix is shared then.
            for (int b = 0; b < _pairs.Count; b++)
                if (_baseline == Baseline.Patch && _pairs[b].PatchIds!.Length != _pairs[b].CleanIds.Length) first[b] = 0;
            return BackwardRows.From(_clean, first);
        }

        /// <summary>
        /// Feature-circuits IG: for each site and layer, the site's value is set to a_c + α(a_p − a_c), α = k/N for k = 0..N−1;
        /// the left-Riemann mean gradient times (a_p − a_c) is the score. The N path points run as replicas of the batch,
        /// as many per pass as <see cref="AttributionOptions.IgRowsPerPass"/> allows.
        /// </summary>
        public void IntegratedGradients(int steps, ScoreSums sums, Action tick)
        {
            int rows = _clean.Rows, perPass = PathPointsPerPass(steps);
            var replicated = Replicated(perPass);
            foreach (var s in _sites)
                for (int l = 0; l < Config.Layers; l++)
                {
                    var (aC, aP) = HostEndpoints(s, l);
                    int w = s.Width(Config);
                    using var gradientSum = ZeroRows(w, l);
                    var offset = new float[perPass * rows * w];   // one host buffer for every pass of this site and layer
                    foreach (var (first, count) in PathChunks(steps))
                    {
                        // Every pass has perPass points (memory and shapes the same whatever the step count); the
                        // points past the path repeat its last one with a zero metric gradient, so they add exactly 0.
                        for (int j = 0; j < perPass; j++)
                        {
                            float alpha = (float)(first + Math.Min(j, count - 1)) / steps;
                            for (int i = 0; i < rows * w; i++) offset[j * rows * w + i] = aC[i] + alpha * (aP[i] - aC[i]);
                        }
                        using var plan = new InterventionPlan();
                        plan.Set(s, l, Be(l).Allocate(perPass * rows, w), Be(l).Upload(offset, perPass * rows, w));
                        using var pass = _model.Forward(replicated, LogitRows.Last, plan, _checkpoint);
                        using var seed = MetricGradient(pass, perPass, count);
                        using var grads = _model.Backward(pass, seed.Gradient, BackwardRules.Exact, [s], plan, lowestLayer: l);
                        AddReplicas(Be(l), grads.Get(s, l), perPass, gradientSum);
                    }
                    sums.Accumulate(s, l, _cleanPass.Site(s, l), BaselineOf(s, l), gradientSum, 1f / steps, _scoreRowOf);
                    tick();
                }
        }

        /// <summary>EAP-IG: embeddings interpolated from patch to clean, x_p + α(x_c − x_p), α = k/N, k = 0..N−1; all sites at once.</summary>
        public void InputIntegratedGradients(int steps, ScoreSums sums)
        {
            int rows = _clean.Rows, d = Config.Dim;
            var xC = Host(_cleanPass.Embedded);
            var xP = Host(PatchPass.Embedded);
            var gradientSums = new Dictionary<(NodeSite, int), Tensor>();
            try
            {
                foreach (var s in _sites)
                    for (int l = 0; l < Config.Layers; l++) gradientSums[(s, l)] = ZeroRows(s.Width(Config), l);
                int perPass = PathPointsPerPass(steps);
                var replicated = Replicated(perPass);
                var offset = new float[perPass * rows * d];
                foreach (var (first, count) in PathChunks(steps))
                {
                    // As in IntegratedGradients: full passes, the points past the path with a zero metric gradient.
                    for (int j = 0; j < perPass; j++)
                    {
                        float alpha = (float)(first + Math.Min(j, count - 1)) / steps;
                        for (int i = 0; i < rows * d; i++) offset[j * rows * d + i] = xP[i] + alpha * (xC[i] - xP[i]);
                    }
                    using var plan = new InterventionPlan();
                    plan.SetEmbedding(_model.Backend.Allocate(perPass * rows, d), _model.Backend.Upload(offset, perPass * rows, d));
                    using var pass = _model.Forward(replicated, LogitRows.Last, plan, _checkpoint);
                    using var seed = MetricGradient(pass, perPass, count);
                    using var grads = _model.Backward(pass, seed.Gradient, BackwardRules.Exact, _sites);
                    foreach (var s in _sites)
                        for (int l = 0; l < Config.Layers; l++) AddReplicas(Be(l), grads.Get(s, l), perPass, gradientSums[(s, l)]);
                }
                foreach (var s in _sites)
                    for (int l = 0; l < Config.Layers; l++)
                        sums.Accumulate(s, l, _cleanPass.Site(s, l), BaselineOf(s, l), gradientSums[(s, l)], 1f / steps, _scoreRowOf);
            }
            finally
            {
                foreach (var t in gradientSums.Values) t.Dispose();
            }
        }

        /// <summary>
        /// Path points per pass: as many as <see cref="AttributionOptions.IgRowsPerPass"/> rows allow (at least one), evened
        /// out over the passes the path needs, so the last pass is not a second shape (fewer than one point per pass is
        /// padding).
        /// </summary>
        int PathPointsPerPass(int steps)
        {
            int most = Math.Clamp(_igRowsPerPass / _clean.Rows, 1, steps);
            int passes = (steps + most - 1) / most;
            return (steps + passes - 1) / passes;
        }

        /// <summary>The path points 0..steps−1 in runs of <see cref="PathPointsPerPass"/> (the last possibly shorter).</summary>
        IEnumerable<(int First, int Count)> PathChunks(int steps)
        {
            int perPass = PathPointsPerPass(steps);
            for (int first = 0; first < steps; first += perPass) yield return (first, Math.Min(perPass, steps - first));
        }

        /// <summary><paramref name="count"/> copies of the batch's clean prompts, back to back.</summary>
        TokenBatch Replicated(int count) =>
            new(Enumerable.Range(0, count).SelectMany(_ => _pairs.Select(p => p.CleanIds)).ToList());

        Tensor ZeroRows(int w, int layer)
        {
            var t = Be(layer).Allocate(_clean.Rows, w);
            Be(layer).Fill(t, 0f);
            return t;
        }

        /// <summary>Adds the <paramref name="count"/> back-to-back copies of the batch in <paramref name="g"/> into <paramref name="sum"/>.</summary>
        void AddReplicas(IBackend be, Tensor g, int count, Tensor sum)
        {
            int rows = _clean.Rows;
            be.ScatterAddRows(g, Enumerable.Range(0, rows * count).Select(r => r % rows).ToArray(), sum);
        }

        /// <summary>
        /// ∂(Σ metric)/∂logits for a pass over <paramref name="replicas"/> copies of the batch; copies from
        /// <paramref name="realReplicas"/> on are IG padding and get a zero gradient. A metric linear in the
        /// logits with at most two non-zeros per row (logit difference, answer logit) seeds the backward sparsely: nothing
        /// is downloaded and the output layer's backward reads the answers' classifier rows. Two terms sum to the same bits
        /// in any order, so this equals the dense product exactly; more terms (top-k logits, k &gt; 2) and metrics that read
        /// the logits take the dense path: logits to the host, the gradient back as [rows, vocab].
        /// </summary>
        Seed MetricGradient(ForwardPass pass, int replicas, int realReplicas = int.MaxValue)
        {
            var perExample = _pairs.Select(_metric.ConstantGradient).ToArray();
            if (perExample.All(e => e is not null && e.Length <= SparseSeedTerms))
            {
                int n = replicas * _pairs.Count, perRow = Math.Max(1, perExample.Max(e => e!.Length));
                var tokens = new int[n * perRow];
                var weights = new float[n * perRow];
                Array.Fill(tokens, -1);   // no term: the padding replicas' rows and a row's unused slots
                for (int r = 0; r < Math.Min(replicas, realReplicas); r++)
                    for (int b = 0; b < _pairs.Count; b++)
                    {
                        int at = (r * _pairs.Count + b) * perRow;
                        foreach (var (token, weight) in perExample[b]!) { tokens[at] = token; weights[at++] = weight; }
                    }
                return new Seed(LogitGradient.Sparse(tokens, weights, perRow), null);
            }
            int v = Config.VocabSize;
            var logits = pass.HostLogits();
            var g = new float[logits.Length];
            for (int r = 0; r < Math.Min(replicas, realReplicas); r++)
                for (int b = 0; b < _pairs.Count; b++)
                {
                    int row = r * _pairs.Count + b;
                    _metric.Gradient(logits.AsSpan(row * v, v), _pairs[b], g.AsSpan(row * v, v));
                }
            var dense = _model.HeadBackend.Upload(g, logits.Length / v, v);
            return new Seed(LogitGradient.FromDense(dense), dense);
        }

        /// <summary>Non-zeros per row up to which the metric gradient goes sparse (see <see cref="MetricGradient"/>).</summary>
        const int SparseSeedTerms = 2;

        /// <summary>The backward's seed and the dense tensor it owns, if any.</summary>
        sealed class Seed(LogitGradient gradient, Tensor? dense) : IDisposable
        {
            public LogitGradient Gradient { get; } = gradient;
            public void Dispose() => dense?.Dispose();
        }

        /// <summary>Where the score op reads a_base: the patch run's site, nothing (zero) or the task's per-position mean.</summary>
        ScoreBaseline BaselineOf(NodeSite s, int l) => _baseline switch
        {
            Baseline.Patch => ScoreBaseline.PerRow(PatchPass.Site(s, l)),
            Baseline.Zero => ScoreBaseline.Zero,
            Baseline.Mean => ScoreBaseline.PerPosition(_meanBaseline!.Get(s, l)),
            _ => throw new ArgumentOutOfRangeException(),
        };

        (float[] Clean, float[] Baseline) HostEndpoints(NodeSite s, int l)
        {
            var aC = _cleanPass.HostSite(s, l);
            float[] aP = _baseline switch
            {
                Baseline.Patch => PatchPass.HostSite(s, l),
                Baseline.Zero => new float[aC.Length],
                Baseline.Mean => MeanRows(s, l),
                _ => throw new ArgumentOutOfRangeException(),
            };
            return (aC, aP);
        }

        /// <summary>The task's clean mean at each row's position from the end, [rows, width] (padding rows 0).</summary>
        float[] MeanRows(NodeSite s, int l)
        {
            int w = s.Width(Config);
            var means = _cleanMeans!.Get(s, l);
            var rows = new float[_clean.Rows * w];
            for (int b = 0; b < _clean.Size; b++)
                for (int p = 0; p < _clean.Lengths[b]; p++)
                    Array.Copy(means, p * w, rows, _clean.RowFromEnd(b, p) * w, w);
            return rows;
        }

        float[] Host(Tensor t) { var h = new float[t.Length]; _model.Backend.Download(t, h); return h; }   // the embeddings (first device)

        public void Dispose()
        {
            _cleanPass.Dispose();
            if (_patchForward is not null)   // wait for it: its tensors must not outlive the batch
            {
                try { _patchForward.Wait(); } catch (AggregateException) { }   // a failure surfaced where the pass was needed
                if (_patchForward.IsCompletedSuccessfully) _patchForward.Result.Dispose();
            }
        }
    }
}
