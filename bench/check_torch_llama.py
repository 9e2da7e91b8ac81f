#!/usr/bin/python3
"""Self-check of bench/torch_llama.py against the committed references (runs in a few seconds).

    /usr/bin/python3 bench/check_torch_llama.py [--hf-folder DIR]

1. stories260K .bin (interleaved RoPE) in float32 and float64 against golden/stories260K/*.logits.f32.
2. Optionally an HF folder made by `make_synthetic_model.py --from-llama2c` (rotate_half RoPE, hand-read
   safetensors) against the same golden logits.
3. Site activations and exact / relp / relp_frozen_attn gradients (float64) against tests/fixtures for every pair.
4. The long-prompt baselines' attentions (chunked_attention with blocks of 5 queries, and SDPA where this torch has
   it) against the eager attention: site activations and gradients of every rule, float64, GQA (stories260K has 8
   query heads on 4 KV heads).
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402
from torch_llama import HAS_SDPA, SITES, Rules, chunked_attention, load_model, sdpa_attention  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RULES = {"exact": Rules.EXACT, "relp": Rules.RELP, "relp_frozen_attn": Rules.RELP_FROZEN_ATTN}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf-folder")
    a = ap.parse_args()
    gj = json.load(open(os.path.join(ROOT, "golden/stories260K/golden.json")))
    models = [("bin f32", os.path.join(ROOT, "models/stories260K/stories260K.bin"), torch.float32),
              ("bin f64", os.path.join(ROOT, "models/stories260K/stories260K.bin"), torch.float64)]
    if a.hf_folder:
        models += [("hf f32", a.hf_folder, torch.float32), ("hf f64", a.hf_folder, torch.float64)]
    ok = True
    for label, path, dt in models:
        m = load_model(path, dt)
        worst = 0.0
        for pr in gj["prompts"]:
            ref = np.fromfile(os.path.join(ROOT, "golden/stories260K", pr["logits_file"]), dtype="<f4")
            with torch.no_grad():
                lg = m(torch.tensor([pr["tokens"]]))[0].double().numpy().ravel()
            worst = max(worst, float(np.abs(lg - ref).max()))
        print(f"golden logits, {label}: max |err| {worst:.2e}")
        ok &= worst < 1e-4

    fx = json.load(open(os.path.join(ROOT, "tests/fixtures/stories260K_attribution.json")))
    blob = open(os.path.join(ROOT, "tests/fixtures", fx["binary"]), "rb").read()
    arrs = {e["name"]: np.frombuffer(blob, "<f4", int(np.prod(e["shape"])), e["offset"]).reshape(e["shape"])
            for e in fx["arrays"]}
    m = load_model(models[1][1], torch.float64)
    worst = {"act": 0.0, **{r: 0.0 for r in RULES}}
    for p in fx["pairs"]:
        for rname, rules in RULES.items():
            store = {}
            m.site_hook = lambda n, l, x: store.__setitem__((n, l), x) if n in SITES else None
            with torch.enable_grad():
                lg = m(torch.tensor([p["clean_ids"]]), rules, embed_requires_grad=True)
                met = lg[0, -1, p["patch_answer_id"]] - lg[0, -1, p["clean_answer_id"]]
                keys = list(store)
                gs = torch.autograd.grad(met, [store[k] for k in keys])
            m.site_hook = None
            for k, g in zip(keys, gs):
                ref_g = arrs[f"pair{p['pair']}/grad/{rname}/{k[0]}/{k[1]}"]
                scale = max(1.0, float(np.abs(ref_g).max()))
                worst[rname] = max(worst[rname], float(np.abs(g[0].numpy() - ref_g).max()) / scale)
                if rname == "exact":
                    ref_a = arrs[f"pair{p['pair']}/clean/{k[0]}/{k[1]}"]
                    worst["act"] = max(worst["act"], float(np.abs(store[k][0].detach().numpy() - ref_a).max())
                                       / max(1.0, float(np.abs(ref_a).max())))
    for k, v in worst.items():
        print(f"fixtures, {'activations' if k == 'act' else 'gradients ' + k}: max scaled |diff| {v:.2e}")
        ok &= v < 1e-5

    def sites_and_grads(ids, rules):
        store = {}
        m.site_hook = lambda n, l, x: store.__setitem__((n, l), x) if n in SITES else None
        with torch.enable_grad():
            lg = m(ids, rules, embed_requires_grad=True)
            keys = list(store)
            gs = torch.autograd.grad(lg[0, -1, 7] - lg[0, -1, 9], [store[k] for k in keys])
        m.site_hook = None
        return {k: (store[k].detach(), g) for k, g in zip(keys, gs)}

    ids = torch.tensor([fx["pairs"][0]["clean_ids"]])
    variants = [("chunked (blocks of 5)", lambda q, k, v, f: chunked_attention(q, k, v, f, chunk=5))]
    if HAS_SDPA:
        variants.append(("sdpa", sdpa_attention))
    else:
        print(f"attention sdpa: not checked, torch {torch.__version__} has no scaled_dot_product_attention")
    for label, fn in variants:
        for rname, rules in RULES.items():
            if label == "sdpa" and rules.frozen_attn:
                continue
            m.attention = None
            ref = sites_and_grads(ids, rules)
            m.attention = fn
            got = sites_and_grads(ids, rules)
            m.attention = None
            err = max(float((got[k][i] - ref[k][i]).abs().max()) / max(1.0, float(ref[k][i].abs().max()))
                      for k in ref for i in (0, 1))
            print(f"attention {label}, {rname}: {ids.shape[1]} tokens, max scaled |diff| of sites and gradients vs eager {err:.2e}")
            ok &= err < 1e-10
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
