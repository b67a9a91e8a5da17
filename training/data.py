"""Synthetic pictures of coloured shapes, with questions and answers about them.

A scene is 1-3 shapes (7 kinds, 8 colours, 2 sizes) in distinct cells of a 3x3 grid, on a plain,
gradient, striped, checked or blotchy background. Rendering: 4x supersampled polygons (so edges
are antialiased after the downscale), slight rotation, position and colour jitter, a source
resolution drawn from 96..256 px, optional Gaussian blur, pixel noise, JPEG at quality 40..95.
The model sees the image as the Idefics3 processor makes it (model.preprocess): one LANCZOS
resize to the model's square input.

Each image gets questions of six types; a question is only asked when its answer is unique
(e.g. "What color is the circle?" only with exactly one circle). Splits are drawn from disjoint
seed ranges, so the test split is never trained on.

  python3 data.py --out DIR [--train N --val N --test N]
writes DIR/{train,val,test}.npz (uint8 images at the model size + questions as JSON) and the
tokenizer (DIR/tokenizer.json, trained on corpus_texts()) and the test split for the C engine: DIR/test/NNNNN.{jpg,png} (the source image, before the processor's
resize) and DIR/test.jsonl lines {"image", "prompt", "answer", "qtype"}.
"""

import argparse
import io
import json
import math
import os
import random
import sys
from multiprocessing import Pool

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond", "cross"]
COLORS = {
    "red": (220, 35, 35), "green": (35, 165, 60), "blue": (35, 80, 225),
    "yellow": (245, 220, 35), "orange": (250, 140, 25), "purple": (145, 55, 190),
    "white": (248, 248, 248), "black": (18, 18, 18),
}
COLOR_NAMES = list(COLORS)
ROWS = ["top", "middle", "bottom"]
COLS = ["left", "center", "right"]
# Where a shape in cell (row, col) is, as a phrase for descriptions and "where" answers.
PLACE = [["at the top left", "at the top", "at the top right"],
         ["on the left", "in the center", "on the right"],
         ["at the bottom left", "at the bottom", "at the bottom right"]]
NUMBERS = ["Zero", "One", "Two", "Three"]

PHRASES = {
    "describe": ["Describe the image.", "What is in the image?", "What do you see?",
                 "Describe this picture.", "What does the image show?"],
    "count": ["How many shapes are there?", "How many objects are in the image?",
              "Count the shapes.", "How many shapes do you see?"],
    "color": ["What color is the {shape}?", "What colour is the {shape}?",
              "Which color is the {shape}?", "What is the color of the {shape}?"],
    "shape": ["What shape is the {color} object?", "What shape is the {color} one?",
              "Which shape is {color}?", "What is the {color} shape?"],
    "where": ["Where is the {shape}?", "Where is the {shape} located?",
              "In which part of the image is the {shape}?", "Where can you see the {shape}?"],
    "exists": ["Is there {a} {color} {shape}?", "Is there {a} {color} {shape} in the image?",
               "Do you see {a} {color} {shape}?", "Can you see {a} {color} {shape}?"],
}
QTYPES = list(PHRASES)

RENDER = 288            # supersampled canvas (3x the model's 96 px)
# Never below the model's 96 px: an upscaled 64 px source adds blur, not detail, and made a
# small hexagon and a small circle (8 px across) indistinguishable.
SOURCE_SIZES = [96, 112, 128, 144, 160, 192, 224, 256]


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def cap(s):
    return s[0].upper() + s[1:]


# ---------------------------------------------------------------------------------------------
# Scenes


def sample_scene(rng):
    n = rng.randint(1, 3)
    cells = rng.sample(range(9), n)
    objs = []
    for c in sorted(cells):
        objs.append({"shape": rng.choice(SHAPES), "color": rng.choice(COLOR_NAMES),
                     "size": rng.choice(["large", "small"]), "row": c // 3, "col": c % 3})
    return objs  # in reading order


def noun_phrase(o, first):
    words = ([] if o["size"] == "large" else ["small"]) + [o["color"], o["shape"]]
    a = article(words[0])
    return f"{cap(a) if first else a} {' '.join(words)} {PLACE[o['row']][o['col']]}"


def describe(objs):
    parts = [noun_phrase(o, i == 0) for i, o in enumerate(objs)]
    if len(parts) == 1:
        return parts[0] + "."
    return ", ".join(parts[:-1]) + " and " + parts[-1] + "."


def questions(objs, rng, canonical_p=0.3):
    """One question per type where one can be asked: {qtype: (prompt, answer)}."""
    def phr(qt, **kw):
        ps = PHRASES[qt]
        p = ps[0] if rng.random() < canonical_p else rng.choice(ps)
        return p.format(**kw)

    out = {"describe": (phr("describe"), describe(objs)),
           "count": (phr("count"), NUMBERS[len(objs)] + ".")}
    unique_shapes = [s for s in SHAPES if sum(o["shape"] == s for o in objs) == 1]
    if unique_shapes:
        s = rng.choice(unique_shapes)
        o = next(o for o in objs if o["shape"] == s)
        out["color"] = (phr("color", shape=s), cap(o["color"]) + ".")
    if unique_shapes:
        s = rng.choice(unique_shapes)
        o = next(o for o in objs if o["shape"] == s)
        out["where"] = (phr("where", shape=s), cap(PLACE[o["row"]][o["col"]]) + ".")
    unique_colors = [c for c in COLOR_NAMES if sum(o["color"] == c for o in objs) == 1]
    if unique_colors:
        c = rng.choice(unique_colors)
        o = next(o for o in objs if o["color"] == c)
        out["shape"] = (phr("shape", color=c), cap(article(o["shape"])) + " " + o["shape"] + ".")
    present = {(o["color"], o["shape"]) for o in objs}
    if rng.random() < 0.5:
        c, s = rng.choice(sorted(present))
        ans = "Yes."
    else:
        while True:
            r = rng.random()
            o = rng.choice(objs)
            if r < 0.35:     # right shape, wrong colour
                c, s = rng.choice(COLOR_NAMES), o["shape"]
            elif r < 0.7:    # right colour, wrong shape
                c, s = o["color"], rng.choice(SHAPES)
            else:
                c, s = rng.choice(COLOR_NAMES), rng.choice(SHAPES)
            if (c, s) not in present:
                break
        ans = "No."
    out["exists"] = (phr("exists", a=article(c), color=c, shape=s), ans)
    return out


# ---------------------------------------------------------------------------------------------
# Rendering


def _mid_color(rng):
    """A muted mid-tone, far from every named colour (low saturation, mid value)."""
    v = rng.uniform(0.38, 0.68)
    s = rng.uniform(0.0, 0.3)
    h = rng.random()
    import colorsys
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return np.array([r, g, b]) * 255


def background(rng, nrng, size):
    kind = rng.choice(["plain", "plain", "gradient", "stripes", "checker", "blotch"])
    c1, c2 = _mid_color(rng), _mid_color(rng)
    if kind == "plain":
        img = np.broadcast_to(c1, (size, size, 3)).copy()
    elif kind == "gradient":
        t = np.linspace(0, 1, size)[:, None, None]
        img = c1 * (1 - t) + c2 * t
        img = np.broadcast_to(img, (size, size, 3)).copy()
        if rng.random() < 0.5:
            img = img.transpose(1, 0, 2).copy()
    elif kind == "stripes":
        period = rng.randint(4, 16)
        yy, xx = np.mgrid[0:size, 0:size]
        ang = rng.uniform(0, math.pi)
        m = (((xx * math.cos(ang) + yy * math.sin(ang)) // period) % 2)[..., None]
        c2 = c1 + (c2 - c1) * 0.35    # low contrast so shapes stay clear
        img = c1 * (1 - m) + c2 * m
    elif kind == "checker":
        period = rng.randint(5, 21)
        yy, xx = np.mgrid[0:size, 0:size]
        m = (((xx // period) + (yy // period)) % 2)[..., None]
        c2 = c1 + (c2 - c1) * 0.35
        img = c1 * (1 - m) + c2 * m
    else:
        # mostly-grey blotches with a little colour, so no blotch reads as a named colour
        g = nrng.random((6, 6, 1)) * 0.8 + nrng.random((6, 6, 3)) * 0.2
        g = np.asarray(Image.fromarray((g * 255).astype(np.uint8)).resize(
            (size, size), Image.BICUBIC), dtype=np.float64) / 255
        img = c1 + (g - 0.5) * 70
    return np.clip(img, 0, 255).astype(np.uint8)


def polygon(shape, cx, cy, r, rot):
    def ring(n, radius, phase, rx=1.0, ry=1.0):
        return [(cx + rx * radius * math.cos(phase + rot + 2 * math.pi * k / n),
                 cy + ry * radius * math.sin(phase + rot + 2 * math.pi * k / n))
                for k in range(n)]
    if shape == "square":
        return ring(4, r * 1.05, math.pi / 4)
    if shape == "triangle":
        pts = ring(3, r * 1.1, -math.pi / 2)
        return [(x, y + 0.2 * r) for x, y in pts]
    if shape == "hexagon":
        return ring(6, r, 0)
    if shape == "diamond":
        return ring(4, r * 1.1, -math.pi / 2, rx=0.65)
    if shape == "star":
        outer, inner = ring(5, r * 1.15, -math.pi / 2), ring(5, r * 0.47, -math.pi / 2 + math.pi / 5)
        return [p for pair in zip(outer, inner) for p in pair]
    if shape == "cross":
        w = 0.34 * r
        base = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w),
                (-r, w), (-r, -w), (-w, -w)]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    raise ValueError(shape)


def render(objs, rng, nrng):
    """Source image (PIL, RGB) of the scene at a random resolution with its degradations."""
    # backgrounds are smooth: make them at a third of the canvas and upscale (3x cheaper)
    img = Image.fromarray(background(rng, nrng, RENDER // 3)).resize((RENDER, RENDER),
                                                                      Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    cell = RENDER / 3
    for o in objs:
        r = cell * (0.38 if o["size"] == "large" else 0.25) * rng.uniform(0.92, 1.04)
        slack = max(0.0, cell / 2 - r * 1.15) * 0.6
        cx = (o["col"] + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (o["row"] + 0.5) * cell + rng.uniform(-slack, slack)
        col = tuple(int(np.clip(v + rng.uniform(-18, 18), 0, 255)) for v in COLORS[o["color"]])
        rot = math.radians(rng.uniform(-12, 12))
        if o["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        else:
            draw.polygon(polygon(o["shape"], cx, cy, r, rot), fill=col)
    size = rng.choice(SOURCE_SIZES)
    img = img.resize((size, size), Image.LANCZOS)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.7) * size / 96))
    sigma = rng.uniform(0, 8)
    if sigma > 1:
        a = np.asarray(img, dtype=np.float32) + nrng.normal(0, sigma, (size, size, 3))
        img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    if rng.random() < 0.8:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=rng.randint(40, 95))
        return buf.getvalue(), "jpg"
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), "png"


def make_example(seed, size=96):
    """Everything about one image, determined by its seed."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    objs = sample_scene(rng)
    data, ext = render(objs, rng, nrng)
    qs = questions(objs, rng)
    img = Image.open(io.BytesIO(data)).convert("RGB")
    small = np.asarray(img.resize((size, size), Image.LANCZOS) if img.size != (size, size)
                       else img, dtype=np.uint8)
    return {"seed": seed, "objects": objs, "questions": qs, "bytes": data, "ext": ext,
            "pixels": small}


SPLIT_SEEDS = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000}


def _job(args):
    seed, size, keep_bytes = args
    ex = make_example(seed, size)
    if not keep_bytes:
        ex["bytes"] = None
    return ex


def make_split(split, n, size=96, workers=2, keep_bytes=False):
    base = SPLIT_SEEDS[split]
    jobs = [(base + i, size, keep_bytes) for i in range(n)]
    if workers > 1:
        with Pool(workers) as p:
            return p.map(_job, jobs, chunksize=64)
    return [_job(j) for j in jobs]


def save_split(examples, path):
    pix = np.stack([e["pixels"] for e in examples])
    meta = [{"seed": e["seed"], "objects": e["objects"], "questions": e["questions"]}
            for e in examples]
    np.savez(path, pixels=pix, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def load_split(path):
    z = np.load(path)
    return z["pixels"], json.loads(z["meta"].tobytes().decode())


def write_test_files(examples, out_dir):
    """Source images + test.jsonl for the C engine (`tern perplexity`, accuracy)."""
    img_dir = os.path.join(out_dir, "test")
    os.makedirs(img_dir, exist_ok=True)
    with open(os.path.join(out_dir, "test.jsonl"), "w") as f:
        for i, e in enumerate(examples):
            name = os.path.join("test", f"{i:05d}.{e['ext']}")
            with open(os.path.join(out_dir, name), "wb") as g:
                g.write(e["bytes"])
            for qt in QTYPES:
                if qt in e["questions"]:
                    p, a = e["questions"][qt]
                    f.write(json.dumps({"image": name, "prompt": p, "answer": a,
                                        "qtype": qt}) + "\n")


def corpus_texts():
    """Strings the tokenizer is trained on: every phrasing filled with every word, all answers,
    and the chat template's fixed parts."""
    texts = ["User:", "Assistant:", "\nAssistant:", "User: ", "Assistant: ", "\n", "\n\n"]
    for qt, ps in PHRASES.items():
        for p in ps:
            for s in SHAPES:
                for c in COLOR_NAMES:
                    texts.append(p.format(shape=s, color=c, a=article(c)))
    rng = random.Random(0)
    for _ in range(3000):
        objs = sample_scene(rng)
        texts.extend(" " + a for _, a in questions(objs, rng).values())
    return texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=24000)
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--test", type=int, default=400)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--splits", default="test,val,train",
                    help="which splits to write (e.g. 'test' for the C engine's evaluation only)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    import tokenizer
    tok = tokenizer.train(corpus_texts(), vocab_size=1024)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    print(f"tokenizer: {len(tok)} tokens, {len(tok.merges)} merges", file=sys.stderr)
    for split, n in (("test", a.test), ("val", a.val), ("train", a.train)):
        if split not in a.splits.split(","):
            continue
        ex = make_split(split, n, a.size, a.workers, keep_bytes=(split == "test"))
        save_split(ex, os.path.join(a.out, f"{split}.npz"))
        if split == "test":
            write_test_files(ex, a.out)
        print(f"{split}: {n} images, {sum(len(e['questions']) for e in ex)} questions",
              file=sys.stderr)


if __name__ == "__main__":
    main()
