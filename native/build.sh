#!/usr/bin/env bash
# Builds the kernels: PTX into native/build/ptx/ and the host (CPU test) library
# native/build/libneurontrace_kernels_host.so, and the CPU backend's bf16 micro-kernel (native/cpu) into
# native/build/libneurontrace_cpu.so. Run from anywhere; the top-level build and CI call it before
# `dotnet test`, because the kernel tests load the host library.
#   NT_BUILD_JOBS   parallel jobs (default 2)
#   NT_PTX_COMPILER auto | clang | nvcc   (default auto: nvcc when on PATH, else clang)
#   CXX             host C++ compiler (default clang++)
#   CC              host C compiler for native/cpu (default clang)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$here/build"
generator=()
if command -v ninja >/dev/null 2>&1 && [ ! -f "$build/CMakeCache.txt" ]; then generator=(-G Ninja); fi
cmake -S "$here" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="${CXX:-clang++}" \
  -DNT_PTX_COMPILER="${NT_PTX_COMPILER:-auto}" >/dev/null
cmake --build "$build" -j "${NT_BUILD_JOBS:-2}"
# The AVX-512 BF16 GEMM for NEURONTRACE_CPU_MATH=bf16 (src/Runtime/Cpu/GemmBf16.cs). Only its kernel file is built for
# AVX-512; the detection file is not, so that loading the library and asking is safe on any x86-64 CPU.
if [ "$(uname -m)" = x86_64 ]; then
  cc="${CC:-clang}"
  "$cc" -O3 -fPIC -Wall -Wextra -Werror -c "$here/cpu/nt_cpu_detect.c" -o "$build/nt_cpu_detect.o"
  "$cc" -O3 -fPIC -Wall -Wextra -Werror -mavx512f -mavx512bw -mavx512vl -mavx512bf16 -c "$here/cpu/nt_cpu_bf16.c" -o "$build/nt_cpu_bf16.o"
  "$cc" -shared -o "$build/libneurontrace_cpu.so" "$build/nt_cpu_detect.o" "$build/nt_cpu_bf16.o"
fi
echo "kernels: $build/ptx/*.ptx, $build/libneurontrace_kernels_host.so; CPU: $build/libneurontrace_cpu.so"
