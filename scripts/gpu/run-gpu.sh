#!/usr/bin/env bash
# run-gpu.sh — the GPU machine's half of NeuronTrace's checks. Run from the repository root of an unpacked bundle
# (native/kernels/ present; the published self-contained test/bench executables wherever the bundle puts them).
# That machine has nvcc, cuBLAS, compute-sanitizer, Nsight and PyTorch, and no dotnet.
#
#   scripts/gpu/run-gpu.sh ptx                 build PTX with nvcc into $NT_OUT/ptx (the modules CudaDevice loads)
#   scripts/gpu/run-gpu.sh ptxas               assemble every PTX (nvcc's and, if bundled, clang's native/build/ptx)
#                                              for this GPU with ptxas: catches PTX the driver JIT would reject
#   scripts/gpu/run-gpu.sh host-lib            build libneurontrace_kernels_host.so (the host-target tests need it)
#   scripts/gpu/run-gpu.sh env                 print the environment the commands below run with
#   scripts/gpu/run-gpu.sh run -- CMD...       run CMD with that environment (e.g. the published test executable)
#   scripts/gpu/run-gpu.sh memcheck -- CMD...  the same under compute-sanitizer memcheck (leaks too)
#   scripts/gpu/run-gpu.sh initcheck -- CMD... reads of device memory no one wrote (the forward allocates uninitialised)
#   scripts/gpu/run-gpu.sh racecheck -- CMD... shared-memory races (attention stages key tiles through shared memory)
#   scripts/gpu/run-gpu.sh synccheck -- CMD... barriers reached by part of a block / warp
#   scripts/gpu/run-gpu.sh nsys -- CMD...      an Nsight Systems trace with the NVTX op ranges, in $NT_OUT
#   scripts/gpu/run-gpu.sh ncu -- CMD...       Nsight Compute on the heaviest kernels (NT_NCU_KERNELS regex), in $NT_OUT
#   scripts/gpu/run-gpu.sh cublas-dirs         print the folders added to LD_LIBRARY_PATH for cuBLAS / NVTX
#   scripts/gpu/run-gpu.sh all [-- CMD...]     ptx, ptxas, host-lib, then CMD plain and under memcheck
#
# Environment: NT_OUT (default gpu-out/) for outputs and logs; NT_PTX_ARCH (default: this GPU's compute_XY);
# NVCC, CXX, COMPUTE_SANITIZER, NSYS to override tools. Every command's output is also appended to $NT_OUT/log.txt.
set -euo pipefail

root="$(pwd)"
if [ ! -d "$root/native/kernels" ]; then
  echo "run-gpu.sh: run me from the repository (bundle) root; $root/native/kernels is missing" >&2
  exit 2
fi
out="${NT_OUT:-$root/gpu-out}"
mkdir -p "$out"
log="$out/log.txt"
kernels="$root/native/kernels"

say() { echo "== $*" | tee -a "$log"; }

tool() {  # tool NAME ENVVAR: the command, from $ENVVAR, PATH or /usr/local/cuda/bin
  local name="$1" override="${!2:-}"
  if [ -n "$override" ]; then echo "$override"; return; fi
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  if [ -x "/usr/local/cuda/bin/$name" ]; then echo "/usr/local/cuda/bin/$name"; return; fi
  echo "run-gpu.sh: $name not found" >&2
  return 1
}

gpu_arch() {  # compute capability of GPU 0 as "90", or NT_PTX_ARCH's number
  if [ -n "${NT_PTX_ARCH:-}" ]; then echo "${NT_PTX_ARCH//[!0-9]/}"; return; fi
  local cc
  cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
  echo "${cc:-80}"
}

cublas_dir() {  # folders with libcublas.so.1x / libnvToolsExt when the loader would not find them (toolkit, pip wheels)
  if ldconfig -p 2>/dev/null | grep -q 'libcublas\.so\.1[123]'; then return; fi
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    if compgen -G "$d/libcublas.so.1*" >/dev/null; then echo "$d"; fi
  done
  python3 - <<'PY' 2>/dev/null || true
import os, nvidia
seen = set()
for root in nvidia.__path__:
    for dirpath, _, files in os.walk(root):
        if any(f.startswith(("libcublas.so.", "libcublasLt.so.", "libnvToolsExt.so.")) for f in files) and dirpath not in seen:
            seen.add(dirpath); print(dirpath)
PY
}

setup_env() {
  # kept when set (gpu-all.sh points them at the bundle's clang PTX and host library)
  export NEURONTRACE_PTX_DIR="${NEURONTRACE_PTX_DIR:-$out/ptx}"
  export NEURONTRACE_REQUIRE_GPU=1           # a GPU test that finds no GPU fails instead of returning early
  export NT_KERNELS_HOST_LIB="${NT_KERNELS_HOST_LIB:-$out/libneurontrace_kernels_host.so}"
  local extra
  extra="$(cublas_dir | paste -sd: -)"
  if [ -n "$extra" ]; then export LD_LIBRARY_PATH="$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
}

build_ptx() {
  local nvcc arch
  nvcc="$(tool nvcc NVCC)"
  arch="$(gpu_arch)"
  mkdir -p "$out/ptx"
  say "PTX with $nvcc for compute_$arch -> $out/ptx"
  for src in "$kernels"/*.cu; do
    local name
    name="$(basename "$src" .cu)"
    "$nvcc" -ptx -arch="compute_$arch" -std=c++17 -O3 -I"$kernels" -o "$out/ptx/$name.ptx" "$src" 2>&1 | tee -a "$log"
  done
}

check_ptxas() {  # every PTX (nvcc's, clang's in native/build/ptx, the loaded NEURONTRACE_PTX_DIR), in parallel
  local ptxas arch status=0 f
  ptxas="$(tool ptxas PTXAS)"
  arch="$(gpu_arch)"
  local files=()
  for f in "$out"/ptx/*.ptx "$root"/native/build/ptx/*.ptx "${NEURONTRACE_PTX_DIR:-/nonexistent}"/*.ptx; do
    [ -f "$f" ] && files+=("$f")
  done
  if [ ${#files[@]} -eq 0 ]; then say "ptxas: no PTX found"; return 1; fi
  local pids=() i
  for i in "${!files[@]}"; do
    "$ptxas" -arch="sm_$arch" -o /dev/null "${files[$i]}" >"$out/ptxas.$i.txt" 2>&1 &
    pids+=($!)
  done
  for i in "${!files[@]}"; do
    if wait "${pids[$i]}"; then say "ptxas ok: ${files[$i]}"; else say "ptxas FAILED: ${files[$i]}: $(head -c 400 "$out/ptxas.$i.txt")"; status=1; fi
    cat "$out/ptxas.$i.txt" >>"$log"; rm -f "$out/ptxas.$i.txt"
  done
  return $status
}

build_host_lib() {
  local cxx="${CXX:-g++}"
  say "host kernel library with $cxx -> $NT_KERNELS_HOST_LIB"
  "$cxx" -std=c++20 -O2 -fPIC -shared -fvisibility=hidden -I"$kernels" \
    -x c++ -include "$kernels/nt_host.h" "$kernels"/*.cu -x none "$root/native/host/nt_emulator.cpp" \
    -o "$NT_KERNELS_HOST_LIB" -lpthread 2>&1 | tee -a "$log"
}

run_logged() {  # run_logged LABEL CMD...: runs CMD, output to the terminal and the log, returns its status
  local label="$1"
  shift
  say "$label: $*"
  set +e
  "$@" 2>&1 | tee -a "$log"
  local status=${PIPESTATUS[0]}
  set -e
  say "$label: exit $status"
  return "$status"
}

sanitizer() {  # sanitizer TOOL CMD...
  local cs tool_name="$1"
  shift
  cs="$(tool compute-sanitizer COMPUTE_SANITIZER)"
  local opts=(--tool "$tool_name" --error-exitcode 99 --log-file "$out/$tool_name.%p.txt")
  if [ "$tool_name" = memcheck ]; then opts+=(--leak-check full); fi
  # exact-size allocations, so an access past a tensor's end is not hidden inside a pooled block
  NEURONTRACE_CUDA_POOL=off run_logged "$tool_name" "$cs" "${opts[@]}" "$@"
}

command_after_dashes() {  # prints the args after "--", one per line
  local seen=0
  for a in "$@"; do
    if [ $seen = 1 ]; then printf '%s\n' "$a"; elif [ "$a" = "--" ]; then seen=1; fi
  done
}

main() {
  local verb="${1:-all}"
  shift || true
  local cmd=()
  mapfile -t cmd < <(command_after_dashes "$@")
  setup_env
  case "$verb" in
    ptx) build_ptx ;;
    ptxas) check_ptxas ;;
    host-lib) build_host_lib ;;
    env) env | grep -E '^(NEURONTRACE_|NT_|LD_LIBRARY_PATH)' | sort ;;
    cublas-dirs) cublas_dir ;;
    run|memcheck|initcheck|racecheck|synccheck|nsys|ncu)
      if [ ${#cmd[@]} -eq 0 ]; then echo "run-gpu.sh $verb: give the command after --" >&2; exit 2; fi
      case "$verb" in
        run) run_logged run "${cmd[@]}" ;;
        nsys) run_logged nsys "$(tool nsys NSYS)" profile --trace=cuda,nvtx,cublas --force-overwrite=true -o "$out/trace" "${cmd[@]}" ;;
        # the products and the attention/score kernels, a few launches each (ncu replays every profiled launch)
        ncu) run_logged ncu "$(tool ncu NCU)" --kernel-name "regex:${NT_NCU_KERNELS:-gemm|sm90|attention_flash|accumulate_scores|swiglu}" \
               --launch-skip 20 --launch-count 12 --set basic --force-overwrite -o "$out/top-kernels" "${cmd[@]}" ;;
        *) sanitizer "$verb" "${cmd[@]}" ;;
      esac ;;
    all)
      local status=0
      nvidia-smi 2>&1 | tee -a "$log" || true
      build_ptx
      check_ptxas || status=1
      build_host_lib
      if [ ${#cmd[@]} -gt 0 ]; then
        run_logged run "${cmd[@]}" || status=1
        sanitizer memcheck "${cmd[@]}" || status=1
      else
        say "no command given after --: built and checked the PTX only"
      fi
      say "all: exit $status"
      return $status ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
}

main "$@"
