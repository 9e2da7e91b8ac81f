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
    /// <summary>The most device ordinals <c>--device cuda:N</c> accepts (N in 0..MaxOrdinal).</summary>
    public const int MaxOrdinal = 63;

    /// <summary>N of "cuda:N"; null for any other text. "cuda:0,1" (layers split over devices) is refused in one line.</summary>
    public static int? Ordinal(string device)
    {
        if (!device.StartsWith("cuda:", StringComparison.Ordinal)) return null;
        string n = device["cuda:".Length..];
        if (n.Contains(',')) throw new UsageException($"--device {device}: splitting a model's layers over several GPUs is not supported yet; give one device (cuda:N)");
        return int.TryParse(n, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i) && i <= MaxOrdinal
            ? i : throw new UsageException($"--device {device}: N of cuda:N must be a device number in 0..{MaxOrdinal}");
    }

    /// <summary>
    /// Free bytes of the GPU that <paramref name="device"/> ("cuda" or "cuda:N") names, queried before any weight is
    /// read (cuMemGetInfo); null, with the reason in <paramref name="whyNot"/>, where it cannot be had (no driver or
    /// device: opening the backend then says so in its own line).
    /// </summary>
    public static long? FreeBytes(string device, out string whyNot)
    {
        int ordinal = device == "cuda" ? 0 : Ordinal(device) ?? throw new UsageException($"unknown --device {device}");
        return CudaDevice.TryQueryMemory(ordinal, out long free, out _, out whyNot) ? free : null;
    }

    /// <summary>What the memory plan compares with for --device <paramref name="device"/>: null on the CPU (the plan
    /// asks the GC there) and where the GPU's free memory cannot be had.</summary>
    public static long? PlanFreeBytes(string device) => device == "cpu" ? null : FreeBytes(device, out _);

    public static IBackend Open(int ordinal = 0)
    {
        GemmPrecision precision;
        try { precision = GemmPrecisions.FromEnvironment(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        return CudaBackend.TryCreate(ordinal, out string whyNot, precision)
            ?? throw new UsageException($"--device cuda:{ordinal}: {whyNot}; the CPU backend (--device cpu) is the default");
    }
}
