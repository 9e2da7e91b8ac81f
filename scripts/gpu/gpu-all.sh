#!/usr/bin/env bash
# Runs on the GPU machine, from the bundle root (gpu-bundle/), everything in one call: PTX with nvcc, the CUDA-vs-CPU
# whole-model checks (stories260K, the synthetic model), the same under compute-sanitizer memcheck, and the GPU
# benchmark on Llama-3.1-8B-shaped random weights against PyTorch eager on the same GPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NT_OUT="${NT_OUT:-$PWD/gpu-out}"; mkdir -p "$NT_OUT"
bash scripts/gpu/run-gpu.sh ptx
export NEURONTRACE_PTX_DIR="$NT_OUT/ptx"
python3 bench/make_synthetic_model.py --out "$NT_OUT/synthetic-1024" >/dev/null
bash scripts/gpu/run-gpu.sh run -- bin/NeuronTrace.Bench gpu-check models/stories260K/stories260K.bin "$NT_OUT/synthetic-1024"
bash scripts/gpu/run-gpu.sh memcheck -- bin/NeuronTrace.Bench gpu-check models/stories260K/stories260K.bin
python3 bench/make_synthetic_model.py --out "$NT_OUT/llama8b" --preset llama3.1-8b --dtype bf16 --device cuda >/dev/null
bash scripts/gpu/run-gpu.sh run -- bin/NeuronTrace.Bench gpu-bench "$NT_OUT/llama8b" 8 64
python3 bench/torch_attribution.py --model "$NT_OUT/llama8b" --batch 8 --seq 64 --iters 3 --device cuda --dtype bf16
python3 bench/torch_sweep.py --model "$NT_OUT/llama8b" --batch 8 --seq 64 --masks 4 --masks-per-forward 4 --iters 2 --device cuda --dtype bf16
