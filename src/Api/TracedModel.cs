using NeuronTrace.Formats;
using NeuronTrace.Formats.Tokenizers;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Runtime.Cuda;
using NeuronTrace.Tracing.Circuits;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Steering;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace;

/// <summary>
/// A model opened for circuit tracing: the common path of the library in one type, as the CLI runs it.
/// <code>
/// using var model = TracedModel.Open();                       // the bundled stories260K on the CPU
/// var (train, eval) = TracedModel.Split(model.LoadTask("pronoun_gender"));
/// var top = model.Attribute(train, AttributionMethod.RelP, [NodeSite.MlpAct]).Top(NodeSite.MlpAct, 20);
/// var circuit = model.Evaluate(eval, top.Select(t => t.Node).ToList());
/// </code>
/// Long calls take an <see cref="IProgress{T}"/> and a <see cref="CancellationToken"/>; cancellation is observed at
/// each progress step (a batch, or an integrated-gradients step of one site and layer) and throws
/// <see cref="OperationCanceledException"/>.
/// </summary>
public sealed partial class TracedModel : IDisposable
{
    readonly ModelDescription _model;
    /// <summary>The one backend the model runs on, for the memory plan (null: a model split over devices, which its caller planned).</summary>
    readonly IBackend? _backend;
    Llama? _llama;

    /// <summary>A described model whose weights are read onto <paramref name="backend"/> at the first call that needs them.</summary>
    TracedModel(ModelDescription model, IBackend backend) { _model = model; _backend = backend; }

    TracedModel(LoadedModel loaded, Llama llama, IBackend? backend) { _model = loaded.Description; _llama = llama; _backend = backend; }

    /// <summary>Opens a model file or folder (llama2.c <c>.bin</c>, GGUF, Hugging Face folder or safetensors), or a
    /// Hugging Face id, on a device. Only its header and tokenizer are read here: the weights are read by the first call
    /// that needs them, after <see cref="Attribute"/> and <see cref="Trace"/> have checked that the run fits the device.</summary>
    /// <param name="model">A path, or a hub id <c>ORG/NAME[@REVISION]</c> found in the local hub cache ($HF_HUB_CACHE, else
    /// $HF_HOME/hub, else ~/.cache/huggingface/hub; nothing is downloaded); null opens the bundled stories260K.</param>
    /// <param name="device"><c>cpu</c> (the managed SIMD backend) or <c>cuda</c>.</param>
    /// <exception cref="ModelFormatException">The file is missing, truncated or not a model this loader reads (a tensor
    /// whose values cannot be read is reported by the first call that reads the weights).</exception>
    /// <exception cref="ArgumentException">The device is unknown or cannot be opened (the message says why).</exception>
    public static TracedModel Open(string? model = null, string device = "cpu")
    {
        var backend = OpenDevice(device);
        return new TracedModel(ModelLoader.Describe(model), backend);
    }

    /// <summary>A model the caller loaded and a backend it opened (the CLI, which names devices and reports errors its own way).</summary>
    internal static TracedModel Create(LoadedModel loaded, IBackend backend) => new(loaded, new Llama(loaded.Weights, backend), backend);

    /// <summary>A model the caller loaded and placed itself (the CLI's layer split over several GPUs); the facade owns and disposes it.</summary>
    internal static TracedModel Create(LoadedModel loaded, Llama llama) => new(loaded, llama, llama.Placement.IsSplit ? null : llama.Backend);

    /// <summary>The backend for a device name: <c>cpu</c> (fp32 products unless $NEURONTRACE_CPU_MATH says bf16), or <c>cuda</c> (fp32 products unless $NEURONTRACE_CUDA_MATH says tf32 or bf16).</summary>
    /// <exception cref="ArgumentException">An unknown device, a CUDA device that cannot be opened, or a bad math variable (the message says why).</exception>
    internal static IBackend OpenDevice(string device) => device switch
    {
        "cpu" => CpuBackend.For(CpuMaths.FromEnvironment()),
        "cuda" => CudaBackend.TryCreate(out string whyNot, GemmPrecisions.FromEnvironment())
            ?? throw new ArgumentException($"device cuda: {whyNot}; the CPU backend (cpu) is the default"),
        _ => throw new ArgumentException($"unknown device {ErrorText.Quote(device)} (cpu or cuda)"),
    };

    /// <summary>The model on its backend: forward, backward, sites, for what the facade does not cover. The first use reads the weights.</summary>
    internal Llama Llama => _llama ??= new Llama(ModelLoader.Load(_model).Weights, _backend!);

    /// <summary>The model's configuration.</summary>
    public LlamaConfig Config => _model.Config;

    /// <summary>The file the model was read from.</summary>
    public string Path => _model.Path;

    /// <summary>The model's file format (llama2.c, gguf, hf).</summary>
    public string Format => _model.Format;

    /// <summary>The model's tokenizer.</summary>
    /// <exception cref="InvalidOperationException">The model has no tokenizer beside it.</exception>
    public ITextTokenizer Tokenizer => _model.Tokenizer ?? throw new InvalidOperationException($"{Path}: the model has no tokenizer");

    /// <summary>
    /// Loads a task in the feature-circuits JSON-lines format, or a bundled task by name (<c>pronoun_gender</c>,
    /// <c>possessive_gender</c>, <c>gender_name</c>, <c>name_copy</c>), tokenized as the CLI tokenizes it: plain prefixes
    /// with BOS, chat <c>messages</c> with the model folder's chat template where it has one (else Llama 3.1's), no prompt
    /// longer than the model's context.
    /// </summary>
    /// <param name="fileOrName">A path or a bundled task's name.</param>
    /// <param name="mostCommonLength">Keep only the examples of the most common prompt length, as <c>trace</c> does, so
    /// every position from the end is the same token slot in every prompt.</param>
    public PromptTask LoadTask(string fileOrName, bool mostCommonLength = true)
    {
        string path = File.Exists(fileOrName) || fileOrName.Contains('/') || fileOrName.EndsWith(".jsonl", StringComparison.Ordinal)
            ? fileOrName
            : BundledFiles.Find("data", "tasks", fileOrName + ".jsonl");
        var task = PromptTask.Load(path, Tokenizer, encoder: PromptEncoder.ForModel(_model), maxTokens: Config.MaxSeqLen);
        return mostCommonLength ? task.OfMostCommonLength() : task;
    }

    /// <summary>A task from prompt pairs in memory (each answer one token after its prefix; clean and patch prompts of one length).</summary>
    /// <param name="name">The task's name in reports.</param>
    /// <param name="pairs">Clean prefix and answer, and the counterfactual (patch) prefix and answer.</param>
    public PromptTask CreateTask(string name, IEnumerable<(string CleanPrefix, string CleanAnswer, string PatchPrefix, string PatchAnswer)> pairs) =>
        TaskOfLines(name, pairs.Select(p => new Dictionary<string, object>
        {
            ["clean_prefix"] = p.CleanPrefix, ["clean_answer"] = p.CleanAnswer, ["patch_prefix"] = p.PatchPrefix, ["patch_answer"] = p.PatchAnswer,
        }));

    /// <summary>
    /// A task of chat prompts in memory, as a task file's <c>messages</c> / <c>patch_messages</c> lines: each conversation
    /// is rendered with the model's chat template (<see cref="LoadTask"/>) and its answer, one token, continues the open
    /// assistant turn.
    /// </summary>
    /// <param name="name">The task's name in reports.</param>
    /// <param name="pairs">The clean conversation (role and content of each message: system, user, assistant) and its
    /// answer, and the counterfactual (patch) conversation and answer; both rendered to the same length.</param>
    public PromptTask CreateChatTask(string name, IEnumerable<(IReadOnlyList<(string Role, string Content)> Clean, string CleanAnswer,
        IReadOnlyList<(string Role, string Content)> Patch, string PatchAnswer)> pairs)
    {
        static List<Dictionary<string, string>> Messages(IReadOnlyList<(string Role, string Content)> m) =>
            m.Select(x => new Dictionary<string, string> { ["role"] = x.Role, ["content"] = x.Content }).ToList();
        return TaskOfLines(name, pairs.Select(p => new Dictionary<string, object>
        {
            ["messages"] = Messages(p.Clean), ["clean_answer"] = p.CleanAnswer, ["patch_messages"] = Messages(p.Patch), ["patch_answer"] = p.PatchAnswer,
        }));
    }

    /// <summary>One tokenization path for files and memory: the lines go through the task reader as JSON lines.</summary>
    PromptTask TaskOfLines(string name, IEnumerable<Dictionary<string, object>> lines)
    {
        string text = string.Join('\n', lines.Select(l => System.Text.Json.JsonSerializer.Serialize(l)));
        return new PromptTask(name, PromptTask.Read(new StringReader(text), name, Tokenizer, encoder: PromptEncoder.ForModel(_model), maxTokens: Config.MaxSeqLen).Pairs);
    }

    /// <summary>The split <c>trace</c> uses: attribute on the first examples (default half), evaluate on the rest.</summary>
    public static (PromptTask Train, PromptTask Eval) Split(PromptTask task, int? trainExamples = null) => TraceJob.Split(task, trainExamples);

    /// <summary>The example-mean attribution score of every node of <paramref name="sites"/> (default: all four sites).</summary>
    /// <param name="task">The prompt pairs to attribute.</param>
    /// <param name="method">AtP, IG, IG over inputs, or RelP.</param>
    /// <param name="sites">The node sites to score.</param>
    /// <param name="options">Further options (metric, baseline, IG steps, batch, RelP rules); its method and sites are replaced by the arguments.</param>
    /// <param name="progress">Progress per batch (or per IG step).</param>
    /// <param name="cancellation">Observed at every progress step.</param>
    /// <exception cref="InsufficientMemoryException">The memory plan finds no batch that fits the device, even with activation
    /// checkpointing (the message says how much the run needs, how much there is and what to change); raised before any
    /// weight is read. A batch that does not fit is lowered (or the layers checkpointed) instead: scores do not depend on it.</exception>
    public NodeScores Attribute(PromptTask task, AttributionMethod method = AttributionMethod.RelP, IReadOnlyList<NodeSite>? sites = null,
        AttributionOptions? options = null, IProgress<WorkProgress>? progress = null, CancellationToken cancellation = default)
    {
        var o = Planned(task, (options ?? new AttributionOptions()) with { Method = method, Sites = sites ?? (options?.Sites ?? AllSites) });
        return Attributor.Score(Llama, task, o, Observed(progress, cancellation));
    }

    /// <summary><paramref name="o"/> with the batch and checkpointing the memory plan gives its run of <paramref name="task"/>.</summary>
    AttributionOptions Planned(PromptTask task, AttributionOptions o)
    {
        bool patch = (o.Baseline ?? (task.Pairs.All(p => p.PatchIds is not null) ? Baseline.Patch : Baseline.Zero)) == Baseline.Patch;
        var fit = Fit(task, o.BatchSize, o.Sites, [o.Method], patch, o.IgSteps);
        return o with { BatchSize = fit.Batch, CheckpointLayers = o.CheckpointLayers || fit.Checkpoint };
    }

    /// <summary>
    /// The <paramref name="k"/> nodes of <paramref name="site"/> with the largest |example-mean score|, largest first: the
    /// same nodes, scores and order as <c>Attribute(task, method, [site], options).Top(site, k)</c> (ties by layer, then
    /// position, then unit), selected where the scores were summed. On a GPU the score slab never leaves the device:
    /// only the k nodes cross to the host.
    /// </summary>
    /// <param name="task">The prompt pairs to attribute.</param>
    /// <param name="site">The node site to score and rank.</param>
    /// <param name="k">How many nodes, at least 0 (more than the site has gives them all).</param>
    /// <param name="method">AtP, IG, IG over inputs, or RelP.</param>
    /// <param name="options">As for <see cref="Attribute"/>; its method and sites are replaced by the arguments.</param>
    /// <param name="progress">Progress per batch (or per IG step).</param>
    /// <param name="cancellation">Observed at every progress step.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="k"/> is negative.</exception>
    /// <exception cref="InsufficientMemoryException">As for <see cref="Attribute"/>.</exception>
    public IReadOnlyList<(NodeId Node, float Score)> AttributeTop(PromptTask task, NodeSite site, int k, AttributionMethod method = AttributionMethod.RelP,
        AttributionOptions? options = null, IProgress<WorkProgress>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(k);
        var o = Planned(task, (options ?? new AttributionOptions()) with { Method = method, Sites = [site] });
        using var scores = Attributor.ScoreOnDevice(Llama, task, o, Observed(progress, cancellation));
        return scores.TopK(site, k);
    }

    /// <summary>
    /// The memory plan of an attribution of <paramref name="task"/> on this model's device, before the weights are read
    /// (<see cref="MemoryPlan.FitTask"/>, the plan <c>trace</c> and <c>attribute</c> run): the CPU's available memory, or
    /// the GPU's free memory while the weights are not yet on it (once they are, its free memory no longer says what the
    /// weights took, and the first call's plan stands). A model split over devices is planned by its caller.
    /// </summary>
    AttributionFit Fit(PromptTask task, int batch, IReadOnlyCollection<NodeSite> sites, IReadOnlyList<AttributionMethod> methods, bool patchBaseline, int igSteps)
    {
        bool cpu = _backend is not CudaBackend;
        long? available = _backend switch
        {
            null => null,
            CudaBackend gpu => _llama is null ? gpu.Device.FreeBytes : null,
            _ => MemoryPlan.AvailableCpuBytes(),
        };
        var fit = MemoryPlan.FitTask(Config, batch, pinned: false, task.Count, task.Pairs.Count == 0 ? 0 : task.Pairs.Max(p => p.CleanIds.Length),
            sites, methods, patchBaseline, cpu, available, cpu ? "available" : "free on the GPU", igSteps, hostAvailable: cpu ? null : MemoryPlan.AvailableCpuBytes());
        return fit.Refusal is { } line ? throw new InsufficientMemoryException(line) : fit;
    }

    /// <summary>
    /// Faithfulness and completeness of a set of nodes of one site, by mean ablation to the means <c>trace</c> uses
    /// (the evaluation prompts' patch prompts), with the metric <c>trace</c> evaluates.
    /// </summary>
    /// <param name="evalTask">The evaluation examples (see <see cref="Split"/>).</param>
    /// <param name="nodes">The circuit: nodes of one site.</param>
    /// <param name="masksPerForward">How many ablation masks share one batched forward.</param>
    /// <exception cref="ArgumentException">The nodes are empty of a site, mix sites, or lie outside the model or the prompts.</exception>
    public CircuitEvaluation Evaluate(PromptTask evalTask, IReadOnlyCollection<NodeId> nodes, int masksPerForward = 8)
    {
        if (nodes.Count == 0) throw new ArgumentException("an empty circuit: give at least one node (k = 0 is the empty circuit of every sweep)");
        var site = nodes.First().Site;
        if (nodes.Any(n => n.Site != site)) throw new ArgumentException("a circuit's nodes must be of one site (evaluate each site's circuit on its own)");
        int positions = evalTask.Pairs.Max(p => p.CleanIds.Length), width = site.Width(Config);
        var grid = new NodeGrid(Config.Layers, positions, width);
        var keep = new bool[grid.Count];
        foreach (var n in nodes)
        {
            if (n.Layer < 0 || n.Layer >= Config.Layers || n.Position < 0 || n.Position >= positions || n.Index < 0 || n.Index >= width)
                throw new ArgumentException($"node {n} is outside the model ({Config.Layers} layers, width {width}) or the prompts ({positions} positions)");
            keep[grid.Flat(n.Layer, n.Position, n.Index)] = true;
        }
        var means = TraceJob.AblationMeans(Llama, evalTask, [site]);
        var ablation = new SiteMeanAblation(Llama, evalTask, site, means, Metric.EvaluationDefault(evalTask), positions) { MasksPerForward = masksPerForward };
        var faithfulness = new Faithfulness(ablation);
        var score = faithfulness.Score([keep])[0];
        var (full, empty) = faithfulness.Ends!.Value;
        return new CircuitEvaluation(nodes.Count, score.Faithfulness, score.Completeness, full, empty);
    }

    /// <summary>The whole <c>trace</c> pipeline: attribution, top-k sweeps with the random control, circuits at the target faithfulness.</summary>
    /// <param name="task">The task (split into attribution and evaluation halves as <paramref name="options"/> says).</param>
    /// <param name="options">Methods, sites, split, k points, seed, target (defaults: RelP, all four sites).</param>
    /// <param name="progress">Progress per stage.</param>
    /// <param name="cancellation">Observed at every progress step.</param>
    /// <exception cref="InsufficientMemoryException">The memory plan finds no attribution batch that fits the device (as <see cref="Attribute"/>).</exception>
    public TraceResult Trace(PromptTask task, TraceOptions? options = null, IProgress<WorkProgress>? progress = null, CancellationToken cancellation = default)
    {
        var o = options ?? new TraceOptions();
        var fit = Fit(task, o.AttributionBatchSize, o.Sites, o.Methods, patchBaseline: true, o.IgSteps);
        o = o with { AttributionBatchSize = fit.Batch, CheckpointLayers = o.CheckpointLayers || fit.Checkpoint };
        return TraceJob.Run(Llama, task, o, Observed(progress, cancellation));
    }

    /// <summary>
    /// Runs a prompt with and without neuron edits of <c>mlp_act</c> (down_proj inputs), as the <c>steer</c> command does:
    /// the top next tokens of each, then a greedy continuation of each (edits re-applied at the same prompt positions every
    /// step; generated positions are never edited).
    /// </summary>
    /// <param name="prompt">The prompt text; it is tokenized with BOS prepended.</param>
    /// <param name="edits">The edits (scale, set, or copy from <paramref name="source"/>), e.g. from
    /// <see cref="NeuronEdit.Parse"/> of <c>L3/N17=x2</c>; several edits of one value compose in order.</param>
    /// <param name="topTokens">Next-token candidates to return before and after, at least 1.</param>
    /// <param name="continueSteps">Tokens of greedy continuation, 0 or more (0: none).</param>
    /// <param name="source">The source prompt of <see cref="EditMode.FromSource"/> edits (same position from the end); null when there are none.</param>
    /// <exception cref="ArgumentException">An edit lies outside the model or the prompt, a <see cref="EditMode.FromSource"/> edit has no
    /// <paramref name="source"/>, the prompt is empty, or <paramref name="topTokens"/>/<paramref name="continueSteps"/> is out of range.</exception>
    /// <exception cref="InvalidOperationException">The model has no tokenizer.</exception>
    public SteeringResult Steer(string prompt, IReadOnlyList<NeuronEdit> edits, int topTokens = 10, int continueSteps = 20, string? source = null)
    {
        var ids = Tokenizer.Encode(prompt, addBos: true);
        var sourceIds = source is null ? null : Tokenizer.Encode(source, addBos: true);
        return Steering.Run(Llama, ids, edits, topTokens, continueSteps, sourceIds, Tokenizer);
    }

    /// <summary>
    /// The interchange flip rate of a circuit, as <c>steer --run</c> measures it: for each paired line of the task, the
    /// circuit's <c>mlp_act</c> nodes take their values from the patch prompt in a run of the clean prompt, and the line
    /// flips when logit(patch answer) &gt; logit(clean answer); beside the rate of the unedited run and of as many
    /// random <c>mlp_act</c> nodes (seeded). Nodes of other sites are ignored.
    /// </summary>
    /// <param name="task">Paired prompts (e.g. the evaluation half of <see cref="Split"/>).</param>
    /// <param name="circuit">The circuit's nodes (positions from the end).</param>
    /// <param name="randomSeed">Seed of the random-node control (one seed draws the same nodes every time).</param>
    /// <exception cref="ArgumentException">The task has no paired line, or a node lies outside the model.</exception>
    public FlipRates FlipRate(PromptTask task, IEnumerable<NodeId> circuit, int randomSeed = 0) => Steering.FlipRate(Llama, task, circuit, randomSeed);

    /// <summary>Releases the model's device memory.</summary>
    public void Dispose() => _llama?.Dispose();

    static readonly NodeSite[] AllSites = [NodeSite.MlpAct, NodeSite.MlpOut, NodeSite.Attn, NodeSite.Resid];

    static IProgress<WorkProgress>? Observed(IProgress<WorkProgress>? progress, CancellationToken cancellation) =>
        cancellation.CanBeCanceled ? new CancellingProgress(progress, cancellation) : progress;

    sealed class CancellingProgress(IProgress<WorkProgress>? inner, CancellationToken cancellation) : IProgress<WorkProgress>
    {
        public void Report(WorkProgress value)
        {
            cancellation.ThrowIfCancellationRequested();
            inner?.Report(value);
        }
    }
}

/// <summary>A circuit's mean-ablation evaluation.</summary>
/// <param name="Nodes">How many nodes the circuit keeps.</param>
/// <param name="Faithfulness">(m(circuit kept, rest ablated) − m(all ablated)) / (m(model) − m(all ablated)).</param>
/// <param name="Completeness">(m(circuit ablated, rest kept) − m(all ablated)) / (m(model) − m(all ablated)).</param>
/// <param name="ModelMetric">The metric of the unablated model (example mean).</param>
/// <param name="EmptyMetric">The metric with the whole site ablated.</param>
public sealed record CircuitEvaluation(int Nodes, double Faithfulness, double Completeness, double ModelMetric, double EmptyMetric);

/// <summary>Reading scores.</summary>
public static class NodeScoresExtensions
{
    /// <summary>The <paramref name="k"/> nodes of a site with the largest |score|, largest first (the ranking circuits are cut from).</summary>
    public static IReadOnlyList<(NodeId Node, float Score)> Top(this NodeScores scores, NodeSite site, int k)
    {
        var ranking = new NodeRanking(scores, site);
        return ranking.Order.Take(Math.Max(0, k)).Select(f => { var n = ranking.Node(f); return (n, scores[n]); }).ToList();
    }
}
