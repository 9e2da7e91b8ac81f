using System.CommandLine;
using NeuronTrace.Model;
using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cpu;
using NeuronTrace.Formats;

namespace NeuronTrace.Cli;

/// <summary>Options several commands share, with the same names and meaning everywhere.</summary>
public static class CommonOptions
{
    public static Option<string?> Model() => new("--model", "-m")
    {
        Description = "Model file or folder: a llama2.c .bin (tokenizer beside it), a .gguf, a Hugging Face folder, or a Hugging Face id ORG/NAME[@REVISION] from the local hub cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub; nothing is downloaded). Default: the bundled stories260K.",
    };

    public static Option<string> Device() => new("--device")
    {
        Description = "Backend: cpu (managed, default) or cuda.",
        DefaultValueFactory = _ => "cpu",
    };

    public static LoadedModel LoadModel(string? path)
    {
        var m = ModelLoader.Load(path);
        return m;
    }

    public static IBackend OpenBackend(string device) => device switch
    {
        "cpu" => CpuBackend.Instance,
        "cuda" => CudaBackends.Open(),
        _ => throw new UsageException($"unknown --device \"{device}\" (cpu or cuda)"),
    };
}
