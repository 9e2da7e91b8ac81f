namespace NeuronTrace.Runtime.Cuda;

/// <summary>How the GPU computes matrix products (every MatMul / MatMulInputGrad of a CUDA backend).</summary>
public enum GemmPrecision
{
    /// <summary>Exact fp32 (cublasSgemm, CUBLAS_COMPUTE_32F): what the CPU backend computes, up to summation order. The default.</summary>
    Fp32,
    /// <summary>
    /// TF32 tensor cores (cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32): inputs rounded to a 10-bit mantissa
    /// (about 5e-4 relative per factor), products summed in fp32. Several times faster on Ampere and newer GPUs.
    /// </summary>
    Tf32,
}

public static class GemmPrecisions
{
    /// <summary>The variable the CLI reads: NEURONTRACE_CUDA_MATH=tf32 (or fp32, the default).</summary>
    public const string EnvironmentVariable = "NEURONTRACE_CUDA_MATH";

    /// <summary>Parses "fp32" / "tf32" (case-insensitive); null or empty is fp32.</summary>
    public static GemmPrecision Parse(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" or "fp32" or "f32" => GemmPrecision.Fp32,
        "tf32" => GemmPrecision.Tf32,
        _ => throw new ArgumentException($"{EnvironmentVariable}={text}: expected fp32 or tf32"),
    };

    /// <summary>The precision $NEURONTRACE_CUDA_MATH asks for.</summary>
    public static GemmPrecision FromEnvironment() => Parse(Environment.GetEnvironmentVariable(EnvironmentVariable));
}
