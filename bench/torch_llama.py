"""A plain PyTorch Llama for the NeuronTrace baselines.

It loads a Hugging Face `LlamaForCausalLM` folder (`config.json` plus `model.safetensors`, or sharded
`model-*.safetensors` with `model.safetensors.index.json`; the safetensors files are parsed here, without the
safetensors package) or a llama2.c legacy `.bin` checkpoint (stories260K).

RoPE convention: HF folders rotate halves of each head (`rotate_half`); llama2.c `.bin` files rotate interleaved
pairs (2i, 2i+1). Llama 3 `rope_scaling` ("llama3") is supported.

Every node site goes through `LlamaModel.site(name, layer, tensor)`, which calls `model.site_hook` when it is set.
The hook can read the tensor, or return a replacement tensor:
    resid   r_{l+1}, the decoder layer output          [B, T, dim]
    attn    o_proj output                               [B, T, dim]
    attn_z  o_proj input (concatenated heads)           [B, T, heads*head_dim]
    mlp_out down_proj output                            [B, T, dim]
    mlp_act down_proj input silu(gate) * up             [B, T, hidden]
Two more hook points are not node sites: `mlp_gate` and `mlp_up`, the gate_proj and up_proj outputs [B, T, hidden]
(the fixtures check the RelP gate rule there). A hook that keeps every name it sees also gets these.

This module is the one PyTorch reference Llama of the project: the benchmarks here and the float64 attribution
fixtures (tests/fixtures/make_fixtures.py) both use it. Its float64 operation order is what the committed fixtures
were computed with; an edit that changes a rounding changes those bytes (regenerate and compare them, see
tests/fixtures/README.md).

Backward rule sets (the forward values are the same for all of them):
    Rules.EXACT             ordinary gradients
    Rules.RELP              RMSNorm scale detached, SwiGLU identity + half rule (softmax gets ordinary gradients)
    Rules.RELP_FROZEN_ATTN  RELP plus the attention pattern detached
"""
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SITES = ("resid", "attn", "attn_z", "mlp_out", "mlp_act")


@dataclass(frozen=True)
class Rules:
    frozen_norm: bool = False
    frozen_attn: bool = False
    relp_gate: bool = False


Rules.EXACT = Rules()
Rules.RELP = Rules(frozen_norm=True, relp_gate=True)
Rules.RELP_FROZEN_ATTN = Rules(frozen_norm=True, frozen_attn=True, relp_gate=True)


@dataclass
class LlamaConfig:
    dim: int
    layers: int
    heads: int
    kv_heads: int
    hidden: int
    vocab: int
    eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict] = None
    interleaved_rope: bool = False
    tied: bool = False
    max_positions: int = 2048
    head_dim: int = field(init=False)

    def __post_init__(self):
        self.head_dim = self.dim // self.heads

    def linear_params(self, include_head=True):
        """Weights in the linear layers (q,k,v,o,gate,up,down per layer, plus the classifier)."""
        kv = self.kv_heads * self.head_dim
        per_layer = self.dim * self.dim * 2 + self.dim * kv * 2 + 3 * self.dim * self.hidden
        return self.layers * per_layer + (self.vocab * self.dim if include_head else 0)


# ------------------------------------------------------------------------------------------------------------------
# safetensors (read by hand)
# ------------------------------------------------------------------------------------------------------------------
_ST_DTYPES = {"F32": (np.float32, torch.float32), "F16": (np.float16, torch.float16),
              "BF16": (np.uint16, torch.bfloat16), "F64": (np.float64, torch.float64)}


def read_safetensors_header(path):
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    header.pop("__metadata__", None)
    return header, 8 + n


def load_safetensors(path, dtype, device="cpu", names=None):
    """{name: tensor} from one .safetensors file, converted to `dtype` on `device`."""
    header, base = read_safetensors_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if names is not None and name not in names:
            continue
        npdt, tdt = _ST_DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        raw = np.frombuffer(mm[base + b: base + e], dtype=npdt).reshape(info["shape"])
        if info["dtype"] == "BF16":
            t = torch.from_numpy(raw.astype(np.int16)).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.array(raw))
        out[name] = t.to(device=device, dtype=dtype)
    return out


def _hf_files(folder):
    idx = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(idx):
        wm = json.load(open(idx))["weight_map"]
        return sorted(set(os.path.join(folder, f) for f in wm.values()))
    one = os.path.join(folder, "model.safetensors")
    if os.path.exists(one):
        return [one]
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors in {folder}")
    return [os.path.join(folder, f) for f in files]


# ------------------------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------------------------
def rope_inv_freq(cfg: LlamaConfig):
    hd = cfg.head_dim
    # theta^(-2i/hd), written as in the fixtures (tests/fixtures/make_fixtures.py), whose float64 bits depend on it
    inv = cfg.rope_theta ** (-2.0 * torch.arange(hd // 2, dtype=torch.float64) / hd)
    sc = cfg.rope_scaling
    if sc and sc.get("rope_type", sc.get("type")) == "llama3":
        factor = sc["factor"]
        low, high = sc["low_freq_factor"], sc["high_freq_factor"]
        orig = sc["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv
        smooth = ((orig / wavelen) - low) / (high - low)
        scaled = torch.where(wavelen > orig / low, inv / factor, inv)  # long wavelengths: divided by factor
        mid = (wavelen <= orig / low) & (wavelen >= orig / high)
        inv = torch.where(mid, (1 - smooth) * inv / factor + smooth * inv, scaled)
    elif sc:
        raise NotImplementedError(f"rope_scaling {sc}")
    return inv


class RMSNorm(nn.Module):
    def __init__(self, dim, eps, **kw):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim, **kw), requires_grad=False)
        self.eps = eps

    def forward(self, x, frozen=False):
        xf = x if x.dtype == torch.float64 else x.float()
        scale = torch.rsqrt((xf * xf).mean(-1, keepdim=True) + self.eps)
        if frozen:
            scale = scale.detach()
        return (xf * scale).to(x.dtype) * self.weight


class Block(nn.Module):
    def __init__(self, cfg, **kw):
        super().__init__()
        kv = cfg.kv_heads * cfg.head_dim
        self.input_layernorm = RMSNorm(cfg.dim, cfg.eps, **kw)
        self.q_proj = nn.Linear(cfg.dim, cfg.heads * cfg.head_dim, bias=False, **kw)
        self.k_proj = nn.Linear(cfg.dim, kv, bias=False, **kw)
        self.v_proj = nn.Linear(cfg.dim, kv, bias=False, **kw)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.dim, bias=False, **kw)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.eps, **kw)
        self.gate_proj = nn.Linear(cfg.dim, cfg.hidden, bias=False, **kw)
        self.up_proj = nn.Linear(cfg.dim, cfg.hidden, bias=False, **kw)
        self.down_proj = nn.Linear(cfg.hidden, cfg.dim, bias=False, **kw)


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig, device=None, dtype=None):
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.dim, **kw)
        self.layers = nn.ModuleList(Block(cfg, **kw) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.dim, cfg.eps, **kw)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab, bias=False, **kw)
        self.site_hook = None
        # None: the eager attention in forward (the reference; it materialises the [B, H, T, T] pattern and autograd
        # keeps it). Or f(q [B, H, T, hd], k, v [B, KV, T, hd], frozen) -> z [B, H, T, hd]: chunked_attention or
        # sdpa_attention below, the memory-efficient baselines of the long-prompt benchmark.
        self.attention = None
        for p in self.parameters():
            p.requires_grad_(False)

    # -- helpers ---------------------------------------------------------------------------------------------
    def site(self, name, layer, x):
        if self.site_hook is not None:
            y = self.site_hook(name, layer, x)
            if y is not None:
                return y
        return x

    def rope_tables(self, T, device):
        ang = torch.arange(T, device=device, dtype=torch.float64)[:, None] * rope_inv_freq(self.cfg).to(device)[None, :]
        return torch.cos(ang), torch.sin(ang)  # [T, hd/2]

    def apply_rope(self, x, cos, sin):
        """x: [B, H, T, hd]."""
        dt = x.dtype
        if dt != torch.float64:
            x = x.float()
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        if self.cfg.interleaved_rope:
            x0, x1 = x[..., 0::2], x[..., 1::2]
            y = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)
        else:
            half = x.shape[-1] // 2
            x0, x1 = x[..., :half], x[..., half:]
            y = torch.cat((x0 * cos - x1 * sin, x1 * cos + x0 * sin), dim=-1)
        return y.to(dt)

    def to_mkldnn_linears(self, dtype=torch.float32):
        """Swap every nn.Linear for oneDNN's MkldnnLinear (CPU float32 / bfloat16 inference only)."""
        from torch.utils import mkldnn as mk
        for blk in self.layers:
            for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
                setattr(blk, n, mk.MkldnnLinear(getattr(blk, n), dtype))
        self.lm_head = mk.MkldnnLinear(self.lm_head, dtype)
        return self

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, ids, rules: Rules = Rules.EXACT, last_only=False, embed_requires_grad=False, inputs_embeds=None):
        """ids: [B, T] int64. Returns logits [B, T, vocab] (or [B, vocab] with last_only).

        inputs_embeds: optional [B, T, dim] tensor used as r_0 in place of the token embeddings (input-space IG);
        ids then only give B, T and the device.
        """
        cfg = self.cfg
        B, T = ids.shape
        H, KV, hd = cfg.heads, cfg.kv_heads, cfg.head_dim
        G = H // KV
        if inputs_embeds is not None:
            assert inputs_embeds.shape == (B, T, cfg.dim)
            x = inputs_embeds
        else:
            x = self.embed_tokens(ids)
        if embed_requires_grad:
            x = x.detach().requires_grad_()
        cos, sin = self.rope_tables(T, ids.device)
        mask = torch.full((T, T), float("-inf"), device=ids.device).triu(1).to(x.dtype) if self.attention is None else None
        for l, blk in enumerate(self.layers):
            u = blk.input_layernorm(x, rules.frozen_norm)
            q = blk.q_proj(u).view(B, T, H, hd).transpose(1, 2)
            k = blk.k_proj(u).view(B, T, KV, hd).transpose(1, 2)
            v = blk.v_proj(u).view(B, T, KV, hd).transpose(1, 2)
            q = self.apply_rope(q, cos, sin)
            k = self.apply_rope(k, cos, sin)
            if self.attention is not None:
                z = self.attention(q, k, v, rules.frozen_attn).transpose(1, 2).reshape(B, T, H * hd)
            else:
                # GQA: query head h reads KV head h // G. K/V are copied per query head because the fixtures' float64
                # bits were computed with one [T, hd] x [hd, T] product per head (grouping the heads of one KV head into
                # a [G*T, hd] product changes roundings: up to 2.2e-15 in the fixtures' gradients)
                kv_of = torch.arange(H, device=ids.device) // G
                k, v = k[:, kv_of], v[:, kv_of]  # [B, H, T, hd]
                s = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(hd) + mask
                A = torch.softmax(s if s.dtype == torch.float64 else s.float(), dim=-1).to(q.dtype)
                if rules.frozen_attn:
                    A = A.detach()
                z = torch.einsum("bhts,bhsd->bthd", A, v).reshape(B, T, H * hd)
            z = self.site("attn_z", l, z)
            ao = self.site("attn", l, blk.o_proj(z))
            x = x + ao
            xn = blk.post_attention_layernorm(x, rules.frozen_norm)
            g = self.site("mlp_gate", l, blk.gate_proj(xn))  # pre-activations: hook points, not node sites
            up = self.site("mlp_up", l, blk.up_proj(xn))
            if rules.relp_gate:
                sg = g * torch.sigmoid(g).detach()                           # identity rule
                h = 0.5 * (sg * up.detach()) + 0.5 * (sg.detach() * up)      # half rule
            else:
                h = F.silu(g) * up
            h = self.site("mlp_act", l, h)
            mo = self.site("mlp_out", l, blk.down_proj(h))
            x = self.site("resid", l, x + mo)
        if last_only:
            x = x[:, -1, :]
        return self.lm_head(self.norm(x, rules.frozen_norm))


HAS_SDPA = hasattr(F, "scaled_dot_product_attention")  # torch 2.0+; the 1.13 here has none


def chunked_attention(q, k, v, frozen, chunk=256):
    """Causal attention a block of `chunk` queries at a time, each block under torch.utils.checkpoint, so autograd keeps
    q, k and v (O(T)) and the backward recomputes one block's [chunk, keys] pattern at a time: the memory-efficient
    attention that torch 1.13 can do without SDPA (the long-prompt benchmark's stand-in for it). A block reads only the
    keys up to its last query (the masked tiles to its right are never computed); a KV head's G query heads share
    its K/V (broadcast, not copied). frozen: the pattern is detached (RelP's frozen-pattern rule).
    q [B, H, T, hd], k, v [B, KV, T, hd] -> z [B, H, T, hd]."""
    from torch.utils.checkpoint import checkpoint
    B, H, T, hd = q.shape
    KV = k.shape[1]
    G = H // KV
    scale = 1.0 / math.sqrt(hd)

    def block(qc, kc, vc, first):
        n, keys = qc.shape[2], kc.shape[2]
        s = torch.matmul(qc.reshape(B, KV, G, n, hd), kc.unsqueeze(2).transpose(-1, -2)) * scale  # [B, KV, G, n, keys]
        later = torch.arange(keys, device=q.device)[None, :] > torch.arange(first, first + n, device=q.device)[:, None]
        s = s.masked_fill(later, float("-inf"))
        a = torch.softmax(s if s.dtype == torch.float64 else s.float(), dim=-1).to(q.dtype)
        if frozen:
            a = a.detach()
        return torch.matmul(a, vc.unsqueeze(2)).reshape(B, H, n, hd)

    out = []
    for first in range(0, T, chunk):
        end = min(T, first + chunk)
        # use_reentrant=False: the attribution takes torch.autograd.grad at the sites, which the reentrant form refuses
        out.append(checkpoint(block, q[:, :, first:end], k[:, :, :end], v[:, :, :end], first, use_reentrant=False))
    return torch.cat(out, dim=2)


def sdpa_attention(q, k, v, frozen):
    """torch.nn.functional.scaled_dot_product_attention (torch 2.0+: flash / memory-efficient kernels), causal; K/V
    repeated per query head (the enable_gqa flag is 2.5+). It has no frozen-pattern form: refused."""
    if frozen:
        raise SystemExit("sdpa_attention: SDPA cannot detach the pattern (relp_frozen_attn); use --attention chunked")
    G = q.shape[1] // k.shape[1]
    if G > 1:
        k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


ATTENTION = {"eager": None, "chunked": chunked_attention, "sdpa": sdpa_attention}


# ------------------------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------------------------
def config_from_hf(c):
    return LlamaConfig(dim=c["hidden_size"], layers=c["num_hidden_layers"], heads=c["num_attention_heads"],
                       kv_heads=c.get("num_key_value_heads", c["num_attention_heads"]), hidden=c["intermediate_size"],
                       vocab=c["vocab_size"], eps=c.get("rms_norm_eps", 1e-5), rope_theta=c.get("rope_theta", 10000.0),
                       rope_scaling=c.get("rope_scaling"), interleaved_rope=False,
                       tied=bool(c.get("tie_word_embeddings", False)),
                       max_positions=c.get("max_position_embeddings", 2048))


def load_llama2c_bin(path, dtype=torch.float32, device="cpu"):
    raw = open(path, "rb").read()
    dim, hidden, L, H, KV, vocab, seq = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    cfg = LlamaConfig(dim=dim, layers=L, heads=H, kv_heads=KV, hidden=hidden, vocab=vocab, interleaved_rope=True,
                      tied=shared, max_positions=seq)
    f = np.frombuffer(raw, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = torch.from_numpy(f[pos:pos + n].copy().reshape(shape))
        pos += n
        return a

    emb = take(vocab, dim)
    rms_att, wq, wk, wv, wo = take(L, dim), take(L, dim, dim), take(L, KV * dim // H, dim), take(L, KV * dim // H, dim), take(L, dim, dim)
    rms_ffn, w1, w2, w3 = take(L, dim), take(L, hidden, dim), take(L, dim, hidden), take(L, hidden, dim)
    rms_final = take(dim)
    pos += seq * (dim // H)
    wcls = emb if shared else take(vocab, dim)
    if pos != f.size:
        raise ValueError(f"{path}: size mismatch ({pos} vs {f.size} floats)")
    m = LlamaModel(cfg)
    sd = {"embed_tokens.weight": emb, "norm.weight": rms_final, "lm_head.weight": wcls}
    for l in range(L):
        p = f"layers.{l}."
        sd.update({p + "input_layernorm.weight": rms_att[l], p + "q_proj.weight": wq[l], p + "k_proj.weight": wk[l],
                   p + "v_proj.weight": wv[l], p + "o_proj.weight": wo[l], p + "post_attention_layernorm.weight": rms_ffn[l],
                   p + "gate_proj.weight": w1[l], p + "down_proj.weight": w2[l], p + "up_proj.weight": w3[l]})
    m.load_state_dict(sd, strict=True)
    return m.to(device=device, dtype=dtype)


def load_hf_folder(folder, dtype=torch.float32, device="cpu"):
    cfg = config_from_hf(json.load(open(os.path.join(folder, "config.json"))))
    # build on the meta device, then allocate once in the target dtype on the target device
    m = LlamaModel(cfg, device="meta", dtype=dtype).to_empty(device=device)
    own = dict(m.named_parameters())
    loaded = set()
    for fpath in _hf_files(folder):
        header, _ = read_safetensors_header(fpath)
        for name in header:
            key = re.sub(r"^model\.", "", name)
            key = key.replace("self_attn.", "").replace("mlp.", "")
            if key not in own:
                continue
            t = load_safetensors(fpath, dtype, device, names={name})[name]
            with torch.no_grad():
                own[key].copy_(t)
            loaded.add(key)
            del t
    if cfg.tied and "lm_head.weight" not in loaded:
        m.lm_head.weight = m.embed_tokens.weight
        loaded.add("lm_head.weight")
    missing = set(own) - loaded
    if missing:
        raise ValueError(f"{folder}: missing tensors {sorted(missing)[:5]} ...")
    return m


def load_model(path, dtype=torch.float32, device="cpu"):
    if os.path.isdir(path):
        return load_hf_folder(path, dtype, device)
    return load_llama2c_bin(path, dtype, device)


# ------------------------------------------------------------------------------------------------------------------
# environment description for the benchmark JSON
# ------------------------------------------------------------------------------------------------------------------
def blas_in_use():
    """The BLAS / oneDNN shared objects actually mapped into this process."""
    libs = set()
    try:
        for line in open("/proc/self/maps"):
            p = line.split()[-1] if "/" in line else ""
            b = os.path.basename(p)
            if re.search(r"blas|dnnl|mkl|lapack", b):
                libs.add(os.path.realpath(p))
    except OSError:
        pass
    return sorted(libs)


def parse_dtype(s):
    return {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[s]


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------------------------
# shared benchmark plumbing
# ------------------------------------------------------------------------------------------------------------------
def _flag(argv, name, default):
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith(name + "="):
            return int(a.split("=", 1)[1])
    return default


DEFAULT_TORCH_THREADS = 1


def early_threads(argv, default=2):
    """Read --threads / --torch-threads before torch starts its pools (call before importing torch).

    --threads N       cores for the matrix products: OpenBLAS's thread count (OPENBLAS_NUM_THREADS).
    --torch-threads K torch's own intra-op (OpenMP) pool, used by element-wise ops, softmax, norms. Default 1:
                      on this shared 2-core machine a second OpenMP worker made every run slower (forward of the
                      dim-1024 model 10.8 s vs 6.7 s, stories260K RelP step 0.91 s vs 0.05 s; bench/README.md),
                      because each fork-join waits for a worker the loaded scheduler has not run yet.
    """
    n = _flag(argv, "--threads", default)
    k = _flag(argv, "--torch-threads", DEFAULT_TORCH_THREADS)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(n))
    os.environ.setdefault("OMP_NUM_THREADS", str(k))
    # Torch's OpenMP pool and OpenBLAS's own pthreads share the cores. With the default (spinning) OpenMP wait
    # policy, idle OpenMP workers burn the cores OpenBLAS needs: measured 10-20x slower on 2 shared cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return n


LAST_CPU_SECONDS = []


def time_iters(fn, iters, warmup, device):
    """Run fn warmup times, then iters timed runs; returns the list of per-iteration wall seconds.

    The process CPU seconds of each timed iteration (all threads) go to LAST_CPU_SECONDS: on a shared machine
    the wall time swings with other people's load, the CPU time much less.
    """
    import time
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    LAST_CPU_SECONDS.clear()
    for _ in range(iters):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
        LAST_CPU_SECONDS.append(time.process_time() - c0)
    return out


def cpu_seconds():
    import statistics
    return statistics.median(LAST_CPU_SECONDS) if LAST_CPU_SECONDS else float("nan")


def load_average():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except OSError:
        return float("nan")


def describe(device, threads, extra=""):
    parts = [f"torch {torch.__version__}"]
    if str(device).startswith("cuda"):
        parts.append(f"cuda {torch.version.cuda}, {torch.cuda.get_device_name()}")
    else:
        libs = [os.path.basename(p) for p in blas_in_use()]
        parts.append(f"threads {threads} (OpenBLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}, torch intra-op "
                     f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})")
        parts.append("BLAS " + ("OpenBLAS (" + ", ".join(l for l in libs if "openblas" in l) + ")"
                                 if any("openblas" in l for l in libs) else "reference/other: " + ", ".join(libs)))
        parts.append("oneDNN " + ("available" if torch.backends.mkldnn.is_available() else "absent"))
    if extra:
        parts.append(extra)
    return ", ".join(parts)
