"""Evidence for the self-distillation process on the demo model (docs/ternarize.md).

  python3 distill_demo.py --data DIR --out OUT [--steps N] [--batch B] [--images N]
  python3 distill_demo.py ground --pics DIR --out OUT   (questions grounded in the teacher's
                                                         descriptions, see write_grounded)

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
import random
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


# The demo camera's user-written question list (docs/ternarize.md, "Which questions") with its
# colour and shape left open, filled per picture with what the teacher itself says it sees: the
# same phrasings as the training data's.
ASK = {k: D.PHRASES[k] for k in ("color", "shape", "where", "exists")}
GENERIC = ["Describe the image.", "What do you see?", "What is in the image?",
           "Describe this picture.", "What does the image show?", "How many shapes are there?",
           "How many objects are in the image?", "Count the shapes."]


def named_objects(text):
    """(colour, shape) pairs a description names, in order ("a small black cross": black, cross)."""
    rx = re.compile(r"\b(%s)\s+(%s)" % ("|".join(D.COLOR_NAMES), "|".join(D.SHAPES)), re.I)
    return [(c.lower(), s.lower()) for c, s in rx.findall(text)]


def grounded_questions(objs, rng):
    """Questions about what a picture has, from the (colour, shape) pairs the teacher named: per
    object its colour (when its shape is named once), its shape (when its colour is named once),
    where it is and whether it is there; one 'is there' about a pair not named (a 'no'), and
    two generic lines (a description, a count)."""
    qs = []
    shapes, colors = [s for _, s in objs], [c for c, _ in objs]
    for c, s in dict.fromkeys(objs):
        a = "an" if c[0] in "aeiou" else "a"
        if shapes.count(s) == 1:
            qs.append(rng.choice(ASK["color"]).format(shape=s))
        if colors.count(c) == 1:
            qs.append(rng.choice(ASK["shape"]).format(color=c))
        if shapes.count(s) == 1:
            qs.append(rng.choice(ASK["where"]).format(shape=s))
        qs.append(rng.choice(ASK["exists"]).format(a=a, color=c, shape=s))
    absent = [(c, s) for c in D.COLOR_NAMES for s in D.SHAPES if (c, s) not in objs]
    c, s = rng.choice(absent)
    qs.append(rng.choice(ASK["exists"]).format(a="an" if c[0] in "aeiou" else "a", color=c,
                                               shape=s))
    qs += rng.sample(GENERIC[:5], 1) + rng.sample(GENERIC[5:], 1)
    return qs


def write_grounded(src, images, out, seed=1):
    """OUT/prompts.jsonl: for every picture the teacher's description (OUT/teacher/ caches it),
    then grounded_questions() of what it names. No labels: only the float model's own words."""
    import distill as DS
    import model as M
    from tokenizer import Tokenizer
    a = DS.parser().parse_args(["--from", src, "--images", images, "--out", out,
                                "--types", "none"])
    teacher = M.load_hf(src).eval().requires_grad_(False)
    tok = Tokenizer.load(os.path.join(src, "tokenizer.json"))
    sources = DS.read_sources(images)
    pairs = DS.Pairs(a, teacher, False, tok, sources, ["Describe the image."])
    rng, n_obj = random.Random(seed), 0
    with open(os.path.join(out, "prompts.jsonl"), "w") as f:
        for k, (i, _q) in enumerate(pairs.pairs):
            text = pairs.answer_text(pairs.get(k)["answer"])
            objs = named_objects(text)
            n_obj += len(objs)
            for q in grounded_questions(objs, rng):
                f.write(json.dumps({"image": os.path.abspath(sources[i][0]), "prompt": q,
                                    "teacher_description": text}) + "\n")
    print(f"grounded questions: {len(sources)} pictures, {n_obj} objects named by the teacher",
          file=sys.stderr)


def exact(tern, model, mmproj, data):
    out = subprocess.run([tern, "perplexity", "-m", model, "--mmproj", mmproj, "--data", data,
                          "-t", "1"], check=True, capture_output=True, text=True).stdout
    m = re.search(r"^all .*nll/token ([0-9.]+).*exact ([0-9.]+)", out, re.M)
    return {"nll": float(m.group(1)), "exact": float(m.group(2))}


def main_ground():
    ap = argparse.ArgumentParser(prog="distill_demo.py ground", description=write_grounded.__doc__)
    ap.add_argument("--pics", required=True, help="a folder of pictures")
    ap.add_argument("--out", required=True, help="writes OUT/prompts.jsonl (OUT/teacher: cache)")
    ap.add_argument("--from", dest="src", default=os.path.join(ROOT, "models", "hf", "float"))
    ap.add_argument("--seed", type=int, default=1, help="draws the phrasings")
    a = ap.parse_args(sys.argv[2:])
    write_grounded(a.src, a.pics, a.out, a.seed)


def main():
    if sys.argv[1:2] == ["ground"]:
        return main_ground()
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
