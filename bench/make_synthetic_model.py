#!/usr/bin/python3
"""Write a random-weight Hugging Face `LlamaForCausalLM` folder (config.json + model.safetensors).

The safetensors file is written by hand: u64 little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}} padded with spaces to a multiple of 8, then the tensor data.
Tensors are generated and written one at a time (large ones in row chunks), so memory stays low even for
the Llama-3.1-8B shape (16 GB in bf16).

Weights: normal(0, 0.02); RMSNorm weights 1 + normal(0, 0.02). Each tensor is seeded from (seed, tensor index),
so a given --seed and --device give the same file.

Examples:
    /usr/bin/python3 bench/make_synthetic_model.py --out /tmp/synth1024
    /usr/bin/python3 bench/make_synthetic_model.py --out /tmp/llama8b --preset llama3.1-8b [--device cuda]
    /usr/bin/python3 bench/make_synthetic_model.py --out /tmp/s260k_hf --from-llama2c models/stories260K/stories260K.bin
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np
import torch

PRESETS = {
    # Llama-3.2-1B's shape with untied random weights (1.5B parameters, 3.0 GB in bf16): the CPU benchmark at real size.
    "llama3.2-1b-shape": dict(dim=2048, layers=16, heads=32, kv_heads=8, hidden=8192, vocab=128256, dtype="bf16",
                              rope_theta=500000.0, max_pos=2048),
    "llama3.1-8b": dict(dim=4096, layers=32, heads=32, kv_heads=8, hidden=14336, vocab=128256, dtype="bf16",
                        rope_theta=500000.0, max_pos=131072,
                        rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192, "rope_type": "llama3"}),
}
ST_NAME = {"f32": "F32", "bf16": "BF16"}
CHUNK_ELEMS = 1 << 24  # 16M values per generated chunk


def tensor_list(a):
    """[(name, shape, kind)] in file order; kind is 'w' (std 0.02) or 'norm' (1 + noise)."""
    hd = a.dim // a.heads
    kv = a.kv_heads * hd
    out = [("model.embed_tokens.weight", [a.vocab, a.dim], "w")]
    for l in range(a.layers):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", [a.dim], "norm"),
                (p + "self_attn.q_proj.weight", [a.heads * hd, a.dim], "w"),
                (p + "self_attn.k_proj.weight", [kv, a.dim], "w"),
                (p + "self_attn.v_proj.weight", [kv, a.dim], "w"),
                (p + "self_attn.o_proj.weight", [a.dim, a.heads * hd], "w"),
                (p + "post_attention_layernorm.weight", [a.dim], "norm"),
                (p + "mlp.gate_proj.weight", [a.hidden, a.dim], "w"),
                (p + "mlp.up_proj.weight", [a.hidden, a.dim], "w"),
                (p + "mlp.down_proj.weight", [a.dim, a.hidden], "w")]
    out += [("model.norm.weight", [a.dim], "norm"), ("lm_head.weight", [a.vocab, a.dim], "w")]
    return out


def to_bytes(t, dtype):
    """A tensor (any device) as little-endian bytes of F32 or BF16 (round to nearest even)."""
    if dtype == "bf16":
        return t.to(torch.bfloat16).view(torch.int16).cpu().numpy().astype("<i2").tobytes()
    return t.to(torch.float32).cpu().numpy().astype("<f4").tobytes()


def write_safetensors(path, entries, dtype, producer):
    """entries: [(name, shape)]; producer(name, shape) yields tensors whose concatenation (row-major) is the tensor."""
    esz = 2 if dtype == "bf16" else 4
    header, off = {}, 0
    for name, shape in entries:
        n = int(np.prod(shape)) * esz
        header[name] = {"dtype": ST_NAME[dtype], "shape": shape, "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(hb)))
        fh.write(hb)
        for name, shape in entries:
            written = 0
            for chunk in producer(name, shape):
                b = to_bytes(chunk, dtype)
                fh.write(b)
                written += len(b)
            expect = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            if written != expect:
                raise RuntimeError(f"{name}: wrote {written} bytes, expected {expect}")
    return 8 + len(hb) + off


def write_config(out, a, tied=False, max_pos=2048):
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": a.dim, "intermediate_size": a.hidden, "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads, "num_key_value_heads": a.kv_heads, "vocab_size": a.vocab,
        "max_position_embeddings": max_pos, "rms_norm_eps": 1e-5, "rope_theta": a.rope_theta,
        "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
        "attention_bias": False, "torch_dtype": "bfloat16" if a.dtype == "bf16" else "float32",
    }
    if a.rope_scaling:
        cfg["rope_scaling"] = a.rope_scaling
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
        fh.write("\n")


def random_model(a):
    entries = tensor_list(a)
    index = {name: i for i, (name, _, _) in enumerate(entries)}
    kinds = {name: k for name, _, k in entries}
    dev = torch.device(a.device)

    def producer(name, shape):
        g = torch.Generator(device=dev)
        g.manual_seed(a.seed * 1000003 + index[name])
        rows = shape[0]
        cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        step = max(1, CHUNK_ELEMS // cols)
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            t = torch.randn((r1 - r0,) + tuple(shape[1:]), generator=g, device=dev, dtype=torch.float32) * 0.02
            if kinds[name] == "norm":
                t += 1.0
            yield t

    t0 = time.time()
    n = write_safetensors(os.path.join(a.out, "model.safetensors"), [(n, s) for n, s, _ in entries], a.dtype, producer)
    write_config(a.out, a, tied=False, max_pos=a.max_pos)
    return n, time.time() - t0


def from_llama2c(a):
    """Convert a llama2.c .bin (e.g. stories260K) to an HF folder: Q/K rows permuted for rotate_half RoPE."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_llama import load_llama2c_bin
    m = load_llama2c_bin(a.from_llama2c)
    c = m.cfg
    a.dim, a.layers, a.heads, a.kv_heads, a.hidden, a.vocab = c.dim, c.layers, c.heads, c.kv_heads, c.hidden, c.vocab
    hd = c.head_dim

    def permute(w, heads):
        r, cols = w.shape
        return w.view(heads, r // heads // 2, 2, cols).transpose(1, 2).reshape(r, cols)

    tensors = {"model.embed_tokens.weight": m.embed_tokens.weight, "model.norm.weight": m.norm.weight}
    for l, b in enumerate(m.layers):
        p = f"model.layers.{l}."
        tensors.update({p + "input_layernorm.weight": b.input_layernorm.weight,
                        p + "self_attn.q_proj.weight": permute(b.q_proj.weight, c.heads),
                        p + "self_attn.k_proj.weight": permute(b.k_proj.weight, c.kv_heads),
                        p + "self_attn.v_proj.weight": b.v_proj.weight,
                        p + "self_attn.o_proj.weight": b.o_proj.weight,
                        p + "post_attention_layernorm.weight": b.post_attention_layernorm.weight,
                        p + "mlp.gate_proj.weight": b.gate_proj.weight,
                        p + "mlp.up_proj.weight": b.up_proj.weight,
                        p + "mlp.down_proj.weight": b.down_proj.weight})
    entries = [(n, list(t.shape)) for n, t in tensors.items()]
    t0 = time.time()
    n = write_safetensors(os.path.join(a.out, "model.safetensors"), entries, a.dtype,
                          lambda name, shape: iter([tensors[name]]))
    write_config(a.out, a, tied=c.tied, max_pos=c.max_positions)
    return n, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", choices=sorted(PRESETS), help="a named shape; explicit flags below override it")
    ap.add_argument("--dim", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--kv-heads", type=int)
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--vocab", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["f32", "bf16"])
    ap.add_argument("--rope-theta", type=float)
    ap.add_argument("--max-pos", type=int, help="max_position_embeddings (default 2048; 131072 for llama3.1-8b)")
    ap.add_argument("--device", default="cpu", help="where the random numbers are generated (cpu, cuda)")
    ap.add_argument("--from-llama2c", metavar="BIN", help="convert this llama2.c .bin instead of random weights")
    a = ap.parse_args()
    base = dict(dim=1024, layers=8, heads=16, kv_heads=4, hidden=2816, vocab=32000, dtype="f32",
                rope_theta=10000.0, max_pos=2048, rope_scaling=None)
    if a.preset:
        base.update(PRESETS[a.preset])
    for k, v in base.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device (or this torch has no CUDA)")
    if a.dim % a.heads or a.heads % a.kv_heads:
        sys.exit("dim must be a multiple of heads, heads a multiple of kv-heads")
    os.makedirs(a.out, exist_ok=True)
    n, secs = from_llama2c(a) if a.from_llama2c else random_model(a)
    print(json.dumps({"out": a.out, "bytes": n, "seconds": round(secs, 2), "dim": a.dim, "layers": a.layers,
                      "heads": a.heads, "kv_heads": a.kv_heads, "hidden": a.hidden, "vocab": a.vocab, "dtype": a.dtype}))


if __name__ == "__main__":
    main()
