namespace NeuronTrace.Runtime.Cuda;

/// <summary>How the GPU computes matrix products (every MatMul / MatMulInputGrad of a CUDA backend).</summary>
internal enum GemmPrecision
{
    /// <summary>Exact fp32 (cublasSgemm, CUBLAS_COMPUTE_32F): what the CPU backend computes, up to summation order. The default.</summary>
    Fp32,
    /// <summary>
    /// TF32 tensor cores (cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32): inputs rounded to a 10-bit mantissa
    /// (about 5e-4 relative per factor), products summed in fp32. Several times faster on Ampere and newer GPUs.
    /// </summary>
    Tf32,
    /// <summary>
    /// bf16 tensor cores (cublasGemmEx with CUDA_R_16BF inputs, CUBLAS_COMPUTE_32F, fp32 output): weight matrices
    /// uploaded in this mode are stored as bf16 only (lossless for bf16 checkpoints; no fp32 copy on the device),
    /// the activation operand is rounded once per tensor (8-bit mantissa, about 4e-3 relative; written by the norm
    /// or SwiGLU that produces it where it can), sums and everything outside the products stay fp32. The precision
    /// PyTorch users run 8B models in, at bf16 speed. See CudaBackend's Ops/Bf16Operands.cs.
    /// </summary>
    Bf16,
}

internal static class GemmPrecisions
{
    /// <summary>The variable the CLI reads: NEURONTRACE_CUDA_MATH=tf32 or bf16 (or fp32, the default).</summary>
    public const string EnvironmentVariable = "NEURONTRACE_CUDA_MATH";

    /// <summary>Parses "fp32" / "tf32" / "bf16" (case-insensitive); null or empty is fp32.</summary>
    public static GemmPrecision Parse(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" or "fp32" or "f32" => GemmPrecision.Fp32,
        "tf32" => GemmPrecision.Tf32,
        "bf16" => GemmPrecision.Bf16,
        _ => throw new ArgumentException($"{EnvironmentVariable}={ErrorText.Quote(text)}: expected fp32, tf32 or bf16"),
    };

    /// <summary>The precision $NEURONTRACE_CUDA_MATH asks for.</summary>
    public static GemmPrecision FromEnvironment() => Parse(Environment.GetEnvironmentVariable(EnvironmentVariable));

    /// <summary>As <see cref="FromEnvironment"/>, but fp32 for a value it rejects (the memory plan, which runs before
    /// the backend is opened: opening it reports the bad value).</summary>
    public static GemmPrecision FromEnvironmentOrFp32()
    {
        try { return FromEnvironment(); }
        catch (ArgumentException) { return GemmPrecision.Fp32; }
    }
}
