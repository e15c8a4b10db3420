#!/usr/bin/env python3
"""finetune.py: a briefly fine-tuned copy of a fixture, for movement pruning.

Movement (`method: movement`) scores W (W - W_base): it needs a model and
the checkpoint it was fine-tuned from. This script makes such a pair from
a fixture: Adam on the model's own loss (the metric's: next-token NLL for
the Llama family, cross-entropy for an mlp) over rows of a dataset, then
the weights written in F32 under their names with the fixture's
config.json. The fixture is the base.

    python3 tools/finetune.py --model DIR --data FILE --out DIR \\
        [--steps 200] [--lr 1e-3] [--batch 8] [--seed 0]

Debian's python3-torch; the model math is tools/ref-gradients.py's.
"""

import argparse
import importlib.util
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("refgrad", os.path.join(HERE, "ref-gradients.py"))
rg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rg)
torch = rg.torch


def main():
    ap = argparse.ArgumentParser(description="Fine-tune a fixture briefly (Adam, F32).")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, help="rows to train on (tokens or inputs/labels)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rows", type=int, default=0, help="rows of the data to use (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    with open(os.path.join(a.model, "config.json")) as fh:
        mt = json.load(fh).get("model_type")
    setup = rg.mlp_setup if mt == "mlp" else rg.llama_setup
    params, total, row_loss = setup(a.model, a.data, a.rows or None)
    n = min(total, a.rows) if a.rows else total
    opt = torch.optim.Adam(list(params.values()), lr=a.lr)
    for step in range(a.steps):
        idx = torch.randint(0, n, (a.batch,))
        loss = sum(row_loss(int(r)) for r in idx) / a.batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == a.steps - 1:
            print("step %d loss %.4f" % (step, loss.item()))
    os.makedirs(a.out, exist_ok=True)
    shutil.copy(os.path.join(a.model, "config.json"), os.path.join(a.out, "config.json"))
    rg.hfl.write_safetensors(os.path.join(a.out, "model.safetensors"),
                             {k: v.detach().contiguous() for k, v in params.items()})


if __name__ == "__main__":
    main()
