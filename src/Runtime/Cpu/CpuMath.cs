namespace NeuronTrace.Runtime.Cpu;

/// <summary>How the CPU backend computes its matrix products over bf16 weights.</summary>
internal enum CpuMath
{
    /// <summary>
    /// The weights widened to fp32 as the products pack them, fp32 activations, fp32 sums: the same arithmetic as over
    /// fp32 weights, bit for bit. The default.
    /// </summary>
    Fp32,
    /// <summary>
    /// The activation operand of each product over bf16 weights rounded to bf16 (to nearest even, about 4e-3 relative),
    /// exact bf16 products, fp32 sums; outputs and everything outside the products stay fp32. Runs the AVX-512 BF16
    /// micro-kernel (native/cpu) where the CPU has it, a managed path of the same arithmetic elsewhere
    /// (<see cref="Gemm.RunBf16"/>). Products over fp32 or f16 weights are unchanged. PyTorch's bf16 CPU arithmetic,
    /// at about 2.5× the fp32 mode's product speed on Zen 4.
    /// </summary>
    Bf16,
}

internal static class CpuMaths
{
    /// <summary>The variable the CLI reads: NEURONTRACE_CPU_MATH=bf16 (or fp32, the default), as NEURONTRACE_CUDA_MATH for CUDA.</summary>
    public const string EnvironmentVariable = "NEURONTRACE_CPU_MATH";

    /// <summary>Parses "fp32" / "bf16" (case-insensitive); null or empty is fp32.</summary>
    public static CpuMath Parse(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" or "fp32" or "f32" => CpuMath.Fp32,
        "bf16" => CpuMath.Bf16,
        _ => throw new ArgumentException($"{EnvironmentVariable}={ErrorText.Quote(text)}: expected fp32 or bf16"),
    };

    /// <summary>The math $NEURONTRACE_CPU_MATH asks for.</summary>
    public static CpuMath FromEnvironment() => Parse(Environment.GetEnvironmentVariable(EnvironmentVariable));
}
