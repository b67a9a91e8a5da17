"""Deepen the float model's decoder by inserting identity layers into a training checkpoint.

  python3 grow.py CKPT_IN CKPT_OUT --after 0,1

A new layer starts as the identity: its o_proj and down_proj are zero, so the residual stream
passes through unchanged and the grown model computes exactly what the checkpoint did; its other
weights start random, so training can put them to use. Used by run.sh: the 3-layer decoder learns
to read the image quickly, but finding an object named in the question ("What colour is the
circle?") needs a question-to-answer hop before the answer-to-image hop, and that learning stalled
with 3 layers. The optimizer state is dropped (train.py starts a fresh one).
"""

import argparse
import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt_in")
    ap.add_argument("ckpt_out")
    ap.add_argument("--after", default="0,1", help="insert a new layer after each of these")
    a = ap.parse_args()
    st = torch.load(a.ckpt_in, map_location="cpu")
    cfg = copy.deepcopy(st["config"])
    after = sorted(int(x) for x in a.after.split(","))
    n_old = cfg["text_config"]["num_hidden_layers"]
    cfg["text_config"]["num_hidden_layers"] = n_old + len(after)
    fresh = M.build_model(cfg).state_dict()
    pre = "model.text_model.layers."
    old = st["model"]
    new = {k: v for k, v in old.items() if not k.startswith(pre)}
    j = 0
    for i in range(n_old):
        for k, v in old.items():
            if k.startswith(f"{pre}{i}."):
                new[f"{pre}{j}." + k[len(f"{pre}{i}."):]] = v
        j += 1
        if i in after:
            for k, v in fresh.items():
                if k.startswith(f"{pre}{j}."):
                    zero = k.endswith("o_proj.weight") or k.endswith("down_proj.weight")
                    new[k] = torch.zeros_like(v) if zero else v
            j += 1
    out = {"model": new, "step": st["step"], "config": cfg}
    if "head" in st:
        out["head"] = st["head"]
    torch.save(out, a.ckpt_out)
    print(f"{a.ckpt_in} ({n_old} decoder layers) -> {a.ckpt_out} ({j}), step {st['step']}")


if __name__ == "__main__":
    main()
