#!/usr/bin/env python3
"""hf-llama-logits.py: reference logits for the engine's tests.

A plain-PyTorch (torch and the standard library only; no `transformers`)
F32 forward pass of Hugging Face's LlamaForCausalLM, written to produce the
reference logits that tests compare the engine against (for example
tests/fixtures/llama-kjv-data/reference-logits.safetensors, or the logits of
a pruned model whose heads * head_dim no longer equals hidden_size). It is a
tool for regenerating fixtures only: Python is never needed to build or run
the tests.

    python3 tools/hf-llama-logits.py --model DIR --tokens FILE --out FILE [--rows N]

DIR holds config.json and model.safetensors (or model.safetensors.index.json
and its shards). FILE holds `tokens`, I32 or I64, shape [T] or [N, T]; --rows
N keeps the first N rows. The output holds `tokens` (I32, the shape used) and
`logits` (F32, [T, vocab] or [N, T, vocab]). Each row is an independent
sequence with positions 0..T-1.

The math follows transformers' modeling_llama: RMSNorm in F32
(x * rsqrt(mean(x^2) + eps) * weight), rotate-half RoPE with
inv_freq = 1 / theta^(arange(0, hd, 2) / hd), grouped-query attention
(query head h reads kv head h // (heads / kv_heads)), causal softmax with
scale 1/sqrt(head_dim), SwiGLU MLP down(silu(gate(x)) * up(x)), residual
adds, final norm, lm_head (the embedding when tied). Optional q/k/v/o and
gate/up/down biases (attention_bias, mlp_bias, or Qwen2-style q/k/v biases
present without the flag). rope_scaling is not supported and is refused.

Debian's python3-torch lives in /usr/bin/python3's dist-packages; if the
`python3` on PATH (pyenv, a venv) cannot import torch, the script re-runs
itself under /usr/bin/python3.
"""

import argparse
import json
import math
import os
import struct
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    _sys_py = "/usr/bin/python3"
    if (os.environ.get("HF_LLAMA_LOGITS_REEXEC") != "1"
            and os.path.exists(_sys_py)
            and os.path.realpath(sys.executable) != os.path.realpath(_sys_py)):
        print("hf-llama-logits: torch not importable by %s; re-running under %s"
              % (sys.executable, _sys_py), file=sys.stderr)
        os.environ["HF_LLAMA_LOGITS_REEXEC"] = "1"
        os.execv(_sys_py, [_sys_py] + sys.argv)
    sys.exit("hf-llama-logits: needs PyTorch (Debian: apt-get install python3-torch)")


def die(msg):
    sys.exit("hf-llama-logits: " + msg)


if sys.byteorder != "little":
    die("safetensors data is little-endian; this script assumes a little-endian host")

# --------------------------------------------------------------------------
# safetensors

DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}


class SafetensorsFile:
    """One safetensors file: header parsed up front, tensors read on demand."""

    def __init__(self, path):
        self.path = path
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                die("%s: too short for a safetensors header" % path)
            (hlen,) = struct.unpack("<Q", raw)
            if hlen > size - 8:
                die("%s: header length %d runs past the file (%d bytes)" % (path, hlen, size))
            try:
                header = json.loads(f.read(hlen).decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                die("%s: bad JSON header: %s" % (path, e))
        if not isinstance(header, dict):
            die("%s: header is not a JSON object" % path)
        self.data_start = 8 + hlen
        data_len = size - self.data_start
        self.entries = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
            except (KeyError, TypeError, ValueError):
                die("%s: tensor %s: malformed header entry" % (path, name))
            if dtype not in DTYPES:
                die("%s: tensor %s: unsupported dtype %s" % (path, name, dtype))
            if not all(isinstance(d, int) and d >= 0 for d in shape):
                die("%s: tensor %s: bad shape %r" % (path, name, shape))
            n = math.prod(shape) * DTYPES[dtype][1]
            if not (0 <= b <= e <= data_len) or e - b != n:
                die("%s: tensor %s: data_offsets [%d, %d] do not fit %s %r in %d data bytes"
                    % (path, name, b, e, dtype, shape, data_len))
            self.entries[name] = (dtype, list(shape), b, e)

    def __contains__(self, name):
        return name in self.entries

    def get(self, name):
        """The tensor as stored (its own dtype), in memory it owns."""
        if name not in self.entries:
            die("%s: no tensor %s" % (self.path, name))
        dtype, shape, b, e = self.entries[name]
        tdtype = DTYPES[dtype][0]
        if e == b:
            return torch.empty(shape, dtype=tdtype)
        with open(self.path, "rb") as f:
            f.seek(self.data_start + b)
            buf = bytearray(f.read(e - b))
        if len(buf) != e - b:
            die("%s: tensor %s: short read" % (self.path, name))
        return torch.frombuffer(buf, dtype=tdtype).reshape(shape)


def write_safetensors(path, tensors):
    """tensors: {name: torch tensor}. Header sorted by name, offsets tiling
    the data area from 0, header padded with spaces to a multiple of 8."""
    names = sorted(tensors)
    rev = {v[0]: k for k, v in DTYPES.items()}
    header, blobs, off = {}, [], 0
    for name in names:
        t = tensors[name].detach().contiguous().cpu()
        if t.dtype not in rev:
            die("cannot write dtype %s" % t.dtype)
        nbytes = t.numel() * t.element_size()
        buf = bytearray(nbytes)
        if nbytes:
            torch.frombuffer(buf, dtype=t.dtype).copy_(t.reshape(-1))
        header[name] = {"dtype": rev[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + nbytes]}
        blobs.append(buf)
        off += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for buf in blobs:
            f.write(buf)
    os.replace(tmp, path)


# --------------------------------------------------------------------------
# model

class Weights:
    """Name -> tensor lookup over model.safetensors or its sharded index."""

    def __init__(self, model_dir):
        single = os.path.join(model_dir, "model.safetensors")
        index = os.path.join(model_dir, "model.safetensors.index.json")
        self.files = {}
        if os.path.exists(single):
            f = SafetensorsFile(single)
            self.files[single] = f
            self.where = {name: single for name in f.entries}
        elif os.path.exists(index):
            with open(index) as fh:
                wmap = json.load(fh).get("weight_map")
            if not isinstance(wmap, dict):
                die("%s: no weight_map" % index)
            self.where = {}
            for name, shard in wmap.items():
                p = os.path.join(model_dir, shard)
                if p not in self.files:
                    if not os.path.exists(p):
                        die("%s: shard %s is missing" % (index, shard))
                    self.files[p] = SafetensorsFile(p)
                if name not in self.files[p]:
                    die("%s: weight_map puts %s in %s, which lacks it" % (index, name, shard))
                self.where[name] = p
        else:
            die("%s: neither model.safetensors nor model.safetensors.index.json" % model_dir)
        self.used = set()

    def has(self, name):
        return name in self.where

    def get(self, name, shape):
        if name not in self.where:
            die("missing tensor %s" % name)
        t = self.files[self.where[name]].get(name)
        if list(t.shape) != list(shape):
            die("tensor %s has shape %r, expected %r" % (name, list(t.shape), list(shape)))
        if not t.is_floating_point():
            die("tensor %s is not floating point" % name)
        self.used.add(name)
        return t.to(torch.float32)

    def get_opt(self, name, shape, required):
        if required or self.has(name):
            return self.get(name, shape)
        return None


def load_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    with open(path) as fh:
        cfg = json.load(fh)

    def need(key):
        if cfg.get(key) is None:
            die("%s: %s missing" % (path, key))
        return cfg[key]

    c = {
        "hidden": int(need("hidden_size")),
        "inter": int(need("intermediate_size")),
        "layers": int(need("num_hidden_layers")),
        "heads": int(need("num_attention_heads")),
        "vocab": int(need("vocab_size")),
        "eps": float(cfg.get("rms_norm_eps", 1e-6)),
        "theta": float(cfg.get("rope_theta", 10000.0)),
        "tied": bool(cfg.get("tie_word_embeddings", False)),
        "attention_bias": bool(cfg.get("attention_bias", False)),
        "mlp_bias": bool(cfg.get("mlp_bias", False)),
    }
    kv = cfg.get("num_key_value_heads")
    c["kv_heads"] = c["heads"] if kv is None else int(kv)
    hd = cfg.get("head_dim")
    c["head_dim"] = c["hidden"] // c["heads"] if hd is None else int(hd)
    if c["heads"] <= 0 or c["kv_heads"] <= 0 or c["heads"] % c["kv_heads"]:
        die("num_attention_heads %d is not a positive multiple of num_key_value_heads %d"
            % (c["heads"], c["kv_heads"]))
    if c["head_dim"] <= 0 or c["head_dim"] % 2:
        die("head_dim %d must be positive and even for rotate-half RoPE" % c["head_dim"])
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        die("hidden_act %r is not supported (only silu)" % act)
    if cfg.get("rope_scaling") is not None:
        die("rope_scaling %r is not supported" % (cfg["rope_scaling"],))
    c["sliding_window"] = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
    return c


def load_model(model_dir, c):
    w = Weights(model_dir)
    H, I, V = c["hidden"], c["inter"], c["vocab"]
    q_out = c["heads"] * c["head_dim"]
    kv_out = c["kv_heads"] * c["head_dim"]
    ab, mb = c["attention_bias"], c["mlp_bias"]
    m = {"embed": w.get("model.embed_tokens.weight", [V, H]),
         "norm": w.get("model.norm.weight", [H]), "layers": []}
    for i in range(c["layers"]):
        p = "model.layers.%d." % i
        a, f = p + "self_attn.", p + "mlp."
        m["layers"].append({
            "ln1": w.get(p + "input_layernorm.weight", [H]),
            "ln2": w.get(p + "post_attention_layernorm.weight", [H]),
            "q": w.get(a + "q_proj.weight", [q_out, H]),
            "k": w.get(a + "k_proj.weight", [kv_out, H]),
            "v": w.get(a + "v_proj.weight", [kv_out, H]),
            "o": w.get(a + "o_proj.weight", [H, q_out]),
            "qb": w.get_opt(a + "q_proj.bias", [q_out], ab),
            "kb": w.get_opt(a + "k_proj.bias", [kv_out], ab),
            "vb": w.get_opt(a + "v_proj.bias", [kv_out], ab),
            "ob": w.get_opt(a + "o_proj.bias", [H], ab),
            "gate": w.get(f + "gate_proj.weight", [I, H]),
            "up": w.get(f + "up_proj.weight", [I, H]),
            "down": w.get(f + "down_proj.weight", [H, I]),
            "gb": w.get_opt(f + "gate_proj.bias", [I], mb),
            "ub": w.get_opt(f + "up_proj.bias", [I], mb),
            "db": w.get_opt(f + "down_proj.bias", [H], mb),
        })
    if c["tied"]:
        m["lm_head"] = m["embed"]
        if w.has("lm_head.weight"):
            w.used.add("lm_head.weight")
    else:
        m["lm_head"] = w.get("lm_head.weight", [V, H])
    extra = sorted(n for n in w.where if n not in w.used and not n.endswith("rotary_emb.inv_freq"))
    if extra:
        print("hf-llama-logits: warning: %d tensor(s) not used, e.g. %s"
              % (len(extra), ", ".join(extra[:5])), file=sys.stderr)
    return m


def rms_norm(x, weight, eps):
    x = x.to(torch.float32)
    var = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(var + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def forward(m, c, tokens):
    """tokens: int64 [B, T] -> logits F32 [B, T, V]."""
    B, T = tokens.shape
    nh, nkv, hd, eps = c["heads"], c["kv_heads"], c["head_dim"], c["eps"]
    groups = nh // nkv

    inv_freq = 1.0 / (c["theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    pos = torch.arange(T, dtype=torch.int64).float()
    freqs = pos[:, None] * inv_freq[None, :]          # [T, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)           # [T, hd]
    cos, sin = emb.cos(), emb.sin()                   # broadcast over [B, h, T, hd]
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    scale = 1.0 / math.sqrt(hd)

    x = F.embedding(tokens, m["embed"])               # [B, T, H]
    for L in m["layers"]:
        h = rms_norm(x, L["ln1"], eps)
        q = F.linear(h, L["q"], L["qb"]).view(B, T, nh, hd).transpose(1, 2)
        k = F.linear(h, L["k"], L["kb"]).view(B, T, nkv, hd).transpose(1, 2)
        v = F.linear(h, L["v"], L["vb"]).view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if groups > 1:                                # query head j uses kv head j // groups
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        att = torch.matmul(q, k.transpose(2, 3)) * scale
        att = att.masked_fill(causal, float("-inf"))
        att = torch.softmax(att, dim=-1, dtype=torch.float32)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + F.linear(o, L["o"], L["ob"])
        h = rms_norm(x, L["ln2"], eps)
        f = F.silu(F.linear(h, L["gate"], L["gb"])) * F.linear(h, L["up"], L["ub"])
        x = x + F.linear(f, L["down"], L["db"])
    x = rms_norm(x, m["norm"], eps)
    return F.linear(x, m["lm_head"])


def main():
    ap = argparse.ArgumentParser(
        description="Reference logits of a Llama-architecture model (Hugging Face "
                    "LlamaForCausalLM math, F32, plain PyTorch).")
    ap.add_argument("--model", required=True, help="directory with config.json and safetensors weights")
    ap.add_argument("--tokens", required=True, help="safetensors file holding `tokens` (I32/I64, [T] or [N, T])")
    ap.add_argument("--out", required=True, help="output safetensors file (`tokens` I32, `logits` F32)")
    ap.add_argument("--rows", type=int, default=None, help="use only the first N rows of a [N, T] tokens tensor")
    args = ap.parse_args()

    c = load_config(args.model)
    tf = SafetensorsFile(args.tokens)
    if "tokens" not in tf:
        die("%s: no `tokens` tensor" % args.tokens)
    if tf.entries["tokens"][0] not in ("I32", "I64"):
        die("%s: `tokens` is %s, expected I32 or I64" % (args.tokens, tf.entries["tokens"][0]))
    tokens = tf.get("tokens").to(torch.int64)
    if tokens.dim() == 1:
        if args.rows is not None:
            die("--rows needs a [N, T] tokens tensor; %s has shape %r" % (args.tokens, list(tokens.shape)))
        batch = tokens[None, :]
    elif tokens.dim() == 2:
        if args.rows is not None:
            if not 1 <= args.rows <= tokens.shape[0]:
                die("--rows %d outside 1..%d" % (args.rows, tokens.shape[0]))
            tokens = tokens[:args.rows]
        batch = tokens
    else:
        die("`tokens` must be [T] or [N, T], not %r" % list(tokens.shape))
    if batch.shape[1] == 0:
        die("`tokens` has no positions")
    if batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= c["vocab"]):
        die("token ids must lie in 0..%d" % (c["vocab"] - 1))
    sw = c["sliding_window"]
    if sw is not None and batch.shape[1] > int(sw):
        die("sequence length %d exceeds sliding_window %d, which this script does not model"
            % (batch.shape[1], sw))

    m = load_model(args.model, c)
    with torch.no_grad():
        logits = forward(m, c, batch)
    if tokens.dim() == 1:
        logits = logits[0]
    if not torch.isfinite(logits).all():
        print("hf-llama-logits: warning: logits contain non-finite values", file=sys.stderr)
    write_safetensors(args.out, {"tokens": tokens.to(torch.int32), "logits": logits.contiguous()})


if __name__ == "__main__":
    main()
