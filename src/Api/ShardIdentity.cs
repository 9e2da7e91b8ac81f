using System.Globalization;
using NeuronTrace.Formats;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Scoring;
using NeuronTrace.Tracing.Sharding;

namespace NeuronTrace;

/// <summary>
/// What a shard manifest records about its run, written by the shard commands and read back by the merge: the identity
/// (command, model and task with their SHA-256, the options that change results), the trace options as text and back,
/// and the merged attribution that sweep shards rank.
/// </summary>
internal static class ShardIdentity
{
    /// <summary>The manifest fields every shard of one run shares (the shard fields are filled in by the shard).</summary>
    /// <param name="command"><c>attribute</c> or <c>trace</c>.</param>
    /// <param name="model">The loaded model (its file is hashed).</param>
    /// <param name="taskPath">The task file (hashed).</param>
    /// <param name="options">Every option that changes the result, as text.</param>
    public static ShardManifest Of(string command, LoadedModel model, string taskPath, SortedDictionary<string, string> options) => new()
    {
        Command = command, ModelPath = Path.GetFullPath(model.Path), ModelSha256 = ShardManifest.Sha256Of(model.Path),
        TaskPath = Path.GetFullPath(taskPath), TaskSha256 = ShardManifest.Sha256Of(taskPath), Options = options,
    };

    /// <summary>The options of a trace that change its results, as a shard manifest records them.</summary>
    /// <param name="o">The trace's options.</param>
    /// <param name="relpAttention">The RelP attention rule's name (<c>gradient</c> or <c>freeze</c>).</param>
    /// <param name="allLengths">Whether every prompt length is kept (not only the most common one).</param>
    /// <param name="specialTokens">Whether special-token text in prompts was parsed as the special tokens (<c>--special-tokens</c>): it changes the task's ids.</param>
    public static SortedDictionary<string, string> TraceOptionsText(TraceOptions o, string relpAttention, bool allLengths, bool specialTokens) => new(StringComparer.Ordinal)
    {
        ["methods"] = string.Join(",", o.Methods.Select(m => m.Name())),
        ["sites"] = string.Join(",", o.Sites.Select(s => s.Name())),
        ["train"] = o.TrainExamples?.ToString(CultureInfo.InvariantCulture) ?? "half",
        ["k_points"] = o.KPoints.ToString(CultureInfo.InvariantCulture),
        ["steps"] = o.IgSteps.ToString(CultureInfo.InvariantCulture),
        ["relp_attention"] = relpAttention,
        ["target"] = o.TargetFaithfulness.ToString("R", CultureInfo.InvariantCulture),
        ["seed"] = o.Seed.ToString(CultureInfo.InvariantCulture),
        ["all_lengths"] = allLengths ? "true" : "false",
        ["sweep_path"] = o.SweepPath.Name(),
        ["special_tokens"] = specialTokens ? "true" : "false",
    };

    /// <summary>The trace options a manifest records (the inverse of <see cref="TraceOptionsText"/>), for the merge.</summary>
    /// <param name="m">A trace shard's manifest.</param>
    /// <param name="masksPerForward">Masks per batched forward (not recorded: it changes only rounding and memory).</param>
    /// <exception cref="FormatException">An option is missing or not in its recorded spelling.</exception>
    public static (TraceOptions Options, bool AllLengths, bool SpecialTokens) TraceOptionsOf(ShardManifest m, int masksPerForward = 8)
    {
        string Get(string key) => m.Options.TryGetValue(key, out var v) ? v : throw new FormatException($"{m.ModelPath}: shard manifest has no trace option {key}");
        // The rule sets trace runs, named by the one spelling summaries and manifests share.
        string relp = Get("relp_attention");
        var o = new TraceOptions
        {
            Methods = MethodNames.ParseList(Get("methods")), Sites = NodeSites.ParseList(Get("sites")),
            TrainExamples = Get("train") == "half" ? null : int.Parse(Get("train"), CultureInfo.InvariantCulture),
            KPoints = int.Parse(Get("k_points"), CultureInfo.InvariantCulture), IgSteps = int.Parse(Get("steps"), CultureInfo.InvariantCulture),
            RelPRules = BackwardRules.TryParseRelPAttention(relp, out var rules) ? rules : throw new FormatException($"{m.ModelPath}: shard manifest option relp_attention {ErrorText.Quote(relp)} is not gradient or freeze"),
            TargetFaithfulness = double.Parse(Get("target"), CultureInfo.InvariantCulture),
            Seed = int.Parse(Get("seed"), CultureInfo.InvariantCulture), MasksPerForward = masksPerForward,
            // Manifests written before sweep_path was recorded swept on the plain path.
            SweepPath = m.Options.TryGetValue("sweep_path", out var sp) && SweepPaths.TryParse(sp, out var path) ? path : SweepPath.Plain,
        };
        // Manifests written before special_tokens was recorded read their prompts without --special-tokens.
        return (o, Get("all_lengths") == "true", m.Options.TryGetValue("special_tokens", out var st) && st == "true");
    }

    /// <summary>The merged attribution of a sharded trace (what <c>merge</c> wrote), checked to be this run's.</summary>
    /// <param name="dir">The merged attribution's folder.</param>
    /// <param name="identity">The run's identity (<see cref="Of"/>): model, task and options must match the merged manifest's.</param>
    /// <returns>Each method's mean scores, and the SHA-256 of the merged sums (which sweep manifests record).</returns>
    /// <exception cref="ArgumentException">The folder is not a merged trace attribution, or is another run's.</exception>
    public static (IReadOnlyDictionary<AttributionMethod, NodeScores> ByMethod, string Sha256) ReadMergedScores(string dir, ShardManifest identity)
    {
        var m = ShardManifest.Read(dir);
        if (m.Kind != ShardManifest.AttributionKind || m.Command != "trace" || !m.Complete || m.ShardCount != 1)
            throw new ArgumentException($"--scores {dir}: not a merged trace attribution (run `neurontrace merge` on the attribution shards first)");
        var probe = new ShardManifest
        {
            Kind = m.Kind, Command = m.Command, ModelSha256 = identity.ModelSha256, TaskSha256 = identity.TaskSha256, Options = identity.Options,
            ShardCount = m.ShardCount, Total = m.Total, Methods = m.Methods, Sites = m.Sites, Positions = m.Positions,
        };
        if (probe.Disagreement(m) is { } why) throw new ArgumentException($"--scores {dir} was attributed by another run: {why}");
        var sums = PartialScores.Load(dir, m);
        var byMethod = m.Methods.ToDictionary(MethodNames.Parse, sums.Means);
        return (byMethod, ShardManifest.Sha256Of(Path.Combine(dir, m.SumsFile!)));
    }
}
