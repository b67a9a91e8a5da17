"""Evidence for the self-distillation process on the demo model (docs/ternarize.md).

  python3 distill_demo.py --data DIR --out OUT [--steps N] [--batch B] [--images N]

DIR is a data.py output with train.npz (python3 data.py --out DIR --splits train --train 600).
Only its *pictures* and *questions* are used, never its answers: the pictures are written as
PNG files and the questions as a JSONL without answers, then distill.py fine-tunes a ternary
copy of models/hf/float against the float model (every linear layer ternary, --keep none, as
the label-trained TQ2_0 model) twice: from the k-means initialisation and from absmean.

Writes OUT/results.json: the held-out KL curves of both runs, the step at which k-means first
reaches absmean's final KL, and `tern perplexity` exact match on tests/data/shapes/test.jsonl
of the distilled TQ2_0 model, the shipped label-trained TQ2_0 model and post-training k-means
TQ2_0 (tern quantize of the float GGUF, no fine-tuning); OUT/kl.png: the two KL curves.
"""

import argparse
import json
import os
import re
import subprocess
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import data as D  # noqa: E402


def write_inputs(data_dir, out, n):
    pixels, meta = D.load_split(os.path.join(data_dir, "train.npz"))
    pics = os.path.join(out, "pics")
    os.makedirs(pics, exist_ok=True)
    path = os.path.join(out, "prompts.jsonl")
    with open(path, "w") as f:
        for i in range(min(n, len(meta))):
            name = f"pics/{i:05d}.png"
            Image.fromarray(np.asarray(pixels[i])).save(os.path.join(out, name))
            for q, _answer in meta[i]["questions"].values():  # the answer is not used
                f.write(json.dumps({"image": name, "prompt": q}) + "\n")
    return path


def exact(tern, model, mmproj, data):
    out = subprocess.run([tern, "perplexity", "-m", model, "--mmproj", mmproj, "--data", data,
                          "-t", "1"], check=True, capture_output=True, text=True).stdout
    m = re.search(r"^all .*nll/token ([0-9.]+).*exact ([0-9.]+)", out, re.M)
    return {"nll": float(m.group(1)), "exact": float(m.group(2))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--val", type=int, default=48, help="held-out prompts")
    ap.add_argument("--tern", default=os.path.join(ROOT, "build", "src", "cli", "tern"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    prompts = write_inputs(a.data, a.out, a.images)
    teacher = os.path.join(ROOT, "models", "hf", "float")
    curves, runs = {}, {}
    for mode in ("kmeans", "absmean"):  # side by side, one thread each
        args = ["--from", teacher, "--images", prompts, "--out", os.path.join(a.out, mode),
                "--keep", "none", "--mode", mode, "--steps", str(a.steps),
                "--batch", str(a.batch), "--lr", str(a.lr), "--eval-every", str(a.eval_every),
                "--val", str(a.val), "--ckpt-every", str(a.eval_every), "--tern", a.tern,
                "--types", "tq2_0" if mode == "kmeans" else "none"]
        if os.path.exists(os.path.join(a.out, mode, "ckpt.pt")):
            args.append("--resume")
        runs[mode] = subprocess.Popen([sys.executable, os.path.join(HERE, "distill.py")] + args)
    for mode, p in runs.items():
        if p.wait() != 0:
            raise SystemExit(f"distill.py --mode {mode} failed")
        log = [json.loads(x) for x in open(os.path.join(a.out, mode, "log.jsonl"))]
        curves[mode] = [(r["step"], r["val_kl"]) for r in log if "val_kl" in r]
    target = curves["absmean"][-1][1]
    reach = next((s for s, k in curves["kmeans"] if k <= target), None)

    test = os.path.join(ROOT, "tests", "data", "shapes", "test.jsonl")
    models = os.path.join(ROOT, "models")
    ptq = os.path.join(a.out, "ptq-tq2_0")
    for suffix, src in (("", "tern-demo-f16.gguf"), ("-mmproj", "tern-demo-mmproj-f16.gguf")):
        subprocess.run([a.tern, "quantize", os.path.join(models, src), ptq + suffix + ".gguf",
                        "--type", "tq2_0"], check=True, capture_output=True)
    res = {
        "steps": a.steps, "batch": a.batch, "lr": a.lr, "pictures": a.images,
        "held_out_kl": curves, "absmean_final_kl": target, "kmeans_step_to_reach_it": reach,
        "test_exact": {
            "self_distilled_tq2_0": exact(a.tern, os.path.join(a.out, "kmeans",
                                                               "model-tq2_0.gguf"),
                                          os.path.join(a.out, "kmeans",
                                                       "model-tq2_0-mmproj.gguf"), test),
            "label_trained_tq2_0": exact(a.tern, os.path.join(models, "tern-demo-tq2_0.gguf"),
                                         os.path.join(models, "tern-demo-mmproj-tq2_0.gguf"),
                                         test),
            "ptq_kmeans_tq2_0": exact(a.tern, ptq + ".gguf", ptq + "-mmproj.gguf", test),
            "float_f16": exact(a.tern, os.path.join(models, "tern-demo-f16.gguf"),
                               os.path.join(models, "tern-demo-mmproj-f16.gguf"), test),
        },
    }
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res["test_exact"], indent=1), f"\nk-means reaches absmean's final KL "
          f"{target:.4f} at step {reach} of {a.steps}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for mode, c in curves.items():
        ax.plot([s for s, _ in c], [k for _, k in c], marker=".", label=f"{mode} init")
    ax.axhline(target, color="grey", lw=0.8, ls="--", label="absmean final")
    ax.set_yscale("log")
    ax.set_xlabel(f"step (batch {a.batch} prompts)")
    ax.set_ylabel("held-out KL(teacher || student)")
    ax.set_title("Demo model, self-distillation to ternary (no labels)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "kl.png"))


if __name__ == "__main__":
    main()
