using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Formats;
using NeuronTrace.Tracing.Scoring;

namespace NeuronTrace.Cli;

/// <summary>Options of the commands that read a task.</summary>
internal static class TaskOptions
{
    public const string DefaultTask = "pronoun_gender";

    public static Option<string?> Task() => new("--task", "-t")
    {
        Description = $"Task file in the feature-circuits JSON-lines format (clean_prefix, patch_prefix, clean_answer, patch_answer), or the name of a bundled task (pronoun_gender, possessive_gender, gender_name, name_copy). Default: {DefaultTask}.",
    };

    public static Option<NodeSite[]> Sites() => CommonOptions.ChoiceList("--sites",
        "Comma-separated node sites: mlp_act (neurons: down_proj input), mlp_out, attn (o_proj output), attn_z (o_proj input), resid.",
        NodeSites.All.Select(s => (s.Name(), s)).ToArray(), "mlp_act,mlp_out,attn,resid", "node site");

    /// <summary>Attribution methods, comma-separated (<c>trace</c> runs each; <c>attribute</c> takes one).</summary>
    public static Option<AttributionMethod[]> Methods(string description) =>
        CommonOptions.ChoiceList("--method", description, CommonOptions.MethodChoices, "relp", "method");

    public static Option<BackwardRules> RelPAttention() => CommonOptions.Choice("--relp-attention",
        "RelP rule at the attention softmax: gradient (as the authors' released code runs; default) or freeze (the RelP paper's AH-rule; conserves relevance).",
        RelPAttentionChoices, () => BackwardRules.RelP);

    static readonly (string Name, BackwardRules Value)[] RelPAttentionChoices =
        BackwardRules.RelPVariants.Select(r => (r.RelPAttentionName!, r)).ToArray();

    /// <summary>A path, or a bundled task's name.</summary>
    public static string TaskPath(string? task)
    {
        task ??= DefaultTask;
        if (File.Exists(task)) return task;
        if (!task.Contains('/') && !task.EndsWith(".jsonl"))
        {
            string bundled = BundledFiles.Find("data", "tasks", task + ".jsonl");
            if (File.Exists(bundled)) return bundled;
        }
        throw new ModelFormatException(task, "task file not found");
    }
}
