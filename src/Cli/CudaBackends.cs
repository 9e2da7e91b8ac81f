using NeuronTrace.Runtime;
using NeuronTrace.Runtime.Cuda;

namespace NeuronTrace.Cli;

/// <summary>
/// Opens the CUDA backend, or explains in one line why it cannot (no driver, no GPU, no PTX). Matrix products are
/// exact fp32 unless $NEURONTRACE_CUDA_MATH=tf32 or bf16 asks for tensor cores (an environment variable rather than a
/// flag: it is a property of the machine and the run, like the device, not of the science a command does).
/// </summary>
static class CudaBackends
{
    public static IBackend Open()
    {
        GemmPrecision precision;
        try { precision = GemmPrecisions.FromEnvironment(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        return CudaBackend.TryCreate(out string whyNot, precision)
            ?? throw new UsageException($"--device cuda: {whyNot}; the CPU backend (--device cpu) is the default");
    }
}
