using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cuda;

namespace NeuronTrace.Cli;

/// <summary>Opens the CUDA backend, or explains in one line why it cannot (no driver, no GPU, no PTX).</summary>
static class CudaBackends
{
    public static IBackend Open() =>
        CudaBackend.TryCreate(out string whyNot) ?? throw new UsageException($"--device cuda: {whyNot}; the CPU backend (--device cpu) is the default");
}
