#!/usr/bin/python3
"""PyTorch mean-ablation sweep throughput (the evaluation side of circuit discovery).

    /usr/bin/python3 bench/torch_sweep.py --model PATH --batch 8 --seq 128 --masks 8 --iters 2
        [--masks-per-forward K] [--threads 2] [--torch-threads 1] [--device cpu|cuda] [--dtype f32|bf16]

Setup (not timed): B clean prompts and B patch prompts (random ids, seed 0); the ablation value of every
mlp_act unit is its mean over the B patch prompts, per position (mu[l] : [T, hidden]); M random keep-masks over
all mlp_act units, per layer and position (mask i keeps a fraction (i+1)/(M+1) of the units).
One iteration: for every mask, one forward over the B clean prompts in which every mlp_act unit that the mask does
not keep is replaced by mu (kept units keep whatever the partially ablated forward computes); the metric
logit[a]-logit[c] at the last position is read for every prompt. K masks can share one forward (batch K*B).
Only last-position logits are computed.

Prints one JSON line: {"prompt_forwards_per_s": B*M/seconds_per_iter, ...}.
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_llama import early_threads, DEFAULT_TORCH_THREADS  # noqa: E402

THREADS = early_threads(sys.argv)
import torch  # noqa: E402
from torch_llama import load_model, parse_dtype, time_iters, describe, cpu_seconds, load_average  # noqa: E402
from torch_attribution import make_pairs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--masks", type=int, default=8)
    ap.add_argument("--masks-per-forward", type=int, default=1)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=THREADS, help="OpenBLAS threads (cores for matrix products)")
    ap.add_argument("--torch-threads", type=int, default=DEFAULT_TORCH_THREADS,
                    help="torch intra-op threads (default 1, faster on this shared 2-core machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.torch_threads)
    dev = torch.device(a.device)
    dtype = parse_dtype(a.dtype)
    model = load_model(a.model, dtype=dtype, device=dev).eval()
    cfg = model.cfg
    B, T, M, K = a.batch, a.seq, a.masks, a.masks_per_forward
    if M % K:
        sys.exit("--masks must be a multiple of --masks-per-forward")
    clean, patch, ans_p, ans_c = make_pairs(cfg.vocab, B, T, dev)

    # mean of every mlp_act unit over the patch prompts
    mu = {}

    def grab(name, layer, x):
        if name == "mlp_act":
            mu[layer] = x.mean(0, keepdim=True)  # [1, T, hidden]
        return None

    with torch.inference_mode():
        model.site_hook = grab
        model(patch, last_only=True)
    g = torch.Generator().manual_seed(1)
    masks = torch.stack([torch.rand(cfg.layers, T, cfg.hidden, generator=g) < (i + 1) / (M + 1) for i in range(M)])
    masks = masks.to(dev)  # [M, L, T, hidden] bool
    ids = clean.repeat(K, 1)  # [K*B, T]
    rows = torch.arange(K * B, device=dev)
    metric = torch.empty(M, B, device=dev)

    def run():
        for m0 in range(0, M, K):
            mk = masks[m0:m0 + K]  # [K, L, T, hidden]

            def ablate(name, layer, x):
                if name != "mlp_act":
                    return None
                xv = x.view(K, B, T, -1)
                return torch.where(mk[:, layer, None], xv, mu[layer][None]).view_as(x)

            model.site_hook = ablate
            lg = model(ids, last_only=True)
            metric[m0:m0 + K] = (lg[rows, ans_p.repeat(K)] - lg[rows, ans_c.repeat(K)]).view(K, B)
        model.site_hook = None

    with torch.inference_mode():
        ts = time_iters(run, a.iters, a.warmup, dev)
    med = statistics.median(ts)
    print(json.dumps({
        "prompt_forwards_per_s": B * M / med,
        "seconds_per_iter": med,
        "best_prompt_forwards_per_s": B * M / min(ts),
        "cpu_seconds_per_iter": cpu_seconds(),
        "load_average_1min": load_average(),
        "config": describe(dev, a.threads, f"path F.linear, inference_mode, {a.dtype}, {M} masks x {B} prompts per iter, "
                                          f"{K} mask(s) per forward, model {os.path.basename(a.model.rstrip('/'))} "
                                          f"dim {cfg.dim}, seq {T}, {a.iters} timed iters after {a.warmup} warm-up; median and best reported"),
    }))


if __name__ == "__main__":
    main()
