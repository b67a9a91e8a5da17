"""Smoke test of the self-distillation pipeline (distill.py) on a random-weight checkpoint.

  python3 test_distill.py --tern build/src/cli/tern [--like tiny|smolvlm-256m] [--steps N]

1. make_random_hf.py writes the checkpoint (HF layout, BF16, tied or untied lm_head).
2. ternarize.py --from runs: load, k-means init, --steps fine-tuning steps, export, tern convert +
   tern quantize to TQ2_0. The held-out KL after fine-tuning must be below the one after the
   k-means initialisation, and the training KL must fall.
3. The exported float-layout model (OUT/hf) scores OUT/check.jsonl in Python (model.py, with
   the Idefics3 tiling and prompt of preprocess_tiles/image_block) and through `tern
   perplexity` on its f16 GGUF: the NLLs must agree, which checks the Python image splitting,
   prompt and forward pass against the engine's.
4. `tern run` answers a question about a picture with the TQ2_0 pair (exit status 0).
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import model as M  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402


def check_model_io(tmp):
    """model.py reads tests/make_hf_fixture.py's sharded BF16/F16/F32 checkpoint, and a tied
    lm_head survives save_hf/load_hf (not written, shared again on load)."""
    fx = os.path.join(tmp, "fixture")
    subprocess.run([sys.executable, os.path.join(HERE, "..", "tests", "make_hf_fixture.py"),
                    fx], check=True)
    m = M.load_hf(fx)
    assert not M.tied(m.config) and m.tcfg["rope_theta"] == 100000.0
    assert m.processor["split"] and m.processor["tile"] == 32, m.processor
    assert not torch.equal(m.lm_head.weight, m.model.text_model.embed_tokens.weight)
    cfg = M.demo_config(300, 4, tie_word_embeddings=True)
    t = M.build_model(cfg)
    assert t.lm_head.weight is t.model.text_model.embed_tokens.weight
    M.save_hf(t, os.path.join(tmp, "tied"))
    names = M.load_safetensors(os.path.join(tmp, "tied", "model.safetensors"))
    assert "lm_head.weight" not in names
    t2 = M.load_hf(os.path.join(tmp, "tied"))
    assert t2.lm_head.weight is t2.model.text_model.embed_tokens.weight
    ids = torch.tensor([[1, 5, 9, 4, 4, 4, 4, 4, 4, 4, 4, 4, 7]])
    px = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(t.eval()(ids, px), t2.eval()(ids, px), atol=1e-6)


def check_engine_pixels():
    """Python's pictures are the engine's: tests/data/images' transparent PNGs and EXIF-rotated
    JPEGs load (data.to_rgb) as their committed references, the pixels the C engine's tests
    hold src/engine/image.c to, and preprocess_tiles starts from those pixels."""
    import numpy as np
    import data as D
    imgs = os.path.join(HERE, "..", "tests", "data", "images")
    names = ["rgba.png", "palette.png", "rgb.png"] + [f"orient{i}.jpg" for i in range(1, 9)]
    proc = {"tile": 16, "longest_edge": 32, "split": True, "mean": [0.5] * 3, "std": [0.5] * 3}
    for name in names:
        with Image.open(os.path.join(imgs, name)) as im:
            got = np.asarray(D.to_rgb(im), dtype=np.uint8)
            tiles = M.preprocess_tiles(im, proc)
        want = np.fromfile(os.path.join(imgs, os.path.splitext(name)[0] + ".rgb"), np.uint8)
        assert got.tobytes() == want.tobytes(), f"{name}: to_rgb differs from its .rgb reference"
        ref = M.preprocess_tiles(Image.fromarray(got), proc)
        assert tiles[:2] == ref[:2], name
        assert torch.equal(tiles[2], ref[2]), name


def pictures(out):
    """Four demo pictures (square, 96-256 px) and one wide picture, so tiling has rows != cols."""
    src = os.path.join(HERE, "..", "tests", "data", "shapes", "test")
    os.makedirs(out)
    for name in sorted(os.listdir(src))[:4]:
        with Image.open(os.path.join(src, name)) as im:
            im.convert("RGB").save(os.path.join(out, os.path.splitext(name)[0] + ".png"))
    w = Image.new("RGB", (300, 140), (30, 90, 160))
    for x in range(0, 300, 20):
        for y in range(0, 140, 20):
            if (x + y) // 20 % 3 == 0:
                w.paste((230, 200, 40), (x, y, x + 10, y + 10))
    w.save(os.path.join(out, "wide.png"))


@torch.no_grad()
def python_nll(hf, data):
    """Mean NLL per answer token (" ANSWER<end_of_utterance>") of data's lines under hf, with
    the same inputs tern perplexity builds."""
    model = M.load_hf(hf).eval()
    tok = Tokenizer.load(os.path.join(hf, "tokenizer.json"))
    n_img = M.image_seq_len(model.config)
    total, ntok = 0.0, 0
    for line in open(data):
        r = json.loads(line)
        with Image.open(r["image"]) as im:
            rows, cols, px = M.preprocess_tiles(im, model.processor)
        text = "<|im_start|>User:" + M.image_block(rows, cols, n_img) + r["prompt"] + \
            "<end_of_utterance>\nAssistant:"
        p = tok.encode(text)
        full = tok.encode(text + " " + r["answer"] + "<end_of_utterance>")
        feats = model.image_features(px).reshape(-1, model.tcfg["hidden_size"])
        logits = model(torch.tensor([full]), image_feats=feats)[0]
        lg = logits[len(p) - 1:len(full) - 1]
        total += float(F.cross_entropy(lg, torch.tensor(full[len(p):]), reduction="sum"))
        ntok += len(full) - len(p)
    return total / ntok


def tern_nll(tern, prefix, data):
    out = subprocess.run([tern, "perplexity", "-m", prefix + ".gguf", "--mmproj",
                          prefix + "-mmproj.gguf", "--data", data, "-t", "1"],
                         check=True, capture_output=True, text=True).stdout
    m = re.search(r"^all .*nll/token ([0-9.]+)", out, re.M)
    assert m, out
    return float(m.group(1))


def check_grounded():
    """distill_demo's questions grounded in the teacher's description: the (colour, shape) pairs
    it names, a colour question only for a shape named once, a 'no' question about a pair not
    named, no question about a shape not named."""
    import random
    import distill_demo as DD
    objs = DD.named_objects("A small Black cross at the bottom right and a red circle, "
                            "and a red star.")
    assert objs == [("black", "cross"), ("red", "circle"), ("red", "star")], objs
    assert DD.named_objects("Three shapes.") == []
    qs = DD.grounded_questions(objs, random.Random(0))
    shape_qs = [q for q in qs if q in [t.format(color=c) for t in DD.ASK["shape"]
                                       for c in ("red", "black")]]
    assert len(shape_qs) == 1 and "black" in shape_qs[0], qs  # red is named twice
    for shape in ("cross", "circle", "star"):
        assert any(q == t.format(shape=shape) for t in DD.ASK["color"] for q in qs), (shape, qs)
    for shape in ("square", "triangle", "hexagon", "diamond"):
        assert not any(q == t.format(shape=shape) for t in DD.ASK["where"] for q in qs), qs
    exists = [q for q in qs if q.startswith(("Is there", "Do you", "Can you"))]
    named = sum(any(f"{c} {s}" in q for c, s in objs) for q in exists)
    assert len(exists) == 4 and named == 3, exists
    assert len(DD.grounded_questions([], random.Random(0))) == 3


def check_init_and_cache(out, args, out2):
    """A second run in a new OUT with the first run's teacher cache copied in, other questions
    (a JSONL's own, --questions none), --init from the first run's checkpoint: the cached answers
    were made for other questions, so the held-out prompts must get new ones (the records' keys
    name picture, question and answer length), and only the JSONL's questions are asked; the
    step-0 log line names the checkpoint; --keep-ckpt keeps ckpt-1.pt."""
    shutil.copytree(os.path.join(out, "teacher"), os.path.join(out2, "teacher"))
    jsonl = os.path.join(out2, "prompts.jsonl")
    pics = sorted({json.loads(x)["image"] for x in open(os.path.join(out, "check.jsonl"))})
    with open(jsonl, "w") as f:
        for img in pics:
            for q in ("Is it dark?", "What is at the bottom?"):
                f.write(json.dumps({"image": img, "prompt": q, "answer": "ignored"}) + "\n")
    init = os.path.join(out, "ckpt.pt")
    args = [jsonl if x == args[args.index("--images") + 1] else x for x in args]
    more = ["--out", out2, "--init", init, "--questions", "none", "--steps", "2",
            "--keep-ckpt", "1", "--types", "none", "--eval-every", "2", "--ckpt-every", "2"]
    subprocess.run([sys.executable, os.path.join(HERE, "ternarize.py")] + args + more,
                   check=True)
    first = json.loads(open(os.path.join(out2, "log.jsonl")).readline())
    assert first["step"] == 0 and first["init"] == init, first
    assert os.path.exists(os.path.join(out2, "ckpt-1.pt"))
    keys = [torch.load(os.path.join(out2, "teacher", f))["key"]
            for f in sorted(os.listdir(os.path.join(out2, "teacher")))]
    for line in open(os.path.join(out2, "check.jsonl")):
        r = json.loads(line)
        assert r["prompt"] in ("Is it dark?", "What is at the bottom?"), r
        assert [r["image"], r["prompt"], 8] in keys, (r, keys)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tern", required=True)
    ap.add_argument("--like", default="tiny", choices=["tiny", "smolvlm-256m"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                    help="further distill.py options (last on the line)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    check_grounded()
    check_engine_pixels()
    with tempfile.TemporaryDirectory(prefix="distill-smoke-") as tmp:
        check_model_io(tmp)
        ckpt, pics, out = (os.path.join(tmp, d) for d in ("hf", "pics", "out"))
        subprocess.run([sys.executable, os.path.join(HERE, "make_random_hf.py"), "--like",
                        a.like, "--out", ckpt], check=True)
        pictures(pics)
        # lr 1e-3: random weights at std 0.02 need a larger step than a trained model's 1e-4
        args = ["--from", ckpt, "--images", pics, "--out", out, "--steps", str(a.steps),
                "--eval-every", str(a.steps), "--ckpt-every", str(a.steps), "--max-new", "8",
                "--val", "3", "--lr", "1e-3", "--log-every", str(max(1, a.steps // 3)),
                "--tern", a.tern]
        if a.like == "smolvlm-256m":  # one 512 px tile, float vision: the CPU settings
            args += ["--longest-edge", "512", "--keep-vision"]
        args += a.extra
        subprocess.run([sys.executable, os.path.join(HERE, "ternarize.py")] + args, check=True)

        log = [json.loads(x) for x in open(os.path.join(out, "log.jsonl"))]
        val = [r["val_kl"] for r in log if "val_kl" in r]
        kl = [r["kl"] for r in log if "kl" in r]
        last = [r for r in log if "kl" in r][-1]
        print(f"held-out KL {val[0]:.5f} -> {val[-1]:.5f}; training KL {kl[0]:.5f} -> "
              f"{kl[-1]:.5f}; last steps: {last['s_per_step']:.2f} s/step "
              f"({last['student_s_per_step']:.2f} without the teacher's answers), peak RSS "
              f"{last['peak_rss_mib']:.0f} MiB")
        assert val[-1] < val[0], f"held-out KL did not fall: {val}"
        assert kl[-1] < kl[0], f"training KL did not fall: {kl}"

        data = os.path.join(out, "check.jsonl")
        py = python_nll(os.path.join(out, "hf"), data)
        c = tern_nll(a.tern, os.path.join(out, "model-f16"), data)
        tq = tern_nll(a.tern, os.path.join(out, "model-tq2_0"), data)
        print(f"NLL/token of the teacher's held-out answers: python {py:.4f}, tern f16 {c:.4f}, "
              f"tern tq2_0 {tq:.4f}")
        assert math.isclose(py, c, rel_tol=2e-3, abs_tol=2e-3), (py, c)
        assert math.isclose(c, tq, rel_tol=2e-2, abs_tol=2e-2), (c, tq)

        first = json.loads(open(data).readline())
        r = subprocess.run([a.tern, "run", "-m", os.path.join(out, "model-tq2_0.gguf"),
                            "--mmproj", os.path.join(out, "model-tq2_0-mmproj.gguf"),
                            "--image", first["image"], "-p", first["prompt"], "-n", "8",
                            "-t", "1"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        print(f"tern run: {r.stdout!r}")
        check_init_and_cache(out, args, os.path.join(tmp, "out2"))
        print("distill smoke test passed")


if __name__ == "__main__":
    main()
