// nt_cpu_detect.c - whether this CPU and OS run the AVX-512 BF16 micro-kernel of nt_cpu_bf16.c. Compiled without
// AVX-512 flags (native/build.sh), so that loading the library and asking is safe on any x86-64 CPU.
#include <cpuid.h>
#include <stdint.h>

// 1 when CPUID reports AVX512F, AVX512BW and AVX512_BF16 and the OS saves the zmm state (XCR0 bits 1,2,5,6,7); else 0.
int nt_cpu_bf16_supported(void)
{
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return 0;   // OSXSAVE
    uint32_t xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 0xE6u) != 0xE6u) return 0;                                     // SSE, AVX, opmask, zmm state
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    int avx512f = (ebx >> 16) & 1, avx512bw = (ebx >> 30) & 1;
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    int avx512bf16 = (eax >> 5) & 1;
    return avx512f && avx512bw && avx512bf16;
}
