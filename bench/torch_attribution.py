#!/usr/bin/python3
"""PyTorch attribution-patching throughput (AtP or RelP) over node sites of every layer.

    /usr/bin/python3 bench/torch_attribution.py (--model PATH | --shape llama3-8b [--layers L]) --batch 8 --seq 128
        --iters 3 [--method atp|relp|relp_frozen_attn] [--threads 2] [--torch-threads 1] [--device cpu|cuda]
        [--dtype f32|bf16] [--attention eager|chunked|sdpa] [--chunk 256] [--sites resid,attn,attn_z,mlp_out,mlp_act]

--shape builds the model in-process with random weights (normal, std 0.02; norms 1) on the device, in --dtype: the
GPU benchmark's Llama-3.1-8B-shaped model without a 16 GB file (NeuronTrace's gpu-bench makes its own the same way).

One iteration, for B prompt pairs (random ids, seed 0; the patch prompt is the clean prompt with one token
changed at a random position; answers are two random distinct ids per pair):
  1. clean forward with autograd, keeping every site tensor (resid, attn, mlp_out, mlp_act of every layer);
  2. patch forward (no autograd), keeping the same sites;
  3. one backward of  metric = sum_b logit[b, T-1, a_b] - logit[b, T-1, c_b]  to the gradient at every site
     (torch.autograd.grad on the site tensors);
  4. scores = (a_patch - a_clean) * grad at every site, averaged over the batch per position and copied to the host
     (NeuronTrace's pass ends the same way: per-position means of every site, read back once).
The sites are NeuronTrace's five (resid, attn, attn_z, mlp_out, mlp_act) unless --sites names a subset (comma-separated,
each at most once), so that both sides score the same nodes: the 1B-shape benchmark passes the four its own side scores.
--method atp uses ordinary gradients; relp detaches the RMSNorm scales and applies the SwiGLU identity + half rule
(softmax gets ordinary gradients); relp_frozen_attn also detaches the attention pattern.
Only the last position's logits are computed (the metric needs nothing else).

--attention: eager (default) materialises the [B, H, T, T] pattern, which autograd keeps for the backward; chunked
is torch_llama.chunked_attention (blocks of --chunk queries, each under torch.utils.checkpoint: the pattern is
recomputed a block at a time in the backward), the strongest memory-efficient attention a torch without SDPA has;
sdpa is torch.nn.functional.scaled_dot_product_attention (torch 2.0+; refused with one line where it is missing).
A CUDA out-of-memory ends the run with a JSON line {"oom": true, ...} and exit status 0 (a measured outcome).

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
from torch_llama import ATTENTION, HAS_SDPA, LlamaConfig, LlamaModel, Rules, load_model, parse_dtype, time_iters, describe, cpu_seconds, load_average  # noqa: E402
from torch_llama import chunked_attention  # noqa: E402

SITES = ("resid", "attn", "attn_z", "mlp_out", "mlp_act")
SHAPES = {"llama3-8b": dict(dim=4096, layers=32, heads=32, kv_heads=8, hidden=14336, vocab=128256, rope_theta=500000.0,
                            max_positions=8192)}
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


def random_model(shape, layers, dtype, device):
    """The named shape with random weights made on the device: normal(0, 0.02) matrices, unit norm scales."""
    cfg = LlamaConfig(**{**SHAPES[shape], **({"layers": layers} if layers else {})})
    m = LlamaModel(cfg, device="meta", dtype=dtype).to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    return m


def parse_sites(text):
    """--sites: a comma-separated subset of SITES, each at most once, in SITES order; one clear line otherwise."""
    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if n not in SITES]
    if bad or not names or len(set(names)) != len(names):
        sys.exit(f"torch_attribution.py: --sites {text[:60]!r}: expected distinct names from {','.join(SITES)}")
    return tuple(n for n in SITES if n in names)


def attribution_step(model, rules, clean, patch, ans_patch, ans_clean, to_host=False, sites=SITES):
    """Returns {(site, layer): scores [B, T, n]}."""
    store = {}

    def keep(name, layer, x):
        if name in sites:
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
        scores = {k: (patch_sites[k] - store[k].detach()).mul_(g) for k, g in zip(keys, grads)}
        if to_host:
            # per-position means over the batch, one copy to the host (what NeuronTrace's readout gives); past 2^28
            # scores (long prompts) one copy per site and layer, so the fp32 means are never all on the device at once
            if sum(v[0].numel() for v in scores.values()) <= 1 << 28:
                flat = torch.cat([v.float().mean(0).reshape(v.shape[1], -1) for v in scores.values()], dim=1)
                flat.cpu()
            else:
                for v in scores.values():
                    v.float().mean(0).cpu()
        return scores


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model")
    src.add_argument("--shape", choices=sorted(SHAPES), help="random weights of this shape, made in-process")
    ap.add_argument("--layers", type=int, default=0, help="with --shape: this many layers (default: the shape's)")
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
    ap.add_argument("--attention", default="eager", choices=sorted(ATTENTION))
    ap.add_argument("--chunk", type=int, default=256, help="with --attention chunked: queries per block (1 .. 65536)")
    ap.add_argument("--sites", default=",".join(SITES), help="comma-separated subset of the sites scored (default all five)")
    a = ap.parse_args()
    sites = parse_sites(a.sites)
    if not 1 <= a.chunk <= 65536:
        sys.exit(f"torch_attribution.py: --chunk {a.chunk}: must be 1 .. 65536")
    if a.attention == "sdpa" and not HAS_SDPA:
        sys.exit(f"torch_attribution.py: --attention sdpa: torch {torch.__version__} has no "
                 "torch.nn.functional.scaled_dot_product_attention (2.0+); use --attention chunked")
    torch.set_num_threads(a.torch_threads)
    dev = torch.device(a.device)
    if a.shape:
        model = random_model(a.shape, a.layers, parse_dtype(a.dtype), dev).eval()
    else:
        model = load_model(a.model, dtype=parse_dtype(a.dtype), device=dev).eval()
    if a.attention == "chunked":
        model.attention = lambda q, k, v, frozen: chunked_attention(q, k, v, frozen, chunk=a.chunk)
    else:
        model.attention = ATTENTION[a.attention]
    attention_label = {"eager": "eager attention (the [B, H, T, T] pattern kept for the backward)",
                       "chunked": f"chunked attention, SDPA stand-in (torch {torch.__version__} has no SDPA): blocks of "
                                  f"{a.chunk} queries under torch.utils.checkpoint",
                       "sdpa": "torch.nn.functional.scaled_dot_product_attention (causal)"}[a.attention]
    to_host = dev.type == "cuda"
    cfg = model.cfg
    clean, patch, ap_, ac_ = make_pairs(cfg.vocab, a.batch, a.seq, dev)
    rules = METHODS[a.method]
    try:
        ts = time_iters(lambda: attribution_step(model, rules, clean, patch, ap_, ac_, to_host, sites), a.iters, a.warmup, dev)
        # the scores' count from shapes (a second step would hold its scores beside the first's on the device)
        n_scores = a.batch * a.seq * sum(cfg.hidden if s == "mlp_act" else cfg.dim for s in sites) * cfg.layers
    except RuntimeError as e:
        if "out of memory" not in str(e):
            raise
        print(json.dumps({"oom": True, "attention": a.attention, "batch": a.batch, "seq": a.seq,
                          "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
                          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                          "error": str(e).splitlines()[0][:200],
                          "config": describe(dev, a.threads, f"method {a.method}, {attention_label}, {a.dtype}")}))
        return
    med = statistics.median(ts)
    print(json.dumps({
        "pairs_per_s": a.batch / med,
        "median_ms": 1e3 * med,
        "best_ms": 1e3 * min(ts),
        "passes": len(ts),
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
        "seconds_per_iter": med,
        "best_pairs_per_s": a.batch / min(ts),
        "cpu_seconds_per_iter": cpu_seconds(),
        "load_average_1min": load_average(),
        "scores_per_iter": n_scores,
        # ru_maxrss is in KiB on Linux: the process's peak resident memory (model, activations, autograd).
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "attention": a.attention,
        "config": describe(dev, a.threads, f"method {a.method}, path F.linear + autograd, {attention_label}, {a.dtype}, sites "
                                          f"{'/'.join(sites)} x {cfg.layers} layers, model "
                                          f"{a.shape or os.path.basename(a.model.rstrip('/'))} dim {cfg.dim}, batch {a.batch} pairs, "
                                          f"seq {a.seq}, {a.iters} timed iters after {a.warmup} warm-up; median and best reported"),
    }))


if __name__ == "__main__":
    main()
