using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Cli;

/// <summary>Where a command runs.</summary>
/// <summary>An output path with its --force, as every writing command declares them.</summary>
internal sealed record OutputOption(Option<string?> Path, Option<bool> Force);

/// <summary>
/// Options several commands share, with the same names and meaning everywhere, and the typed option builders every
/// command uses: numbers with a documented range and names from a fixed set are checked by the parser (exit 2, one
/// line) before any command starts work, so no command repeats a range check or a string switch.
/// </summary>
internal static class CommonOptions
{
    public static Option<string?> Model() => new("--model", "-m")
    {
        Description = "Model file or folder: a llama2.c .bin (tokenizer beside it), a .gguf, a Hugging Face folder, or a Hugging Face id ORG/NAME[@REVISION] from the local hub cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub; nothing is downloaded). Default: the bundled stories260K.",
    };

    /// <summary>cpu, cuda (GPU 0) or cuda:N, and with <paramref name="layerSplit"/> cuda:N,M,…; checked at parse time.</summary>
    public static Option<string> Device(bool layerSplit = false)
    {
        var o = new Option<string>("--device")
        {
            Description = "Backend: cpu (managed, default), cuda (GPU 0) or cuda:N (GPU N as numbered under CUDA_VISIBLE_DEVICES, 0..63; Slurm's --gpus-per-task sets it per shard)" +
                (layerSplit ? ", or cuda:N,M,… for a model larger than one GPU: its layers split over those GPUs in contiguous ranges balanced by weight size." : "."),
            DefaultValueFactory = _ => "cpu",
        };
        o.Validators.Add(r =>
        {
            string v = r.GetValueOrDefault<string>() ?? "";
            if (v is "cpu" or "cuda") return;
            try { if ((layerSplit ? CudaBackends.Ordinals(v)?.Length : CudaBackends.Ordinal(v)) is not null) return; }
            catch (UsageException e) { r.AddError(e.Message); return; }
            r.AddError($"unknown --device {ErrorText.Quote(v)} (cpu, cuda or cuda:N)");
        });
        return o;
    }

    public static bool IsCpu(string device) => device == "cpu";

    /// <summary>Integrated-gradients steps of <c>attribute</c> and <c>trace</c> (IG memory does not grow with them).</summary>
    public static Option<int> IgSteps() => Int("--steps", "IG steps (alpha = k/N, k = 0..N-1).", 10, 1, 1000);

    public static Option<int> MasksPerForward() => Int("--masks-per-forward", "Circuits evaluated per batched forward.", 8, 1, 256);

    /// <summary>How a sweep's mean-ablated forwards run (issue 18); the shortcuts equal plain up to rounding.</summary>
    public static Option<SweepPath> SweepPathOption() => Choice("--sweep-path",
        "How the sweep's mean-ablated forwards run: shortcuts (default: exact shortcuts - shared clean prefix, keep-k products - equal to plain up to float rounding) or plain (every circuit a full masked forward, the reference).",
        [("shortcuts", SweepPath.Shortcuts), ("plain", SweepPath.Plain)], () => SweepPath.Shortcuts);

    /// <summary>A run's circuit method: one of the attribution method names (default: the run's first method).</summary>
    public static Option<AttributionMethod?> CircuitMethod(string description) =>
        Choice<AttributionMethod?>("--method", description, MethodChoices.Select(c => (c.Name, (AttributionMethod?)c.Value)).ToArray());

    public static readonly (string Name, AttributionMethod Value)[] MethodChoices =
        Enum.GetValues<AttributionMethod>().Select(m => (m.Name(), m)).ToArray();

    public static OutputOption Output(string outDescription, string forceDescription, bool required = false) =>
        new(new Option<string?>("--out", "-o") { Description = outDescription, Required = required },
            new Option<bool>("--force") { Description = forceDescription });

    public static LoadedModel LoadModel(string? path) => ModelLoader.Load(path);

    /// <summary>A model's header and tokenizer, no weights (trace and attribute plan the run first).</summary>
    public static ModelDescription DescribeModel(string? path) => ModelLoader.Describe(path);

    /// <summary>The weights of a model <see cref="DescribeModel"/> described, read once the run's plan fits.</summary>
    public static LoadedModel LoadModel(ModelDescription described) => ModelLoader.Load(described);

    /// <summary>
    /// The model on <paramref name="device"/>; for cuda:N,M,… its layers split over those GPUs (<see cref="LayerPlacement.Balanced"/>),
    /// the split named on stderr.
    /// </summary>
    public static Llama OpenModel(LlamaWeights weights, string device)
    {
        if (CudaBackends.Ordinals(device) is not { Length: > 1 } ordinals) return new Llama(weights, OpenBackend(device));
        var c = weights.Config;
        if (ordinals.Length > c.Layers) throw new UsageException($"--device {device}: {ordinals.Length} GPUs for a model of {c.Layers} layers; each GPU needs a layer");
        var backends = ordinals.Select(CudaBackends.Open).ToArray();
        var placement = LayerPlacement.Balanced(c, backends);
        Console.Error.WriteLine("layers split: " + string.Join(", ", ordinals.Select((n, d) =>
        {
            var (first, end) = placement.LayersOf(d);
            return $"cuda:{n} layers {first}..{end - 1} ({Tracing.Pipeline.MemoryPlan.Gib(placement.ParametersOn(d, c) * 4)} of weights)";
        })));
        return new Llama(weights, placement);
    }

    public static IBackend OpenBackend(string device) => device switch
    {
        "cpu" => OpenCpu(),
        "cuda" => CudaBackends.Open(),
        _ when CudaBackends.Ordinal(device) is int n => CudaBackends.Open(n),
        _ => throw new UsageException($"unknown --device {ErrorText.Quote(device)} (cpu, cuda or cuda:N)"),
    };

    /// <summary>The CPU backend in the math $NEURONTRACE_CPU_MATH asks for (fp32 unless bf16; README "CPU math").</summary>
    static IBackend OpenCpu()
    {
        try { return CpuBackend.For(CpuMaths.FromEnvironment()); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
    }

    /// <summary>
    /// An integer option checked against [<paramref name="min"/>, <paramref name="max"/>] at parse time; the range is
    /// appended to the help text. <paramref name="belowMin"/> replaces the default "must be at least" wording.
    /// </summary>
    public static Option<int> Int(string name, string description, int defaultValue, int min, int max, string? belowMin = null, params string[] aliases)
    {
        var o = new Option<int>(name, aliases) { Description = $"{description} Range {min}..{max}.", DefaultValueFactory = _ => defaultValue };
        o.Validators.Add(r => CheckRange(r, name, r.GetValueOrDefault<int>(), min, max, belowMin));
        return o;
    }

    /// <summary>As <see cref="Int"/>, for an option whose absence means "the command's default".</summary>
    public static Option<int?> OptionalInt(string name, string description, int min, int max)
    {
        var o = new Option<int?>(name) { Description = $"{description} Range {min}..{max}." };
        o.Validators.Add(r => { if (r.GetValueOrDefault<int?>() is { } v) CheckRange(r, name, v, min, max, null); });
        return o;
    }

    static void CheckRange(OptionResult r, string name, long v, long min, long max, string? belowMin)
    {
        if (v < min) r.AddError(belowMin ?? (min == 0 ? $"{name} must not be negative" : $"{name} must be at least {min}"));
        else if (v > max) r.AddError($"{name} {v}: must be at most {max}");
    }

    /// <summary>
    /// An option whose value is one name of <paramref name="choices"/>, parsed here into its typed value; anything else
    /// is a usage error listing the names. Without <paramref name="defaultValue"/> an absent option is <c>default(T)</c>.
    /// </summary>
    public static Option<T> Choice<T>(string name, string description, (string Name, T Value)[] choices, Func<T>? defaultValue = null)
    {
        var o = new Option<T>(name)
        {
            Description = description,
            CustomParser = r =>
            {
                string text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                foreach (var (n, v) in choices)
                    if (n == text.Trim().ToLowerInvariant()) return v;
                r.AddError($"unknown {name} {ErrorText.Quote(text)} ({Names(choices.Select(c => c.Name))})");
                return default!;
            },
        };
        if (defaultValue is not null) o.DefaultValueFactory = _ => defaultValue();
        o.CompletionSources.Add(choices.Select(c => c.Name).ToArray());
        return o;
    }

    /// <summary>A comma-separated list of names of <paramref name="choices"/>, in order, without repeats.</summary>
    public static Option<T[]> ChoiceList<T>(string name, string description, (string Name, T Value)[] choices, string defaultList, string what)
    {
        return new Option<T[]>(name)
        {
            Description = description,
            DefaultValueFactory = r => Parse(r, defaultList),
            CustomParser = r => Parse(r, r.Tokens.Count > 0 ? r.Tokens[^1].Value : ""),
        };

        T[] Parse(ArgumentResult r, string list)
        {
            var parts = list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (parts.Length == 0) { r.AddError($"{name}: no {what} given"); return []; }
            var result = new List<T>();
            foreach (var p in parts)
            {
                int i = Array.FindIndex(choices, c => c.Name == p.ToLowerInvariant());
                if (i < 0) { r.AddError($"{name}: unknown {what} {ErrorText.Quote(p)} (known: {string.Join(", ", choices.Select(c => c.Name))})"); return []; }
                if (!result.Contains(choices[i].Value)) result.Add(choices[i].Value);
            }
            return result.ToArray();
        }
    }

    static string Names(IEnumerable<string> names)
    {
        var l = names.ToList();
        return l.Count == 1 ? l[0] : string.Join(", ", l.Take(l.Count - 1)) + " or " + l[^1];
    }

    /// <summary>A number as the CLI prints it in messages (invariant culture).</summary>
    public static string Show(double v) => v.ToString(CultureInfo.InvariantCulture);
}
