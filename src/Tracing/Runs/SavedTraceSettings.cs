using System.Text.Json;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Tracing.Evaluation;
using NeuronTrace.Tracing.Pipeline;
using NeuronTrace.Tracing.Scoring;
using static NeuronTrace.Tracing.Runs.JsonFields;

namespace NeuronTrace.Tracing.Runs;

/// <summary>
/// What <c>trace --from-summary</c> reads back from a run's summary.json: the model, the task and every option that
/// changes a number (summary.json <c>options</c>), with the sha256 of the model and task the run used, so a rerun on a
/// changed file is refused instead of silently giving other numbers.
/// </summary>
internal sealed record SavedTraceSettings(string Model, string? ModelSha256, string Task, string? TaskSha256, TraceOptions Options, bool AllLengths)
{
    public static SavedTraceSettings Read(string path)
    {
        if (!File.Exists(path)) throw new ModelFormatException(path, "summary file not found");
        var root = ReadObject(path);
        if (OptionalString(path, root, "format") is { } format && format != RunFormat.TraceId)
            throw new ModelFormatException(path, $"field format: {ErrorText.Quote(format)} is not {RunFormat.TraceId}");
        if (Get(root, "options") is not { } o || o.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(path, "records no options (written by an older trace), so the run cannot be reproduced from it");
        const string P = "options.";
        var methods = Strings(path, o, "methods").Select(m => Parse(() => MethodNames.ParseList(m)[0], path, P + "methods")).ToArray();
        var sites = Strings(path, o, "sites").Select(s => NodeSites.TryParse(s, out var x) ? x : throw new ModelFormatException(path, $"field {P}sites: unknown site {ErrorText.Quote(s)}")).ToArray();
        string relp = RequireString(path, o, "relp_attention", P);
        if (!BackwardRules.TryParseRelPAttention(relp, out var rules))
            throw new ModelFormatException(path, $"field {P}relp_attention: {ErrorText.Quote(relp)} is not gradient or freeze");
        // A run written before sweep_path was recorded swept on the plain path, so that is what reproduces it.
        var sweepPath = SweepPath.Plain;
        if (OptionalString(path, o, "sweep_path") is { } sp && !SweepPaths.TryParse(sp, out sweepPath))
            throw new ModelFormatException(path, $"field {P}sweep_path: {ErrorText.Quote(sp)} is not plain or shortcuts");
        double target = Number(path, Get(o, "target") ?? throw new ModelFormatException(path, $"field {P}target is missing"), P + "target");
        var options = new TraceOptions
        {
            Methods = methods, Sites = sites, TrainExamples = OptionalInt(path, o, "train", min: 1, prefix: P),
            KPoints = RequireInt(path, o, "k_points", min: 2, prefix: P), IgSteps = RequireInt(path, o, "ig_steps", min: 1, prefix: P),
            RelPRules = rules, MasksPerForward = RequireInt(path, o, "masks_per_forward", min: 1, prefix: P),
            Seed = RequireInt(path, o, "seed", prefix: P), TargetFaithfulness = target, SweepPath = sweepPath,
        };
        bool allLengths = Get(o, "all_lengths") is { } a && (a.ValueKind == JsonValueKind.True || (a.ValueKind == JsonValueKind.False ? false
            : throw new ModelFormatException(path, $"field {P}all_lengths: expected true or false, got {Describe(a)}")));
        return new SavedTraceSettings(RequireString(path, root, "model"), OptionalString(path, root, "model_sha256"),
            RequireString(path, root, "task"), OptionalString(path, root, "task_sha256"), options, allLengths);
    }

    /// <summary>Refuses a model or task file whose sha256 differs from the recorded one (a rerun would not reproduce the run).</summary>
    public void CheckUnchanged(string summaryPath, string modelPath, string taskPath)
    {
        if (ModelSha256 is { } m && TraceReport.Sha256(modelPath) is { } gotM && gotM != m)
            throw new ModelFormatException(summaryPath, $"the model {modelPath} has sha256 {gotM[..12]}…, but the run recorded {m[..Math.Min(12, m.Length)]}…: it is not the model the run used");
        if (TaskSha256 is { } t && TraceReport.Sha256(taskPath) is { } gotT && gotT != t)
            throw new ModelFormatException(summaryPath, $"the task {taskPath} has sha256 {gotT[..12]}…, but the run recorded {t[..Math.Min(12, t.Length)]}…: it is not the task the run used");
    }

    static IEnumerable<string> Strings(string path, JsonElement o, string name)
    {
        var a = RequireArray(path, o, name, "options.");
        if (a.GetArrayLength() == 0) throw new ModelFormatException(path, $"field options.{name} is empty");
        int i = 0;
        foreach (var x in a.EnumerateArray())
        {
            if (x.ValueKind != JsonValueKind.String) throw new ModelFormatException(path, $"field options.{name}[{i}]: expected a string, got {Describe(x)}");
            yield return x.GetString()!;
            i++;
        }
    }

    static T Parse<T>(Func<T> parse, string path, string field)
    {
        try { return parse(); }
        catch (FormatException e) { throw new ModelFormatException(path, $"field {field}: {e.Message}"); }
    }
}
