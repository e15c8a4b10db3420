#!/usr/bin/env python3
"""ref-gradients.py: reference gradients for the engine's backward pass.

PyTorch autograd (F32) over the first N calibration rows of a model the
engine runs, written in the layout `shears grad --fisher` writes:

    <tensor name>          the gradient of the mean of the rows' losses
    fisher.<tensor name>   the sum over rows of each row's gradient squared

A row's loss is the metric's: for the Llama family the mean next-token NLL
over positions 1..T-1 of the sequence, for an mlp the cross-entropy of its
label. A tied embedding is one tensor (model.embed_tokens.weight) whose
gradient has both parts.

    python3 tools/ref-gradients.py --model DIR --calibration FILE --rows N \\
        --out FILE [--no-fisher]
    python3 tools/ref-gradients.py --make-tiny DIR

--make-tiny writes a small Qwen2-style model the fixtures lack (grouped-
query attention 4/2, tied embeddings, q/k/v biases, a sliding window of 6)
with random weights and a tokens file, for the tests of the backward pass.

The Llama math is tools/hf-llama-logits.py's (imported from beside this
file) with the sliding window added. Python is never needed to build or run
the tests: the outputs are committed.
"""

import argparse
import importlib.util
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("hfl", os.path.join(HERE, "hf-llama-logits.py"))
hfl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hfl)
torch, F = hfl.torch, hfl.F


def llama_logits(m, c, tokens):
    """tokens int64 [B, T] -> logits [B, T, V], with the sliding window."""
    B, T = tokens.shape
    nh, nkv, hd, eps = c["heads"], c["kv_heads"], c["head_dim"], c["eps"]
    groups = nh // nkv
    inv_freq = 1.0 / (c["theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    pos = torch.arange(T, dtype=torch.int64).float()
    emb = torch.cat((pos[:, None] * inv_freq[None, :],) * 2, dim=-1)
    cos, sin = emb.cos(), emb.sin()
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    masked = j > i
    sw = c.get("sliding_window")
    if sw:
        masked = masked | (j < i - int(sw) + 1)
    scale = 1.0 / math.sqrt(hd)
    x = F.embedding(tokens, m["embed"])
    for L in m["layers"]:
        h = hfl.rms_norm(x, L["ln1"], eps)
        q = F.linear(h, L["q"], L["qb"]).view(B, T, nh, hd).transpose(1, 2)
        k = F.linear(h, L["k"], L["kb"]).view(B, T, nkv, hd).transpose(1, 2)
        v = F.linear(h, L["v"], L["vb"]).view(B, T, nkv, hd).transpose(1, 2)
        q = q * cos + hfl.rotate_half(q) * sin
        k = k * cos + hfl.rotate_half(k) * sin
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        att = torch.matmul(q, k.transpose(2, 3)) * scale
        att = torch.softmax(att.masked_fill(masked, float("-inf")), dim=-1)
        o = torch.matmul(att, v).transpose(1, 2).reshape(B, T, nh * hd)
        x = x + F.linear(o, L["o"], L["ob"])
        h = hfl.rms_norm(x, L["ln2"], eps)
        f = F.silu(F.linear(h, L["gate"], L["gb"])) * F.linear(h, L["up"], L["ub"])
        x = x + F.linear(f, L["down"], L["db"])
    return F.linear(hfl.rms_norm(x, m["norm"], eps), m["lm_head"])


def llama_params(m, c):
    """name -> the leaf tensor (the tied head is the embedding)."""
    out = {"model.embed_tokens.weight": m["embed"], "model.norm.weight": m["norm"]}
    if not c["tied"]:
        out["lm_head.weight"] = m["lm_head"]
    keys = {"ln1": "input_layernorm.weight", "ln2": "post_attention_layernorm.weight",
            "q": "self_attn.q_proj.weight", "k": "self_attn.k_proj.weight",
            "v": "self_attn.v_proj.weight", "o": "self_attn.o_proj.weight",
            "qb": "self_attn.q_proj.bias", "kb": "self_attn.k_proj.bias",
            "vb": "self_attn.v_proj.bias", "ob": "self_attn.o_proj.bias",
            "gate": "mlp.gate_proj.weight", "up": "mlp.up_proj.weight",
            "down": "mlp.down_proj.weight", "gb": "mlp.gate_proj.bias",
            "ub": "mlp.up_proj.bias", "db": "mlp.down_proj.bias"}
    for n, L in enumerate(m["layers"]):
        for k, name in keys.items():
            if L[k] is not None:
                out["model.layers.%d.%s" % (n, name)] = L[k]
    return out


def llama_setup(model_dir, calib, rows):
    c = hfl.load_config(model_dir)
    with open(os.path.join(model_dir, "config.json")) as fh:
        cfg = json.load(fh)
    mt = cfg.get("model_type")
    # As the engine: Mistral's window always, Qwen2's with use_sliding_window.
    win = cfg.get("sliding_window")
    use = cfg.get("use_sliding_window")
    c["sliding_window"] = win if isinstance(win, int) and (use is True or (use is None and mt == "mistral")) else None
    m = hfl.load_model(model_dir, c)
    params = llama_params(m, c)
    for t in params.values():
        t.requires_grad_(True)
    tokens = hfl.SafetensorsFile(calib).get("tokens").to(torch.int64)[:rows]

    def row_loss(r):
        t = tokens[r:r + 1]
        logits = llama_logits(m, c, t)[0]
        return F.cross_entropy(logits[:-1], t[0, 1:], reduction="mean")
    return params, tokens.shape[0], row_loss


def mlp_setup(model_dir, calib, rows):
    with open(os.path.join(model_dir, "config.json")) as fh:
        cfg = json.load(fh)
    w = hfl.Weights(model_dir)
    act = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu, "tanh": torch.tanh,
           "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
           "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}[cfg["hidden_act"]]
    params, layers = {}, []
    for name in cfg["layers"]:
        wt = w.files[w.where[name + ".weight"]].get(name + ".weight").to(torch.float32)
        bt = None
        if w.has(name + ".bias"):
            bt = w.files[w.where[name + ".bias"]].get(name + ".bias").to(torch.float32)
            params[name + ".bias"] = bt
        params[name + ".weight"] = wt
        layers.append((wt, bt))
    for t in params.values():
        t.requires_grad_(True)
    f = hfl.SafetensorsFile(calib)
    x = f.get("inputs").to(torch.float32)[:rows]
    y = f.get("labels").to(torch.int64)[:rows]

    def row_loss(r):
        h = x[r:r + 1]
        for i, (wt, bt) in enumerate(layers):
            h = F.linear(h, wt, bt)
            if i + 1 < len(layers):
                h = act(h)
        return F.cross_entropy(h, y[r:r + 1])
    return params, x.shape[0], row_loss


def make_tiny(out_dir):
    torch.manual_seed(15)
    os.makedirs(out_dir, exist_ok=True)
    H, I, L, nh, nkv, V, T = 32, 48, 2, 4, 2, 64, 16
    hd = H // nh
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
           "hidden_size": H, "intermediate_size": I, "num_hidden_layers": L,
           "num_attention_heads": nh, "num_key_value_heads": nkv,
           "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "vocab_size": V,
           "max_position_embeddings": 64, "tie_word_embeddings": True,
           "hidden_act": "silu", "use_sliding_window": True, "sliding_window": 6,
           "max_window_layers": L, "torch_dtype": "float32"}
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2)
        fh.write("\n")
    t = {"model.embed_tokens.weight": torch.randn(V, H) * 0.5,
         "model.norm.weight": 1 + 0.1 * torch.randn(H)}
    for n in range(L):
        p = "model.layers.%d." % n
        t[p + "input_layernorm.weight"] = 1 + 0.1 * torch.randn(H)
        t[p + "post_attention_layernorm.weight"] = 1 + 0.1 * torch.randn(H)
        for name, shape in (("self_attn.q_proj", (nh * hd, H)), ("self_attn.k_proj", (nkv * hd, H)),
                            ("self_attn.v_proj", (nkv * hd, H)), ("self_attn.o_proj", (H, nh * hd)),
                            ("mlp.gate_proj", (I, H)), ("mlp.up_proj", (I, H)),
                            ("mlp.down_proj", (H, I))):
            t[p + name + ".weight"] = torch.randn(*shape) / math.sqrt(shape[1])
        for name, rows in (("self_attn.q_proj", nh * hd), ("self_attn.k_proj", nkv * hd),
                           ("self_attn.v_proj", nkv * hd)):
            t[p + name + ".bias"] = 0.1 * torch.randn(rows)
    hfl.write_safetensors(os.path.join(out_dir, "model.safetensors"), t)
    tokens = torch.randint(0, V, (6, T), dtype=torch.int32)
    hfl.write_safetensors(os.path.join(out_dir, "tokens.safetensors"), {"tokens": tokens})


def main():
    ap = argparse.ArgumentParser(description="Reference gradients (PyTorch autograd, F32).")
    ap.add_argument("--model")
    ap.add_argument("--calibration")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--out")
    ap.add_argument("--no-fisher", action="store_true")
    ap.add_argument("--make-tiny", metavar="DIR")
    a = ap.parse_args()
    if a.make_tiny:
        make_tiny(a.make_tiny)
        return
    if not (a.model and a.calibration and a.out):
        ap.error("--model, --calibration and --out are needed")
    with open(os.path.join(a.model, "config.json")) as fh:
        mt = json.load(fh).get("model_type")
    setup = mlp_setup if mt == "mlp" else llama_setup
    params, _, row_loss = setup(a.model, a.calibration, a.rows)
    names = sorted(params)
    g = {n: torch.zeros_like(params[n]) for n in names}
    fisher = {n: torch.zeros_like(params[n]) for n in names}
    for r in range(a.rows):
        loss = row_loss(r)
        grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
        for n, gr in zip(names, grads):
            if gr is None:
                continue
            g[n] += gr
            fisher[n] += gr * gr
    out = {n: g[n] / a.rows for n in names}
    if not a.no_fisher:
        out.update({"fisher." + n: fisher[n] for n in names})
    hfl.write_safetensors(a.out, {k: v.detach().contiguous() for k, v in out.items()})


if __name__ == "__main__":
    main()
