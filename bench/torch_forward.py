#!/usr/bin/python3
"""PyTorch forward-pass throughput: logits at every position for a batch of random token ids.

    /usr/bin/python3 bench/torch_forward.py --model PATH --batch 8 --seq 128 --iters 5 [--threads 2] [--torch-threads 1]
        [--device cpu|cuda] [--dtype f32|bf16] [--path auto|linear|mkldnn] [--warmup 1]

--path linear : nn.Linear / F.linear (CPU: the BLAS torch is linked against, here OpenBLAS)
--path mkldnn : every Linear swapped for torch.utils.mkldnn.MkldnnLinear (oneDNN inner product); torch's
                intra-op pool is set to --threads for this path, since oneDNN runs on it
--path auto   : time both on CPU (interleaved iterations) and report the faster by median (both are in "paths")

Prints one JSON line. tokens_per_s = batch*seq / seconds_per_iter (median of the timed iterations).
linear_gflops: the model's linear layers (q,k,v,o,gate,up,down, lm_head) run alone on batch*seq rows.
linear_gflops_in_forward: the same FLOPs divided by the whole forward's time (a lower bound).
"""
import argparse
import copy
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_llama import early_threads, DEFAULT_TORCH_THREADS  # noqa: E402  (sets OPENBLAS/OMP threads before torch starts them)

THREADS = early_threads(sys.argv)
import torch  # noqa: E402
from torch_llama import load_model, parse_dtype, time_iters, describe, cpu_seconds, load_average  # noqa: E402


def linear_modules(model):
    mods = []
    for blk in model.layers:
        mods += [blk.q_proj, blk.k_proj, blk.v_proj, blk.o_proj, blk.gate_proj, blk.up_proj, blk.down_proj]
    return mods + [model.lm_head]


def linear_only(model, rows, dtype, device, iters, warmup):
    """Seconds for one pass of every linear layer of the model on `rows` random rows (input widths as in the model)."""
    cfg = model.cfg
    xs = {w: torch.randn(rows, w, dtype=dtype, device=device) for w in (cfg.dim, cfg.heads * cfg.head_dim, cfg.hidden)}
    mods = linear_modules(model)
    widths = []
    for blk in model.layers:
        widths += [cfg.dim] * 3 + [cfg.heads * cfg.head_dim] + [cfg.dim] * 2 + [cfg.hidden]
    widths.append(cfg.dim)

    def run():
        for m, w in zip(mods, widths):
            m(xs[w])
    return statistics.median(time_iters(run, iters, warmup, device))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=THREADS, help="OpenBLAS threads (cores for matrix products)")
    ap.add_argument("--torch-threads", type=int, default=DEFAULT_TORCH_THREADS,
                    help="torch intra-op threads (default 1, faster on this shared 2-core machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--path", default="auto", choices=["auto", "linear", "mkldnn"])
    a = ap.parse_args()
    torch.set_num_threads(a.torch_threads)
    dtype = parse_dtype(a.dtype)
    dev = torch.device(a.device)
    model = load_model(a.model, dtype=dtype, device=dev).eval()
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab, (a.batch, a.seq), generator=g).to(dev)
    rows = a.batch * a.seq
    flops = 2.0 * rows * cfg.linear_params(include_head=True)

    paths = ["linear"] if (a.path == "linear" or dev.type != "cpu") else (["mkldnn"] if a.path == "mkldnn" else ["linear", "mkldnn"])
    models = {"linear": model} if "linear" in paths else {}
    if "mkldnn" in paths:
        models["mkldnn"] = (copy.deepcopy(model) if "linear" in paths else model).to_mkldnn_linears(dtype)
    # oneDNN runs on torch's OpenMP pool, so that path gets --threads OpenMP threads; F.linear runs on OpenBLAS's
    threads_for = {"linear": a.torch_threads, "mkldnn": a.threads}
    walls = {p: [] for p in paths}
    cpus = {p: [] for p in paths}
    with torch.inference_mode():
        for p in paths:  # warm-up
            torch.set_num_threads(threads_for[p])
            time_iters(lambda: models[p](ids), 0, a.warmup, dev)
        for _ in range(a.iters):  # interleaved, so that both paths see the same background load
            for p in paths:
                torch.set_num_threads(threads_for[p])
                walls[p] += time_iters(lambda: models[p](ids), 1, 0, dev)
                cpus[p].append(cpu_seconds())
        res = {}
        for p in paths:
            torch.set_num_threads(threads_for[p])
            lin = linear_only(models[p], rows, dtype, dev, max(2, a.iters // 2), 1)
            res[p] = {"seconds_per_iter": statistics.median(walls[p]), "min_seconds": min(walls[p]),
                      "cpu_seconds": statistics.median(cpus[p]), "linear_gflops": flops / lin / 1e9,
                      "torch_threads": threads_for[p]}
    # the faster path by median time over interleaved iterations
    best = min(res, key=lambda p: res[p]["seconds_per_iter"])
    torch.set_num_threads(threads_for[best])
    r = res[best]
    path_desc = {"linear": "F.linear (CPU BLAS)" if dev.type == "cpu" else "F.linear (cuBLAS)",
                 "mkldnn": "oneDNN MkldnnLinear (torch.utils.mkldnn)"}[best]
    out = {
        "tokens_per_s": rows / r["seconds_per_iter"],
        "seconds_per_iter": r["seconds_per_iter"],
        "min_seconds_per_iter": r["min_seconds"],
        "best_tokens_per_s": rows / r["min_seconds"],
        "cpu_seconds_per_iter": r["cpu_seconds"],
        "load_average_1min": load_average(),
        "linear_gflops": r["linear_gflops"],
        "linear_gflops_in_forward": flops / r["seconds_per_iter"] / 1e9,
        "linear_gflop_per_iter": flops / 1e9,
        "paths": {p: {k: round(v, 5) for k, v in d.items()} for p, d in res.items()},
        "config": describe(dev, a.threads, f"path {path_desc} (fastest of {'/'.join(paths)}), {a.dtype}, "
                                          f"inference_mode, model {os.path.basename(a.model.rstrip('/'))} "
                                          f"dim {cfg.dim} layers {cfg.layers} vocab {cfg.vocab}, batch {a.batch}, "
                                          f"seq {a.seq}, {a.iters} timed iters after {a.warmup} warm-up; median and best reported"),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
