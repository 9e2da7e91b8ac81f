// nt_cpu_bf16.c - the CPU backend's bf16 matrix product on AVX-512 BF16 (vdpbf16ps), for the "bf16" CPU math mode
// (NEURONTRACE_CPU_MATH=bf16; src/Runtime/Cpu/GemmBf16.cs loads this library and owns the threading).
//
//   C[m, j0:j1] (+)= bf16(A)[m, k] · B      B bf16, [n, k] row-major (transposed_b: the forward's x·Wᵀ)
//                                           or [k, n] row-major (the input gradient dy·W)
//
// A is rounded to bf16 once per product by nt_cpu_bf16_round_rows (vcvtne2ps2bf16, round to nearest even), into a
// row-major buffer whose row length kpad is k rounded up to even (zero-padded), with rows padded to a multiple of MR
// (zero rows): a row of that buffer is already the k-pair layout vdpbf16ps reads (one dword = two consecutive k).
// B is packed per block of KC k values × NC columns into panels of NR = 32 columns: panel[p][jj] is the dword
// (B[2p, jj], B[2p+1, jj]), zero past k or n. The 8×32 micro-kernel keeps 16 zmm accumulators, broadcasts one A
// dword per row and issues two vdpbf16ps per row per k pair: 64 bf16 multiply-adds per A row and k pair.
//
// Packing prefetches the weight rows it will read next (PF_PAIRS pairs of rows ahead for A·B, the next 16 rows for A·Bᵀ):
// at tens of rows of A the product is bound by reading B, and the rows of a block lie a page apart, which the hardware
// prefetchers do not follow; the prefetches change no arithmetic.
//
// Arithmetic: products of two bf16 values are exact in fp32; vdpbf16ps adds each pair into the fp32 accumulator
// (denormal inputs and outputs flushed to zero, round to nearest even). Every C element is summed in the same order
// (k blocks of KC in order, pairs in order within a block) whatever m, n, j0, j1 or the thread: a row's result does
// not depend on how many rows are computed with it.
//
// Compiled with -mavx512f -mavx512bw -mavx512bf16 (native/build.sh); callers check nt_cpu_bf16_supported first.
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// NC: 256 columns, not 512: the C block (m × NC fp32) and the packed B block then stay in the 1 MB L2 beside A while the
// next weights stream through; 3-8% more multiply-adds per CPU second at the 1B shapes (m 128-256, n 512-8192, k
// 2048-8192; one thread, 20 calls each, against 512 in the same run; 128-384 measured alike). The column blocking
// changes no sum: each C element still adds its k blocks in order.
enum { MR = 8, NR = 32, KC = 256, NC = 256, PF_PAIRS = 8 };   // PF_PAIRS: 2..16 measured alike (within noise), 8 kept

// Bytes of workspace nt_cpu_gemm_bf16 needs (one packed B block), 64-byte aligned by the caller.
size_t nt_cpu_bf16_workspace_bytes(void) { return (size_t)KC * NC * sizeof(uint16_t); }

// Row padding the rounded A buffer needs: rows are read MR at a time.
int nt_cpu_bf16_row_block(void) { return MR; }

// dst[i, 0:kpad) = bf16(a[i, 0:k)) then zeros, for i < m; zero rows for m <= i < mpad. kpad >= k, even.
void nt_cpu_bf16_round_rows(const float* a, int m, int k, uint16_t* dst, int kpad, int mpad)
{
    for (int i = 0; i < mpad; i++)
    {
        uint16_t* d = dst + (size_t)i * kpad;
        if (i >= m) { memset(d, 0, (size_t)kpad * sizeof(uint16_t)); continue; }
        const float* s = a + (size_t)i * k;
        int p = 0;
        for (; p + 32 <= k; p += 32)
            _mm512_storeu_si512(d + p, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + p + 16), _mm512_loadu_ps(s + p)));
        for (; p < k; p += 16)   // the tail through the same instruction, so that every value rounds the same way
        {
            __mmask16 mask = (__mmask16)((1u << (k - p < 16 ? k - p : 16)) - 1);
            __m256i v = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, s + p));
            _mm256_mask_storeu_epi16(d + p, mask, v);
        }
        for (p = k; p < kpad; p++) d[p] = 0;
    }
}

// 16×16 transpose of 32-bit elements: r[i] lane j becomes r[j] lane i.
static inline void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 8; i++)
    {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++)   // r[4g + c], 128-bit lane L: rows 4g..4g+3 at column 4L + c
    {
        r[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
        r[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
        r[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
        r[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
    }
    __m512i out[16];
    for (int c = 0; c < 4; c++)
    {
        __m512i a88 = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88), add = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xDD);
        __m512i b88 = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88), bdd = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xDD);
        out[c] = _mm512_shuffle_i32x4(a88, b88, 0x88);
        out[8 + c] = _mm512_shuffle_i32x4(a88, b88, 0xDD);
        out[4 + c] = _mm512_shuffle_i32x4(add, bdd, 0x88);
        out[12 + c] = _mm512_shuffle_i32x4(add, bdd, 0xDD);
    }
    for (int i = 0; i < 16; i++) r[i] = out[i];
}

static inline uint32_t pair_or_zero(const uint16_t* row, int p, int k)   // (row[p], row[p+1]), p+1 past k reads 0
{
    uint32_t lo = row[p], hi = p + 1 < k ? row[p + 1] : 0;
    return lo | hi << 16;
}

// A·Bᵀ: B [n, k] (row length k). Packs columns (= rows of B) [j, j+nc), j+nc <= n, × k values [p0, p0+kc) (kc even).
static void pack_rows(const uint16_t* b, int k, int j, int nc, int p0, int kc, uint32_t* dst)
{
    int pairs = kc / 2;
    for (int jr = 0; jr < nc; jr += NR, dst += (size_t)pairs * NR)
        for (int half = 0; half < NR; half += 16)
        {
            int j1 = j + jr + half, rows = nc - jr - half;   // nc <= n - j: no row past n
            rows = rows < 0 ? 0 : rows > 16 ? 16 : rows;
            int ahead = nc - jr - half - 16;   // the next 16 rows' segments, fetched while these are transposed
            ahead = ahead < 0 ? 0 : ahead > 16 ? 16 : ahead;
            int seg = p0 + kc <= k ? kc : k - p0;
            for (int i = 0; i < ahead; i++)
                for (int c = 0; c < seg; c += 32) _mm_prefetch((const char*)(b + (size_t)(j1 + 16 + i) * k + p0 + c), _MM_HINT_T0);
            int q = 0;
            if (rows == 16)
                for (; 2 * (q + 16) <= kc && p0 + 2 * (q + 16) <= k; q += 16)   // 16 rows × 16 pairs per transpose
                {
                    __m512i r[16];
                    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(b + (size_t)(j1 + i) * k + p0 + 2 * q);
                    transpose16(r);
                    for (int i = 0; i < 16; i++) _mm512_store_si512(dst + (size_t)(q + i) * NR + half, r[i]);
                }
            for (; q < pairs; q++)
                for (int i = 0; i < 16; i++)
                    dst[(size_t)q * NR + half + i] = i < rows ? pair_or_zero(b + (size_t)(j1 + i) * k, p0 + 2 * q, k) : 0;
        }
}

// A·B: B [k, n] (row length n). Packs columns [j, j+nc) × k values [p0, p0+kc) (kc even): rows 2q and 2q+1 of B
// interleaved word by word. Two rows at a time across all panels, so that B is read as two sequential streams
// (a panel at a time would walk down columns at a power-of-two row stride, which the prefetchers do not follow).
static void pack_columns(const uint16_t* b, int n, int k, int j, int nc, int p0, int kc, uint32_t* dst)
{
    const __m512i lo = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                        39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi = _mm512_add_epi16(lo, _mm512_set1_epi16(16));
    int pairs = kc / 2;
    for (int q = 0; q < pairs; q++)
    {
        const uint16_t* r0 = b + (size_t)(p0 + 2 * q) * n + j;
        const uint16_t* r1 = r0 + n;
        int second = p0 + 2 * q + 1 < k;
        uint32_t* d = dst + (size_t)q * NR;
        if (p0 + 2 * (q + PF_PAIRS) + 1 < k)   // the rows PF_PAIRS pairs ahead: many misses in flight, not two at a time
        {
            const uint16_t* f0 = r0 + (size_t)(2 * PF_PAIRS) * n;
            for (int jr = 0; jr < nc; jr += 32) { _mm_prefetch((const char*)(f0 + jr), _MM_HINT_T0); _mm_prefetch((const char*)(f0 + n + jr), _MM_HINT_T0); }
        }
        for (int jr = 0; jr < nc; jr += NR, d += (size_t)pairs * NR)
        {
            int cols = nc - jr < NR ? nc - jr : NR;
            __mmask32 mask = cols == 32 ? 0xFFFFFFFFu : (__mmask32)((1u << cols) - 1);
            __m512i v0 = _mm512_maskz_loadu_epi16(mask, r0 + jr);
            __m512i v1 = second ? _mm512_maskz_loadu_epi16(mask, r1 + jr) : _mm512_setzero_si512();
            _mm512_store_si512(d, _mm512_permutex2var_epi16(v0, lo, v1));
            _mm512_store_si512(d + 16, _mm512_permutex2var_epi16(v0, hi, v1));
        }
    }
}

// C[8, 32] (+)= A[8 rows, 2·pairs] · panel, A rows lda uint16 apart (lda even), C rows ldc floats apart.
static void kernel8x32(int pairs, const uint16_t* a, int lda, const uint32_t* b, float* c, int ldc, int add)
{
    const uint32_t* a0 = (const uint32_t*)a;
    size_t s = (size_t)lda / 2;
    __m512 acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int q = 0; q < pairs; q++, b += NR)
    {
        __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16);
#define NT_ROW(i)                                                                  \
        {                                                                          \
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)a0[(i) * s + q]);        \
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);                        \
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);                        \
        }
        NT_ROW(0) NT_ROW(1) NT_ROW(2) NT_ROW(3) NT_ROW(4) NT_ROW(5) NT_ROW(6) NT_ROW(7)
#undef NT_ROW
    }
    for (int i = 0; i < MR; i++)
    {
        float* ci = c + (size_t)i * ldc;
        if (add)
        {
            acc[i][0] = _mm512_add_ps(acc[i][0], _mm512_loadu_ps(ci));
            acc[i][1] = _mm512_add_ps(acc[i][1], _mm512_loadu_ps(ci + 16));
        }
        _mm512_storeu_ps(ci, acc[i][0]);
        _mm512_storeu_ps(ci + 16, acc[i][1]);
    }
}

// C[0:m, j0:j1) (+)= abf · B. abf: nt_cpu_bf16_round_rows's buffer (kpad = k rounded up to even, rows padded to a
// multiple of MR). c row-major [m, n]. workspace: nt_cpu_bf16_workspace_bytes(), 64-byte aligned. Returns 0, or -1
// for arguments out of range (nothing written).
int nt_cpu_gemm_bf16(const uint16_t* abf, int m, int kpad, const uint16_t* b, int n, int k, int transposed_b,
                     float* c, int j0, int j1, int accumulate, void* workspace)
{
    if (m < 0 || n < 0 || k < 0 || kpad < k || kpad % 2 != 0 || kpad > k + 1 || j0 < 0 || j1 > n || j0 > j1
        || ((uintptr_t)workspace & 63) != 0)
        return -1;
    if (m == 0 || j0 == j1) return 0;
    uint32_t* bp = (uint32_t*)workspace;
    float edge[MR * NR];
    for (int jc = j0; jc < j1; jc += NC)
    {
        int nc = j1 - jc < NC ? j1 - jc : NC;
        for (int pc = 0; pc < kpad; pc += KC)
        {
            int kc = kpad - pc < KC ? kpad - pc : KC, pairs = kc / 2;
            int add = accumulate || pc > 0;
            if (transposed_b) pack_rows(b, k, jc, nc, pc, kc, bp);
            else pack_columns(b, n, k, jc, nc, pc, kc, bp);
            for (int jr = 0; jr < nc; jr += NR)
            {
                int nr = nc - jr < NR ? nc - jr : NR;
                const uint32_t* panel = bp + (size_t)jr / NR * pairs * NR;
                for (int ir = 0; ir < m; ir += MR)
                {
                    int mr = m - ir < MR ? m - ir : MR;
                    const uint16_t* a = abf + (size_t)ir * kpad + pc;
                    float* ct = c + (size_t)ir * n + jc + jr;
                    if (mr == MR && nr == NR) { kernel8x32(pairs, a, kpad, panel, ct, n, add); continue; }
                    kernel8x32(pairs, a, kpad, panel, edge, NR, 0);
                    for (int i = 0; i < mr; i++)
                        for (int jj = 0; jj < nr; jj++)
                            ct[(size_t)i * n + jj] = add ? ct[(size_t)i * n + jj] + edge[i * NR + jj] : edge[i * NR + jj];
                }
            }
        }
    }
    return 0;
}
