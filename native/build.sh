#!/usr/bin/env bash
# Builds the kernels: PTX into native/build/ptx/ and the host (CPU test) library
# native/build/libneurontrace_kernels_host.so. Run from anywhere; the top-level build and CI call it before
# `dotnet test`, because the kernel tests load the host library.
#   NT_BUILD_JOBS   parallel jobs (default 2)
#   NT_PTX_COMPILER auto | clang | nvcc   (default auto: nvcc when on PATH, else clang)
#   CXX             host C++ compiler (default clang++)
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
echo "kernels: $build/ptx/*.ptx, $build/libneurontrace_kernels_host.so"
