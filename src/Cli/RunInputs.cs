using NeuronTrace.Formats;
using NeuronTrace.Tracing.Runs;
using NeuronTrace.Tracing.Tasks;

namespace NeuronTrace.Cli;

/// <summary>
/// What <c>edges</c>, <c>steer --run</c> and <c>view</c> read from a trace run folder: the folder, the task (the
/// command's --task, else the task the run recorded) and the model (--model, else the run's). On the run's own task
/// only its held-out lines count, since the circuit was chosen on the training lines.
/// </summary>
internal sealed class RunInputs
{
    public RunFolder Folder { get; }
    public string Dir { get; }
    /// <summary>The command's --task (null: the run's own task).</summary>
    public string? TaskOption { get; }
    public string? ModelOption { get; }

    RunInputs(string dir, RunFolder folder, string? task, string? model) { Dir = dir; Folder = folder; TaskOption = task; ModelOption = model; }

    public static RunInputs Open(string dir, string? taskOption, string? modelOption) => new(dir, RunFolder.Open(dir), taskOption, modelOption);

    /// <summary>The task file: --task, else the run's recorded task when it is here; <paramref name="remedy"/> ends the error.</summary>
    public string TaskPath(string remedy = "pass --task") =>
        TaskOption is { } t ? TaskOptions.TaskPath(t)
        : Folder.TaskPath is { } rec && File.Exists(rec) ? rec
        : throw new UsageException($"the task recorded in {Dir}/summary.json ({Folder.TaskPath ?? "none"}) is not here; {remedy}");

    public LoadedModel LoadModel() => CommonOptions.LoadModel(Folder.ModelToLoad(ModelOption));

    /// <summary>The task's examples: all of --task, or the run's held-out lines of its own task when <paramref name="heldOut"/>.</summary>
    public PromptTask LoadTask(string taskPath, LoadedModel model, bool heldOut, bool requireEqualLengths)
    {
        var task = PromptTask.Load(taskPath, model.RequireTokenizer(), requireEqualLengths, PromptOptions.Encoder(model, false, taskPath), model.Config.MaxSeqLen);
        return heldOut && TaskOption is null ? Folder.HeldOut(task, taskPath) : task;
    }
}
