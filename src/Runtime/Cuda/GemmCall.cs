namespace NeuronTrace.Runtime.Cuda;

/// <summary>
/// One column-major SGEMM, C = α op(A) op(B) + β C, as cuBLAS takes it (op = transpose when the flag is set;
/// ldX = the stored column length). IBackend's matrices are row-major, and a row-major [r, c] buffer read
/// column-major is its transpose [c, r] with leading dimension c. So a row-major product is computed as the
/// column-major product of the transposes: (X Wᵀ)ᵀ = W Xᵀ. This is the one place that mapping lives.
/// </summary>
internal readonly record struct GemmCall(
    bool TransposeA, bool TransposeB, int M, int N, int K,
    nint A, int Lda, nint B, int Ldb, float Beta, nint C, int Ldc)
{
    public float Alpha => 1f;

    /// <summary>Exact fp32 unless the backend asked for TF32 tensor cores.</summary>
    public GemmPrecision Precision { get; init; } = GemmPrecision.Fp32;

    /// <summary>
    /// y[r, n] (+)= Σ_k x[r, k] w[n, k] for x [rows, k], w [n, k], y [rows, n]. Column-major: yᵀ (n × rows, ld n) =
    /// op(A)·op(B) with A = w's buffer read as k × n (ld k) and transposed, B = x's buffer read as k × rows (ld k).
    /// </summary>
    public static GemmCall MatMul(nint x, nint w, nint y, int rows, int n, int k, bool accumulate) =>
        new(TransposeA: true, TransposeB: false, M: n, N: rows, K: k,
            A: w, Lda: k, B: x, Ldb: k, Beta: accumulate ? 1f : 0f, C: y, Ldc: n);

    /// <summary>
    /// dx[r, k] (+)= Σ_n dy[r, n] w[n, k] for dy [rows, n], w [n, k], dx [rows, k]. Column-major: dxᵀ (k × rows, ld k) =
    /// A·B with A = w's buffer read as k × n (ld k) — that is wᵀ, as needed — and B = dy's buffer read as n × rows (ld n).
    /// </summary>
    public static GemmCall MatMulInputGrad(nint dy, nint w, nint dx, int rows, int n, int k, bool accumulate) =>
        new(TransposeA: false, TransposeB: false, M: k, N: rows, K: n,
            A: w, Lda: k, B: dy, Ldb: n, Beta: accumulate ? 1f : 0f, C: dx, Ldc: k);
}
