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
        Description = "Model file or folder: a llama2.c .bin (tokenizer beside it), a .gguf, or a Hugging Face folder. Default: the bundled stories260K.",
    };

    public static Option<string> Device() => new("--device")
    {
        Description = "Backend: cpu (managed, default), cuda (GPU 0) or cuda:N (GPU N as numbered under CUDA_VISIBLE_DEVICES, 0..63; Slurm's --gpus-per-task sets it per shard).",
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
        _ when CudaBackends.Ordinal(device) is int n => CudaBackends.Open(n),
        _ => throw new UsageException($"unknown --device \"{device}\" (cpu, cuda or cuda:N)"),
    };
}
