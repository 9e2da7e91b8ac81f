#!/usr/bin/env bash
# Every GPU test and benchmark in ONE device call of at most 8 minutes, from the bundle root (gpu-bundle/, made by
# scripts/gpu/build-bundle.sh; on the device: tar xf gpu-bundle.tar.xz && bash gpu-bundle/scripts/gpu/gpu-all.sh).
# Sections, most important first, each under its own time limit and all under one budget (GPU_ALL_BUDGET_S, default
# 450 s: a section gets min(its limit, what is left), and one that would start with under 15 s left is skipped, said so):
#   ptxas          every shipped PTX assembled for this GPU (what the driver's JIT would reject)
#   bench          NeuronTrace: RelP attribution, Llama-3.1-8B shapes with random bf16 weights made in-process,
#                  batch 8 x 64, all sites, >= 10 timed passes (median, best), the event-timed per-op table
#   torch          PyTorch eager on the same work (same shape, sites, batch, rules), same run, then the ratio line
#   kernel-tests   the kernel tests (tests/Runtime.Tests/Kernels) as a self-contained executable, every "gpu" case on the device
#   gpu-check      CUDA vs CPU: stories260K and a 2-layer model of 8B width (logits, gradients, whole-pass scores)
#   long-prompt    8B shapes, batch 1 x 8192 and 2048, RelP, all sites, as the memory plan fits it; PyTorch SDPA beside it
#   bench-graphs   the bench again with CUDA graphs (NEURONTRACE_CUDA_GRAPHS=1)
#   memcheck       compute-sanitizer memcheck on stories260K
#   nsys           an Nsight Systems trace (NVTX op ranges) of a short bench, report under $OUT   (if nsys is there)
#   ncu            Nsight Compute on the top kernels, report under $OUT                           (GPU_ALL_NCU=1)
# Without a GPU (no nvidia-smi, or GPU_ALL_DRY_RUN=1) every GPU section prints a SKIP line, and what runs on a CPU runs
# instead (the published executables start: the launch ledger, the kernel tests' host cases). The exit status is
# non-zero only when a section that ran failed. Logs and reports go to $OUT (the device tool's) or $NT_OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export NT_OUT="${NT_OUT:-/tmp/nt-out}"; mkdir -p "$NT_OUT"
logs="${OUT:-$NT_OUT}"; mkdir -p "$logs"
budget="${GPU_ALL_BUDGET_S:-450}"
py="${PYTHON:-python3}"
start=$SECONDS
status=0
gpu=1
if [ "${GPU_ALL_DRY_RUN:-0}" = 1 ] || ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then gpu=0; fi

# the product's PTX (clang's, shipped in bin/ptx) and the host kernel library the kernel tests' host cases load
export NEURONTRACE_PTX_DIR="${NEURONTRACE_PTX_DIR:-$PWD/bin/ptx}"
export NT_KERNELS_HOST_LIB="${NT_KERNELS_HOST_LIB:-$PWD/tests-bin/libneurontrace_kernels_host.so}"
if [ $gpu = 1 ]; then export NEURONTRACE_REQUIRE_GPU=1; fi
extra="$(bash scripts/gpu/run-gpu.sh cublas-dirs 2>/dev/null | paste -sd: -)"
if [ -n "$extra" ]; then export LD_LIBRARY_PATH="$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi

# section NAME LIMIT NEEDS CMD...: NEEDS is "gpu" or "cpu" (runs in a dry run too). Runs CMD under min(LIMIT, budget
# left), its output to the terminal and $logs/NAME.log; prints the budget line; a failure sets the exit status.
section() {
  local name="$1" limit="$2" needs="$3"; shift 3
  local used=$((SECONDS - start)) left
  left=$((budget - used))
  if [ "$needs" = gpu ] && [ $gpu = 0 ]; then
    echo "=== SKIP $name: no GPU here (dry run)"; return 0
  fi
  if [ $left -lt 15 ]; then
    echo "=== SKIP $name: budget spent (${used}s of ${budget}s)"; return 0
  fi
  if [ "$limit" -gt "$left" ]; then limit=$left; fi
  echo "=== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
  local rc=${PIPESTATUS[0]}
  [ $rc -ne 0 ] && status=1
  echo "=== budget: $name exit $rc after $((SECONDS - t0))s (limit ${limit}s); $((SECONDS - start))s of ${budget}s used"
  return 0
}

bench=(bin/NeuronTrace.Bench)
shape=(--shape llama3-8b --batch 8 --seq 64)
if [ $gpu = 1 ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader | tee "$logs/gpu.txt"
else
  echo "=== no GPU: dry run (GPU sections skip; CPU-capable ones run)"
fi

section ptxas 30 gpu bash scripts/gpu/run-gpu.sh ptxas
section bench 150 gpu "${bench[@]}" gpu-bench "${shape[@]}" --passes 10 --math bf16
section torch 90 gpu "$py" bench/torch_attribution.py "${shape[@]}" --iters 10 --warmup 2 --device cuda --dtype bf16
if [ -s "$logs/bench.log" ] && [ -s "$logs/torch.log" ]; then
  "$py" - "$logs/bench.log" "$logs/torch.log" <<'PY' | tee "$logs/ratio.txt" || status=1
import json, sys
def last_json(path, key):
    rows = [json.loads(l) for l in open(path) if l.startswith("{") and key in l]
    return rows[-1] if rows else None
nt, pt = last_json(sys.argv[1], '"bench": "neurontrace"'), last_json(sys.argv[2], "pairs_per_s")
if not nt or not pt:
    sys.exit("ratio: a side printed no result (see bench.log / torch.log)")
print(f"ratio: NeuronTrace {nt['pairs_per_s']:.2f} pairs/s (median {nt['median_ms']:.1f} ms, best {nt['best_ms']:.1f} ms) vs "
      f"PyTorch eager {pt['pairs_per_s']:.2f} pairs/s (median {pt['median_ms']:.1f} ms, best {pt['best_ms']:.1f} ms): "
      f"{nt['pairs_per_s'] / pt['pairs_per_s']:.2f}x (goal >= 1.5x), same card, same run")
PY
fi
if [ $gpu = 1 ]; then
  section kernel-tests 75 gpu tests-bin/NeuronTrace.GpuKernelTests
else
  # the executable starts and its host cases pass (a small class: the whole host set takes minutes on a CPU)
  section kernel-tests 120 cpu tests-bin/NeuronTrace.GpuKernelTests -class NeuronTrace.Runtime.Tests.Kernels.ElementwiseKernelTests
fi
section gpu-check 90 gpu "${bench[@]}" gpu-check models/stories260K/stories260K.bin --shape llama3-8b --layers 2
# ---- long prompts (issue 14) -------------------------------------------------------------------------------------
# RelP, all sites, Llama-3.1-8B shapes with random bf16 weights, batch 1 x 8192 and x 2048: the batch and activation
# checkpointing the memory plan chooses for this card's free memory (printed with the plan), peak device memory and
# time per pass; PyTorch SDPA (bf16, torch.nn.functional.scaled_dot_product_attention) on the same work in this run,
# one process per length (an out-of-memory is a result, not a failure); then one comparison line per length.
# Without a GPU the same code runs on the recording runtime at one layer (the path starts; nothing executes).
section long-prompt 150 gpu "${bench[@]}" gpu-long-prompt --shape llama3-8b --lengths 8192,2048 --batch 1 --passes 2
for t in 8192 2048; do
  section long-prompt-torch-$t 75 gpu "$py" bench/torch_attribution.py --shape llama3-8b --batch 1 --seq $t --iters 2 --warmup 1 \
    --device cuda --dtype bf16 --attention sdpa
done
if [ -s "$logs/long-prompt.log" ]; then
  "$py" - "$logs" <<'PY' | tee "$logs/long-prompt.txt" || status=1
import json, os, sys
logs = sys.argv[1]
rows = lambda path: [json.loads(l) for l in open(path) if l.startswith("{")] if os.path.exists(path) else []
ours = {r["seq"]: r for r in rows(os.path.join(logs, "long-prompt.log")) if r.get("bench") == "neurontrace-long-prompt"}
if not ours:
    sys.exit("long-prompt: NeuronTrace printed no result (see long-prompt.log)")
for t, nt in sorted(ours.items()):
    pt = (rows(os.path.join(logs, f"long-prompt-torch-{t}.log")) or [None])[-1]
    if nt.get("refused"):
        left = "NeuronTrace: refused by the plan"
    else:
        left = (f"NeuronTrace {nt['median_ms']:.0f} ms/pass, peak {nt['peak_device_gb']:.1f} GB (plan {nt['plan_gb']:.1f} GB), "
                f"checkpointing {'on' if nt['checkpoint'] else 'off'}")
    if pt is None:
        right = "PyTorch SDPA: no result (see its log)"
    elif pt.get("oom"):
        right = f"PyTorch SDPA: out of memory (peak allocated {pt['peak_cuda_mb'] / 1024:.1f} GB)"
    else:
        right = f"PyTorch SDPA {pt['median_ms']:.0f} ms/pass, peak allocated {pt['peak_cuda_mb'] / 1024:.1f} GB"
        if not nt.get("refused"):
            right += f"; time ratio {pt['median_ms'] / nt['median_ms']:.2f}x, memory ratio {pt['peak_cuda_mb'] / 1024 / nt['peak_device_gb']:.2f}x"
    print(f"long prompt T={t}, batch 1, RelP, all sites, 8B shapes, bf16: {left} | {right}")
PY
fi
if [ $gpu = 0 ]; then
  section long-prompt-record 120 cpu "${bench[@]}" gpu-long-prompt --record --layers 1 --lengths 1024 --passes 1
fi
# ---- end of long prompts ------------------------------------------------------------------------------------------
section ledger 60 cpu "${bench[@]}" gpu-plan --shape llama3-8b --layers 2 --graphs on
NEURONTRACE_CUDA_GRAPHS=1 section bench-graphs 90 gpu "${bench[@]}" gpu-bench "${shape[@]}" --passes 10 --math bf16
section memcheck 45 gpu bash scripts/gpu/run-gpu.sh memcheck -- "${bench[@]}" gpu-check models/stories260K/stories260K.bin
cp "$NT_OUT"/memcheck.*.txt "$logs/" 2>/dev/null || true
if command -v nsys >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nsys ]; then
  section nsys 75 gpu bash scripts/gpu/run-gpu.sh nsys -- "${bench[@]}" gpu-bench --shape llama3-8b --layers 4 --batch 8 --seq 64 --passes 2 --math bf16
  cp "$NT_OUT"/trace.nsys-rep "$logs/" 2>/dev/null || true
else
  echo "=== SKIP nsys: not installed"
fi
if [ "${GPU_ALL_NCU:-0}" = 1 ]; then
  section ncu 60 gpu bash scripts/gpu/run-gpu.sh ncu -- "${bench[@]}" gpu-bench --shape llama3-8b --layers 2 --batch 8 --seq 64 --passes 1 --math bf16
  cp "$NT_OUT"/top-kernels.ncu-rep "$logs/" 2>/dev/null || true
else
  echo "=== SKIP ncu: opt-in (GPU_ALL_NCU=1)"
fi
echo "=== gpu-all: exit $status after $((SECONDS - start))s of ${budget}s"
exit $status
