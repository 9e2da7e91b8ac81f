#!/usr/bin/env bash
# Runs on the GPU machine, from the bundle root (gpu-bundle/), everything in one call: PTX with nvcc, the CUDA-vs-CPU
# whole-model checks (stories260K, the synthetic model), the same under compute-sanitizer memcheck, and the GPU
# benchmark on Llama-3.1-8B-shaped random weights against PyTorch eager on the same GPU.
# Each step has its own time limit and a failing step does not stop the next: one call must report everything.
# Big files (models, PTX) stay in NT_OUT (default /tmp/nt-out); only logs go to $OUT when the device tool sets it.
#   GPU_ALL_SKIP_BENCH=1   checks only
#   GPU_ALL_INITCHECK=1   also compute-sanitizer initcheck (slow: minutes)
#   NEURONTRACE_CUDA_PROFILE=0   no per-op profile after each timed configuration (on by default here)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NT_OUT="${NT_OUT:-/tmp/nt-out}"; mkdir -p "$NT_OUT"
logs="${OUT:-$NT_OUT}"
status=0
step() {  # step SECONDS LABEL CMD...: runs CMD under a time limit, records failure, never aborts the script
  local limit="$1" label="$2"; shift 2
  local t0=$SECONDS
  echo "=== $label (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "=== $label: exit $rc after $((SECONDS - t0))s"
  if [ $rc -ne 0 ]; then status=1; fi
}

nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
step 120 "PTX with nvcc" bash scripts/gpu/run-gpu.sh ptx
step 60 "ptxas on nvcc's PTX" bash scripts/gpu/run-gpu.sh ptxas
bash scripts/gpu/run-gpu.sh env
step 60 "synthetic model" python3 bench/make_synthetic_model.py --out "$NT_OUT/synthetic-1024"
step 200 "CUDA vs CPU" bash scripts/gpu/run-gpu.sh run -- bin/NeuronTrace.Bench gpu-check models/stories260K/stories260K.bin "$NT_OUT/synthetic-1024"
step 150 "memcheck" bash scripts/gpu/run-gpu.sh memcheck -- bin/NeuronTrace.Bench gpu-check models/stories260K/stories260K.bin
# initcheck is opt-in: it needs minutes, and on the H100 it flags RoPE's reads of Q/K that cuBLAS wrote (its Hopper
# kernels' stores seem invisible to it), although the same forward matches the CPU to 1e-6.
if [ "${GPU_ALL_INITCHECK:-0}" = 1 ]; then
  step 300 "initcheck" bash scripts/gpu/run-gpu.sh initcheck -- bin/NeuronTrace.Bench gpu-check models/stories260K/stories260K.bin
fi
cp "$NT_OUT"/memcheck.*.txt "$NT_OUT"/initcheck.*.txt "$logs/" 2>/dev/null || true
if [ "${GPU_ALL_SKIP_BENCH:-0}" != 1 ]; then
  step 120 "Llama-3.1-8B-shaped weights" python3 bench/make_synthetic_model.py --out "$NT_OUT/llama8b" --preset llama3.1-8b --dtype bf16 --device cuda
  NEURONTRACE_CUDA_PROFILE="${NEURONTRACE_CUDA_PROFILE:-1}" step 240 "NeuronTrace GPU bench" bash scripts/gpu/run-gpu.sh run -- bin/NeuronTrace.Bench gpu-bench "$NT_OUT/llama8b" 8 64
  step 90 "PyTorch attribution" python3 bench/torch_attribution.py --model "$NT_OUT/llama8b" --batch 8 --seq 64 --iters 3 --device cuda --dtype bf16
  step 90 "PyTorch sweep" python3 bench/torch_sweep.py --model "$NT_OUT/llama8b" --batch 8 --seq 64 --masks 4 --masks-per-forward 4 --iters 2 --device cuda --dtype bf16
fi
echo "=== gpu-all: exit $status"
exit $status
