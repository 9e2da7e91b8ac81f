using NeuronTrace.Model;
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

    /// <summary>The commands that take several devices (cuda:N,M,…: the model's layers split over them).</summary>
    public const string SplitCommands = "attribute, trace and plan";

    /// <summary>N of "cuda:N"; null for any other text. A list (cuda:0,1) is refused in one line: see <see cref="Ordinals"/>.</summary>
    public static int? Ordinal(string device)
    {
        if (Ordinals(device) is not { } all) return null;
        return all.Length == 1 ? all[0]
            : throw new UsageException($"--device {device}: splitting a model's layers over several GPUs is done by {SplitCommands}; give one device (cuda:N) here");
    }

    /// <summary>The N of "cuda:N" or each of "cuda:N,M,…" (distinct, in pipeline order); null for text not starting "cuda:".</summary>
    public static int[]? Ordinals(string device)
    {
        if (!device.StartsWith("cuda:", StringComparison.Ordinal)) return null;
        var all = device["cuda:".Length..].Split(',').Select(n =>
            int.TryParse(n, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int i) && i <= MaxOrdinal
                ? i : throw new UsageException($"--device {ErrorText.Quote(device)}: N of cuda:N (or each of cuda:N,M,…) must be a device number in 0..{MaxOrdinal}")).ToArray();
        if (all.Distinct().Count() != all.Length) throw new UsageException($"--device {device}: a device is named twice");
        return all;
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
    /// asks the GC there), where the GPU's free memory cannot be had, and for a layer split over several GPUs (whose
    /// per-device plan does not query them yet).</summary>
    public static long? PlanFreeBytes(string device) =>
        device == "cpu" || Ordinals(device) is { Length: > 1 } ? null : FreeBytes(device, out _);

    /// <summary>The bytes the memory plan fits a run into on --device <paramref name="device"/>: the GC's available memory
    /// on the CPU, else <see cref="PlanFreeBytes"/> (null when unknown: no fitting).</summary>
    public static long? PlanAvailableBytes(string device) =>
        CommonOptions.IsCpu(device) ? Tracing.Pipeline.MemoryPlan.AvailableCpuBytes() : PlanFreeBytes(device);

    /// <summary>What a GPU run's plan checks its host-side scores against (null on the CPU, whose plan counts them).</summary>
    public static long? PlanHostBytes(string device) => CommonOptions.IsCpu(device) ? null : Tracing.Pipeline.MemoryPlan.AvailableCpuBytes();

    /// <summary>How the plan's lines name <see cref="PlanAvailableBytes"/>.</summary>
    public static string PlanWhere(string device) => CommonOptions.IsCpu(device) ? "available" : $"free on {device}";

    public static IBackend Open(int ordinal = 0)
    {
        GemmPrecision precision;
        try { precision = GemmPrecisions.FromEnvironment(); }
        catch (ArgumentException e) { throw new UsageException(e.Message); }
        return CudaBackend.TryCreate(ordinal, out string whyNot, precision)
            ?? throw new UsageException($"--device cuda:{ordinal}: {whyNot}; the CPU backend (--device cpu) is the default");
    }
}
