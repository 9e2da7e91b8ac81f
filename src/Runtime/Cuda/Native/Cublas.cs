using System.Runtime.InteropServices;

namespace NeuronTrace.Runtime.Cuda.Native;

/// <summary>
/// cuBLAS (v2 API) calls. <see cref="Library"/> is a logical name that <see cref="NativeLibraries"/> resolves to
/// libcublas.so.13, .12 or .11 (or $NEURONTRACE_CUBLAS). Column-major, as BLAS is; see
/// <see cref="GemmCall"/> for how the row-major products map onto it.
/// </summary>
internal static unsafe partial class Cublas
{
    public const string Library = "neurontrace-cublas";

    static Cublas() => NativeLibraries.EnsureResolver();

    public const int OpN = 0;
    public const int OpT = 1;

    // cudaDataType / cublasComputeType_t / cublasGemmAlgo_t values for the Ex calls (bf16 weights, fp32 accumulate).
    public const int DataTypeR32F = 0;
    public const int DataTypeR16F = 2;
    public const int DataTypeR16BF = 14;
    public const int ComputeType32F = 68;
    /// <summary>CUBLAS_COMPUTE_32F_FAST_TF32: fp32 in and out, products on tensor cores with inputs rounded to TF32.</summary>
    public const int ComputeType32FFastTf32 = 77;
    public const int GemmDefault = -1;

    [LibraryImport(Library, SetLastError = false)] public static partial int cublasCreate_v2(nint* handle);
    [LibraryImport(Library, SetLastError = false)] public static partial int cublasDestroy_v2(nint handle);
    [LibraryImport(Library, SetLastError = false)] public static partial int cublasSetStream_v2(nint handle, nint stream);
    /// <summary>A workspace we own, so products captured into a CUDA graph never make cuBLAS allocate one mid-capture.</summary>
    [LibraryImport(Library, SetLastError = false)] public static partial int cublasSetWorkspace_v2(nint handle, ulong workspace, nuint bytes);

    /// <summary>C = α op(A) op(B) + β C; α, β in host memory (the default pointer mode).</summary>
    [LibraryImport(Library, SetLastError = false)]
    public static partial int cublasSgemm_v2(nint handle, int transA, int transB, int m, int n, int k,
        float* alpha, ulong a, int lda, ulong b, int ldb, float* beta, ulong c, int ldc);

    [LibraryImport(Library, SetLastError = false)]
    public static partial int cublasGemmEx(nint handle, int transA, int transB, int m, int n, int k,
        void* alpha, ulong a, int aType, int lda, ulong b, int bType, int ldb, void* beta, ulong c, int cType, int ldc,
        int computeType, int algo);

    [LibraryImport(Library, SetLastError = false)]
    public static partial int cublasGemmStridedBatchedEx(nint handle, int transA, int transB, int m, int n, int k,
        void* alpha, ulong a, int aType, int lda, long strideA, ulong b, int bType, int ldb, long strideB,
        void* beta, ulong c, int cType, int ldc, long strideC, int batchCount, int computeType, int algo);

    /// <summary>cublasStatus_t names (cublasGetStatusName only exists in newer releases).</summary>
    public static string StatusName(int status) => status switch
    {
        0 => "CUBLAS_STATUS_SUCCESS",
        1 => "CUBLAS_STATUS_NOT_INITIALIZED",
        3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE",
        8 => "CUBLAS_STATUS_ARCH_MISMATCH",
        11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED",
        14 => "CUBLAS_STATUS_INTERNAL_ERROR",
        15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        16 => "CUBLAS_STATUS_LICENSE_ERROR",
        _ => $"cublasStatus {status}",
    };
}
