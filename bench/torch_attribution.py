#!/usr/bin/python3
"""PyTorch attribution-patching throughput (AtP or RelP) over node sites of every layer.

    /usr/bin/python3 bench/torch_attribution.py --model PATH --batch 8 --seq 128 --iters 3
        [--method atp|relp|relp_frozen_attn] [--threads 2] [--torch-threads 1] [--device cpu|cuda] [--dtype f32|bf16]

One iteration, for B prompt pairs (random ids, seed 0; the patch prompt is the clean prompt with one token
changed at a random position; answers are two random distinct ids per pair):
  1. clean forward with autograd, keeping every site tensor (resid, attn, mlp_out, mlp_act of every layer);
  2. patch forward (no autograd), keeping the same sites;
  3. one backward of  metric = sum_b logit[b, T-1, a_b] - logit[b, T-1, c_b]  to the gradient at every site
     (torch.autograd.grad on the site tensors);
  4. scores = (a_patch - a_clean) * grad at every site.
--method atp uses ordinary gradients; relp detaches the RMSNorm scales and applies the SwiGLU identity + half rule
(softmax gets ordinary gradients); relp_frozen_attn also detaches the attention pattern.
Only the last position's logits are computed (the metric needs nothing else).

Prints one JSON line: {"pairs_per_s", "seconds_per_iter", ...}.
"""
import argparse
import resource
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_llama import early_threads, DEFAULT_TORCH_THREADS  # noqa: E402

THREADS = early_threads(sys.argv)
import torch  # noqa: E402
from torch_llama import Rules, load_model, parse_dtype, time_iters, describe, cpu_seconds, load_average  # noqa: E402

SITES = ("resid", "attn", "mlp_out", "mlp_act")
METHODS = {"atp": Rules.EXACT, "relp": Rules.RELP, "relp_frozen_attn": Rules.RELP_FROZEN_ATTN}


def make_pairs(vocab, B, T, device):
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, vocab, (B, T), generator=g)
    patch = clean.clone()
    pos = torch.randint(1, T, (B,), generator=g)
    shift = torch.randint(1, vocab, (B,), generator=g)
    patch[torch.arange(B), pos] = (clean[torch.arange(B), pos] + shift) % vocab
    a = torch.randint(0, vocab, (B,), generator=g)
    c = (a + torch.randint(1, vocab, (B,), generator=g)) % vocab
    return clean.to(device), patch.to(device), a.to(device), c.to(device)


def attribution_step(model, rules, clean, patch, ans_patch, ans_clean):
    """Returns {(site, layer): scores [B, T, n]}."""
    store = {}

    def keep(name, layer, x):
        if name in SITES:
            store[(name, layer)] = x
        return None

    model.site_hook = keep
    with torch.no_grad():
        model(patch, rules, last_only=True)
    patch_sites, store = store, {}
    with torch.enable_grad():
        logits = model(clean, rules, last_only=True, embed_requires_grad=True)
        b = torch.arange(clean.shape[0], device=clean.device)
        metric = (logits[b, ans_patch] - logits[b, ans_clean]).sum()
        keys = list(store)
        grads = torch.autograd.grad(metric, [store[k] for k in keys])
    model.site_hook = None
    with torch.no_grad():
        return {k: (patch_sites[k] - store[k].detach()).mul_(g) for k, g in zip(keys, grads)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--method", default="relp", choices=sorted(METHODS))
    ap.add_argument("--threads", type=int, default=THREADS, help="OpenBLAS threads (cores for matrix products)")
    ap.add_argument("--torch-threads", type=int, default=DEFAULT_TORCH_THREADS,
                    help="torch intra-op threads (default 1, faster on this shared 2-core machine)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    a = ap.parse_args()
    torch.set_num_threads(a.torch_threads)
    dev = torch.device(a.device)
    model = load_model(a.model, dtype=parse_dtype(a.dtype), device=dev).eval()
    cfg = model.cfg
    clean, patch, ap_, ac_ = make_pairs(cfg.vocab, a.batch, a.seq, dev)
    rules = METHODS[a.method]
    ts = time_iters(lambda: attribution_step(model, rules, clean, patch, ap_, ac_), a.iters, a.warmup, dev)
    sc = attribution_step(model, rules, clean, patch, ap_, ac_)
    n_scores = sum(v.numel() for v in sc.values())
    med = statistics.median(ts)
    print(json.dumps({
        "pairs_per_s": a.batch / med,
        "seconds_per_iter": med,
        "best_pairs_per_s": a.batch / min(ts),
        "cpu_seconds_per_iter": cpu_seconds(),
        "load_average_1min": load_average(),
        "scores_per_iter": n_scores,
        # ru_maxrss is in KiB on Linux: the process's peak resident memory (model, activations, autograd).
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "config": describe(dev, a.threads, f"method {a.method}, path F.linear + autograd, {a.dtype}, sites "
                                          f"{'/'.join(SITES)} x {cfg.layers} layers, model "
                                          f"{os.path.basename(a.model.rstrip('/'))} dim {cfg.dim}, batch {a.batch} pairs, "
                                          f"seq {a.seq}, {a.iters} timed iters after {a.warmup} warm-up; median and best reported"),
    }))


if __name__ == "__main__":
    main()
