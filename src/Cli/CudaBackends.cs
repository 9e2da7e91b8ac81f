using NeuronTrace.Runtime;

namespace NeuronTrace.Cli;

/// <summary>Opens the CUDA backend, or explains in one line why it cannot.</summary>
static class CudaBackends
{
    public static IBackend Open() =>
        throw new UsageException("--device cuda: the CUDA backend is not available in this build");
}
