"""A second, independent renderer: the out-of-distribution test split (never trained on).

Pictures are drawn with cairo (python3-cairo), not PIL's ImageDraw which draws the training
data, with their own layouts, shape outlines and colours:

  single   one filled shape on a plain background of any colour (the newcomer's first picture)
  paint    1-3 shapes in paint-program colours (CSS red, #0000FF, ...) on white or off-white,
           filled or stroked, in a row or on a diagonal
  ring     2-3 shapes on a circle around the centre, over a radial gradient
  photo    1-2 shapes over a smooth random colour field with grain and a vignette (photo-like)
  dark     1-3 bright shapes on black or a dark colour, sometimes over graph-paper lines

Shapes are drawn differently too: hexagons pointy-top, squares with rounded corners, diamonds
of another width, crosses with other arm widths, stars with another inner radius.
The questions and answers use the training data's words and rules (data.questions): a shape's
place is the 3x3 cell of its centre (never near a cell border), "small" a diameter of at most
15 % of the shorter side, large at least 21 %, and a colour is only used for a shape when no
background pixel near it could pass for that colour.

  python3 data_ood.py --out DIR [--n 300] [--seed 9000000]
writes DIR/test_ood/NNNNN.{png,jpg}, DIR/test_ood.jsonl (lines {"image", "prompt", "answer",
"qtype", "layout"}), DIR/test_ood_single_color.jsonl: the colour questions about single
filled shapes on plain backgrounds (the issue's 98 % target), and DIR/test_ood.npz (the same
pictures as the model sees them, for train.py --eval-extra).
  python3 data_ood.py --tests tests/data/ood --n 48   # small pictures for the test suite:
    tests/data/ood/test/, test.jsonl, test_single_color.jsonl (another seed range)
"""

import argparse
import io
import json
import math
import os
import random
import sys

import cairo
import numpy as np
from PIL import Image  # only to encode JPEG and read pixels back; drawing is cairo's

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as D  # noqa: E402  (the world's words: shapes, colour names, places, questions)

LAYOUTS = ["single", "single", "paint", "ring", "photo", "dark"]
# paint-program and web colours for each name (CSS where it has the name)
PALETTE = {
    "red": [(255, 0, 0), (204, 0, 0), (220, 20, 60)],
    "green": [(0, 128, 0), (34, 139, 34), (0, 180, 0)],
    "blue": [(0, 0, 255), (30, 144, 255), (0, 0, 205)],
    "yellow": [(255, 255, 0), (255, 215, 0), (250, 235, 40)],
    "orange": [(255, 165, 0), (255, 140, 0), (255, 127, 20)],
    "purple": [(128, 0, 128), (148, 0, 211), (138, 43, 226)],
    "white": [(255, 255, 255), (245, 245, 245)],
    "black": [(0, 0, 0), (25, 25, 25)],
}
NEAR = 100.0  # background pixels nearer than this (RGB distance) to a colour rule it out
SMALL, LARGE = (0.09, 0.15), (0.22, 0.62)
BORDER = 0.05


def bg_colour(rng):
    k = rng.random()
    if k < 0.2:
        return (1.0, 1.0, 1.0)
    if k < 0.3:
        return (0.0, 0.0, 0.0)
    import colorsys
    if k < 0.55:   # a strong colour
        return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.55, 1), rng.uniform(0.5, 1))
    if k < 0.8:    # a pale one
        return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 0.35), rng.uniform(0.85, 1))
    g = rng.uniform(0.05, 0.95)
    return (g, g, g)


def dark_colour(rng):
    import colorsys
    if rng.random() < 0.5:
        return (0.0, 0.0, 0.0)
    return colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.3, 1), rng.uniform(0.05, 0.3))


def pixels(surf):
    """RGB float array of an ARGB32 surface (opaque)."""
    surf.flush()
    h, w, stride = surf.get_height(), surf.get_width(), surf.get_stride()
    a = np.ndarray((h, stride // 4, 4), np.uint8, surf.get_data())[:, :w]
    return a[..., [2, 1, 0]].astype(np.float32), a[..., 3].copy()


def paint_background(ctx, layout, rng, nrng, W, H):
    if layout == "single":
        ctx.set_source_rgb(*bg_colour(rng))
        ctx.paint()
    elif layout == "paint":
        g = rng.choice([1.0, 1.0, 0.97, 0.94])
        ctx.set_source_rgb(g, g, g * rng.uniform(0.95, 1.0))
        ctx.paint()
    elif layout == "ring":
        pat = cairo.RadialGradient(W / 2, H / 2, 0, W / 2, H / 2, max(W, H) * 0.75)
        pat.add_color_stop_rgb(0, *bg_colour(rng))
        pat.add_color_stop_rgb(1, *bg_colour(rng))
        ctx.set_source(pat)
        ctx.paint()
    elif layout == "photo":
        ctx.set_source_rgb(*bg_colour(rng))
        ctx.paint()
        for _ in range(rng.randint(3, 6)):  # soft blobs of colour
            x, y, r = rng.uniform(0, W), rng.uniform(0, H), rng.uniform(0.3, 0.8) * max(W, H)
            pat = cairo.RadialGradient(x, y, 0, x, y, r)
            c = bg_colour(rng)
            pat.add_color_stop_rgba(0, *c, rng.uniform(0.4, 0.9))
            pat.add_color_stop_rgba(1, *c, 0)
            ctx.set_source(pat)
            ctx.paint()
        vig = cairo.RadialGradient(W / 2, H / 2, min(W, H) * 0.3, W / 2, H / 2, max(W, H) * 0.8)
        vig.add_color_stop_rgba(0, 0, 0, 0, 0)
        vig.add_color_stop_rgba(1, 0, 0, 0, rng.uniform(0.2, 0.6))
        ctx.set_source(vig)
        ctx.paint()
    else:  # dark, sometimes with graph-paper lines
        ctx.set_source_rgb(*dark_colour(rng))
        ctx.paint()
        if rng.random() < 0.5:
            step = rng.uniform(0.05, 0.12) * min(W, H)
            ctx.set_source_rgba(0.5, 0.5, 0.5, rng.uniform(0.15, 0.35))
            ctx.set_line_width(max(1.0, min(W, H) / 200))
            x = step / 2
            while x < W:
                ctx.move_to(x, 0)
                ctx.line_to(x, H)
                x += step
            y = step / 2
            while y < H:
                ctx.move_to(0, y)
                ctx.line_to(W, y)
                y += step
            ctx.stroke()


def shape_path(ctx, shape, cx, cy, r, rot, rng):
    """Outline of a shape of radius r (half its width) as a cairo path."""
    ctx.save()
    ctx.translate(cx, cy)
    ctx.rotate(rot)
    if shape == "circle":
        ctx.arc(0, 0, r, 0, 2 * math.pi)
    elif shape == "square":
        s, k = r * 0.92, r * rng.uniform(0, 0.18)  # rounded corners of radius k
        ctx.new_sub_path()
        for (x, y), a0 in (((s - k, -s + k), -math.pi / 2), ((s - k, s - k), 0),
                           ((-s + k, s - k), math.pi / 2), ((-s + k, -s + k), math.pi)):
            ctx.arc(x, y, k, a0, a0 + math.pi / 2)
        ctx.close_path()
    elif shape in ("triangle", "hexagon", "star"):
        if shape == "triangle":
            pts = [(r * math.cos(-math.pi / 2 + 2 * math.pi * k / 3),
                    r * 0.15 + r * math.sin(-math.pi / 2 + 2 * math.pi * k / 3)) for k in range(3)]
        elif shape == "hexagon":  # pointy top
            pts = [(r * math.cos(-math.pi / 2 + math.pi * k / 3),
                    r * math.sin(-math.pi / 2 + math.pi * k / 3)) for k in range(6)]
        else:
            inner = rng.uniform(0.42, 0.52)
            pts = [((r if k % 2 == 0 else r * inner) * math.cos(-math.pi / 2 + math.pi * k / 5),
                    (r if k % 2 == 0 else r * inner) * math.sin(-math.pi / 2 + math.pi * k / 5))
                   for k in range(10)]
        ctx.move_to(*pts[0])
        for p in pts[1:]:
            ctx.line_to(*p)
        ctx.close_path()
    elif shape == "diamond":
        wx = r * rng.uniform(0.58, 0.72)
        ctx.move_to(0, -r)
        ctx.line_to(wx, 0)
        ctx.line_to(0, r)
        ctx.line_to(-wx, 0)
        ctx.close_path()
    elif shape == "cross":
        w = r * rng.uniform(0.28, 0.4)
        for x, y in ((-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r),
                     (-w, w), (-r, w), (-r, -w), (-w, -w)):
            ctx.line_to(x, y)
        ctx.close_path()
    else:
        raise ValueError(shape)
    ctx.restore()


def centres(layout, rng, n, W, H, ds):
    """Centres (px) for n shapes of diameters ds (fractions of the shorter side), per layout."""
    short = min(W, H)
    if layout == "ring":
        a0, rad = rng.uniform(0, 2 * math.pi), rng.uniform(0.26, 0.34)
        return [(W / 2 + rad * W * math.cos(a0 + 2 * math.pi * k / n),
                 H / 2 + rad * H * math.sin(a0 + 2 * math.pi * k / n)) for k in range(n)]
    if layout == "paint" and n > 1:
        if rng.random() < 0.5:  # a row
            y = rng.uniform(0.2, 0.8) * H
            xs = sorted(rng.sample([1 / 6, 1 / 2, 5 / 6], n))
            return [(x * W + rng.uniform(-0.06, 0.06) * W, y) for x in xs]
        flip = rng.random() < 0.5  # a diagonal
        ts = sorted(rng.sample([1 / 6, 1 / 2, 5 / 6], n))
        return [(t * W, (1 - t if flip else t) * H) for t in ts]
    return [(rng.uniform(d * short / 2 * 1.1, W - d * short / 2 * 1.1),
             rng.uniform(d * short / 2 * 1.1, H - d * short / 2 * 1.1)) for d in ds]


def valid(objs, W, H):
    short = min(W, H)
    for o in objs:
        r = o["d"] * short / 2
        if not (r * 1.05 <= o["cx"] <= W - r * 1.05 and r * 1.05 <= o["cy"] <= H - r * 1.05):
            return False
        u, v = o["cx"] / W * 3, o["cy"] / H * 3  # away from the 3x3 grid's inner borders
        if min(abs(u - 1), abs(u - 2), abs(v - 1), abs(v - 2)) < BORDER * 3:
            return False
        # visible: at least 8 px in the picture and 7 px in the model's 96 px view
        if o["d"] * short < 8 or o["d"] * short * 96 / max(W, H) < 7:
            return False
    cells = [(int(o["cy"] / H * 3), int(o["cx"] / W * 3)) for o in objs]
    if len(set(cells)) != len(cells):
        return False
    for i, a in enumerate(objs):
        for b in objs[i + 1:]:
            if math.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) < \
                    1.3 * (a["d"] + b["d"]) * short / 2 + 2:
                return False
    return True


def scene(rng, layout):
    for _ in range(200):
        if rng.random() < 0.6:
            W = H = rng.choice([64, 100, 128, 200, 256, 300, 400, 512, 640, 800])
        else:
            W, H = rng.choice([(320, 240), (240, 320), (400, 300), (160, 120), (600, 400),
                               (128, 200), (800, 450), (90, 160)])
        n = 1 if layout == "single" else rng.choice([1, 2, 2, 3]) if layout != "ring" else \
            rng.choice([2, 3])
        small = [rng.random() < (0.3 if layout != "single" else 0.2) for _ in range(n)]
        hi = LARGE[1] if n == 1 else 0.3
        ds = [rng.uniform(*SMALL) if s else rng.uniform(LARGE[0], hi) for s in small]
        objs = [{"shape": rng.choice(D.SHAPES), "size": "small" if s else "large", "d": d,
                 "cx": c[0], "cy": c[1]}
                for s, d, c in zip(small, ds, centres(layout, rng, n, W, H, ds))]
        if valid(objs, W, H):
            for o in objs:
                o["row"], o["col"] = min(2, int(o["cy"] / H * 3)), min(2, int(o["cx"] / W * 3))
            objs.sort(key=lambda o: o["row"] * 3 + o["col"])
            return W, H, objs
    raise RuntimeError("no scene fits")


def allowed(bg, o, W, H):
    r = o["d"] * min(W, H) / 2 * 1.35
    patch = bg[int(max(0, o["cy"] - r)):int(min(H, o["cy"] + r + 1)),
               int(max(0, o["cx"] - r)):int(min(W, o["cx"] + r + 1))].reshape(-1, 3)
    patch = patch[:: max(1, len(patch) // 3000)]
    out = []
    for name, cols in PALETTE.items():
        near = min(float(np.percentile(np.sqrt(((patch - np.array(c, np.float32)) ** 2).sum(1)),
                                       1)) for c in cols)
        ref = np.array(D.COLORS[name], np.float32)
        near = min(near, float(np.percentile(np.sqrt(((patch - ref) ** 2).sum(1)), 1)))
        if near > NEAR:
            out.append(name)
    return out


def render(seed):
    """(layout, objects, bytes, ext) of picture `seed`."""
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    layout = rng.choice(LAYOUTS)
    W, H, objs = scene(rng, layout)
    surf = cairo.ImageSurface(cairo.FORMAT_ARGB32, W, H)
    ctx = cairo.Context(surf)
    paint_background(ctx, layout, rng, nrng, W, H)
    bg, _ = pixels(surf)
    if layout == "photo":  # grain, added to the background before the shapes
        grain = nrng.normal(0, rng.uniform(4, 18), (H, W, 1))
        bg = np.clip(bg + grain, 0, 255)
        bgra = np.zeros((H, surf.get_stride() // 4, 4), np.uint8)
        bgra[:, :W, :3] = bg[..., [2, 1, 0]].astype(np.uint8)
        bgra[..., 3] = 255
        src = cairo.ImageSurface.create_for_data(memoryview(bgra), cairo.FORMAT_ARGB32, W, H,
                                                 surf.get_stride())
        ctx.set_source_surface(src, 0, 0)
        ctx.paint()
        bg = bgra[:, :W, [2, 1, 0]].astype(np.float32)
    for o in objs:
        ok = allowed(bg, o, W, H)
        if not ok:
            return None
        o["color"] = rng.choice(ok)
    hard = rng.random() < 0.2
    ctx.set_antialias(cairo.ANTIALIAS_NONE if hard else cairo.ANTIALIAS_BEST)
    for o in objs:
        r = o["d"] * min(W, H) / 2
        rot = math.radians(rng.uniform(-10, 10)) if rng.random() < 0.5 else 0.0
        c = rng.choice(PALETTE[o["color"]])
        ctx.set_source_rgb(*(v / 255 for v in c))
        shape_path(ctx, o["shape"], o["cx"], o["cy"], r, rot, rng)
        view = o["d"] * min(W, H) * 96 / max(W, H)
        if layout in ("paint", "dark") and view >= 16 and rng.random() < 0.35:
            ctx.set_line_width(max(r * rng.uniform(0.16, 0.26), 2.5 * max(W, H) / 96))
            ctx.set_line_join(cairo.LINE_JOIN_ROUND)
            ctx.stroke()
            o["outline"] = True
        else:
            ctx.fill()
        for k in ("d", "cx", "cy"):
            o[k] = round(o[k], 3)
    rgb, _ = pixels(surf)
    buf = io.BytesIO()
    k = rng.random()
    if layout in ("single", "paint") and k < 0.2:
        # PNG with a transparent background (what paint programs export); shapes opaque
        alpha = np.where(np.abs(rgb - bg).sum(2) > 30, 255, 0).astype(np.uint8)
        if layout == "single":  # the background shows as white: only valid if white is fine
            return None
        Image.fromarray(np.dstack([rgb.astype(np.uint8), alpha]), "RGBA").save(buf, "PNG")
        return layout, objs, buf.getvalue(), "png"
    if k < 0.55:
        surf.write_to_png(buf)
        return layout, objs, buf.getvalue(), "png"
    Image.fromarray(rgb.astype(np.uint8)).save(buf, "JPEG", quality=rng.randint(60, 95))
    return layout, objs, buf.getvalue(), "jpg"


def examples(n, seed0):
    """n pictures with their questions, skipping seeds whose scene has no valid colouring."""
    out, s = [], seed0
    while len(out) < n:
        r = render(s)
        if r is not None:
            layout, objs, data, ext = r
            qs = D.questions(objs, random.Random(s + 1))
            out.append({"seed": s, "layout": layout, "objects": objs, "questions": qs,
                        "bytes": data, "ext": ext})
        s += 1
    return out


def save_npz(exs, path):
    """The split as train.py's Encoded reads it (pixels as the model sees them, objects and
    questions), so training can follow its accuracy (train.py --eval-extra)."""
    pix = [np.asarray(D.model_view(D.to_rgb(Image.open(io.BytesIO(e["bytes"]))), 96),
                      dtype=np.uint8) for e in exs]
    D.save_split([dict(e, pixels=p) for e, p in zip(exs, pix)], path)


def write(exs, out_dir, name="test_ood"):
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    f = open(os.path.join(out_dir, name + ".jsonl"), "w")
    g = open(os.path.join(out_dir, name + "_single_color.jsonl"), "w")
    for i, e in enumerate(exs):
        path = os.path.join(name, f"{i:05d}.{e['ext']}")
        with open(os.path.join(out_dir, path), "wb") as h:
            h.write(e["bytes"])
        for qt in D.QTYPES:
            if qt in e["questions"]:
                p, a = e["questions"][qt]
                line = json.dumps({"image": path, "prompt": p, "answer": a, "qtype": qt,
                                   "layout": e["layout"]}) + "\n"
                f.write(line)
                if qt == "color" and e["layout"] == "single" and not \
                        e["objects"][0].get("outline"):
                    g.write(line)
    f.close()
    g.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="directory for test_ood/ and test_ood.jsonl")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=9_000_000)
    ap.add_argument("--tests", help="write a few small pictures (< 20 kB each) here instead")
    a = ap.parse_args()
    if a.tests:
        exs = [e for e in examples(a.n * 3, a.seed + 500_000) if len(e["bytes"]) < 20_000][:a.n]
        write(exs, a.tests, "test")
        print(f"{len(exs)} pictures in {a.tests}", file=sys.stderr)
        return
    exs = examples(a.n, a.seed)
    write(exs, a.out)
    save_npz(exs, os.path.join(a.out, "test_ood.npz"))
    nq = sum(len(e["questions"]) for e in exs)
    print(f"test_ood: {len(exs)} pictures, {nq} questions", file=sys.stderr)


if __name__ == "__main__":
    main()
