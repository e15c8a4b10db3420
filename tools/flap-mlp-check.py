#!/usr/bin/env python3
"""flap-mlp-check.py: FLAP on an mlp, written apart from the engine.

An independent check of the engine's FLAP (An et al., AAAI 2024) on an mlp
of the fixture family (config.json "layers", ReLU between them): each
hidden layer in turn, on the calibration rows as the layers before it left
them, scores its units by the variance of their activations over the rows
(unbiased) times the squared norm of the next layer's column, keeps the
highest half (or --keep), and with compensation adds the removed units'
mean contribution W[:, P] . mean(x_P) to the next layer's bias. It prints
the evaluation accuracy without and with compensation, and with the
evaluation set's own means (an oracle the engine cannot use), in F64.

    python3 tools/flap-mlp-check.py --model DIR --calibration FILE \\
        --evaluation FILE [--keep 0.5]

Compare with `shears prune --method flap --neurons 0.5 [--no-compensate]`
over the same files (README, "Structured pruning"). Debian's python3-torch.
"""

import argparse
import json
import os
import struct

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32}


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        s, e = t["data_offsets"]
        buf = bytearray(raw[8 + n + s:8 + n + e])
        out[name] = torch.frombuffer(buf, dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
    return out


def accuracy(ws, bs, x, y):
    h = x
    for i, (w, b) in enumerate(zip(ws, bs)):
        h = h @ w.T + b
        if i + 1 < len(ws):
            h = h.clamp_min(0)
    return (h.argmax(1) == y).double().mean().item()


def flap(ws, bs, xc, xe, keep, compensate, oracle):
    ws = [w.clone() for w in ws]
    bs = [b.clone() for b in bs]
    hc, he = xc, xe
    for i in range(len(ws) - 1):
        ac = (hc @ ws[i].T + bs[i]).clamp_min(0)  # the next layer's inputs
        ae = (he @ ws[i].T + bs[i]).clamp_min(0)
        score = ac.var(0, unbiased=True) * (ws[i + 1] ** 2).sum(0)
        n = score.numel()
        kept = torch.sort(score.argsort(descending=True)[:round(n * keep)]).values
        gone = torch.ones(n, dtype=torch.bool)
        gone[kept] = False
        if compensate:
            mean = (ae if oracle else ac).mean(0)
            bs[i + 1] = bs[i + 1] + ws[i + 1][:, gone] @ mean[gone]
        ws[i], bs[i] = ws[i][kept], bs[i][kept]
        ws[i + 1] = ws[i + 1][:, kept]
        hc, he = ac[:, kept], ae[:, kept]
    return ws, bs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--evaluation", required=True)
    ap.add_argument("--keep", type=float, default=0.5)
    a = ap.parse_args()
    with open(os.path.join(a.model, "config.json")) as f:
        names = json.load(f)["layers"]
    m = load(os.path.join(a.model, "model.safetensors"))
    ws = [m[n + ".weight"].double() for n in names]
    bs = [m[n + ".bias"].double() for n in names]
    xc = load(a.calibration)["inputs"].double()
    ev = load(a.evaluation)
    xe, ye = ev["inputs"].double(), ev["labels"]
    print("dense                        %.4f" % accuracy(ws, bs, xe, ye))
    for label, comp, oracle in (("flap, no compensation", False, False),
                                ("flap, compensated", True, False),
                                ("flap, evaluation means", True, True)):
        w2, b2 = flap(ws, bs, xc, xe, a.keep, comp, oracle)
        print("%-28s %.4f" % (label, accuracy(w2, b2, xe, ye)))


if __name__ == "__main__":
    main()
