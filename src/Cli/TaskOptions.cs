using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Formats;

namespace NeuronTrace.Cli;

/// <summary>Options of the commands that read a task.</summary>
public static class TaskOptions
{
    public const string DefaultTask = "pronoun_gender";

    public static Option<string?> Task() => new("--task", "-t")
    {
        Description = $"Task file in the feature-circuits JSON-lines format (clean_prefix, patch_prefix, clean_answer, patch_answer), or the name of a bundled task (pronoun_gender, possessive_gender, gender_name, name_copy). Default: {DefaultTask}.",
    };

    public static Option<string> Sites() => new("--sites")
    {
        Description = "Comma-separated node sites: mlp_act (neurons: down_proj input), mlp_out, attn (o_proj output), attn_z (o_proj input), resid.",
        DefaultValueFactory = _ => "mlp_act,mlp_out,attn,resid",
    };

    public static Option<string> RelPAttention() => new("--relp-attention")
    {
        Description = "RelP rule at the attention softmax: gradient (as the authors' released code runs; default) or freeze (the RelP paper's AH-rule; conserves relevance).",
        DefaultValueFactory = _ => "gradient",
    };

    public static BackwardRules RelPRules(string attention) => attention switch
    {
        "gradient" => BackwardRules.RelP,
        "freeze" => BackwardRules.RelPFrozenAttention,
        _ => throw new UsageException($"unknown --relp-attention \"{attention}\" (gradient or freeze)"),
    };

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
