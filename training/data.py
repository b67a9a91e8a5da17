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
from PIL import Image, ImageDraw, ImageFilter, ImageOps

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


# A first-world shape's radius, as a share of its cell's side (then jittered by -8 .. +4 %).
RADIUS = {"large": 0.38, "small": 0.25}


def render(objs, rng, nrng):
    """Source image (PIL, RGB) of the scene at a random resolution with its degradations."""
    # backgrounds are smooth: make them at a third of the canvas and upscale (3x cheaper)
    img = Image.fromarray(background(rng, nrng, RENDER // 3)).resize((RENDER, RENDER),
                                                                      Image.BILINEAR)
    draw = ImageDraw.Draw(img)
    cell = RENDER / 3
    for o in objs:
        r = cell * RADIUS[o["size"]] * rng.uniform(0.92, 1.04)
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


# ---------------------------------------------------------------------------------------------
# The wider world: what a newcomer draws. Any background at any brightness, shapes of 7-70 % of
# the picture anywhere, filled or outlined, anti-aliased or hard-edged, square and non-square
# pictures of 32..1024 px, PNG with and without alpha and JPEG. The answers use the same words:
# a shape's place is the 3x3 cell its centre is in (never near a cell border), "small" is a
# diameter of at most 15 % of the picture's shorter side and a large one at least 21 %.

SMALL_D = (0.07, 0.15)
LARGE_D = (0.21, 0.70)
MIN_PX = 8            # no shape narrower than this in the source picture ...
MIN_VIEW = 7.0        # ... or in the model's 96 px view
BORDER = 0.045        # a centre is at least this far (fraction of the side) from a cell border
NEAR = 95.0           # RGB distance under which a background pixel could pass for the colour
# What people draw as each colour: the first world's shade and paint-program ones (the wider
# world's shapes take any of these, jittered).
SHADES = {
    "red": [(220, 35, 35), (255, 0, 0), (190, 20, 30), (235, 60, 50)],
    "green": [(35, 165, 60), (0, 128, 0), (40, 200, 40), (20, 140, 90)],
    "blue": [(35, 80, 225), (0, 0, 255), (30, 110, 210), (20, 40, 160)],
    "yellow": [(245, 220, 35), (255, 255, 0), (255, 215, 0), (240, 230, 70)],
    "orange": [(250, 140, 25), (255, 150, 0), (255, 120, 0), (235, 110, 20)],
    "purple": [(145, 55, 190), (128, 0, 128), (150, 50, 220), (110, 40, 150)],
    "white": [(248, 248, 248), (255, 255, 255), (238, 238, 238)],
    "black": [(18, 18, 18), (0, 0, 0), (35, 35, 35)],
}


def model_view(img, size):
    """The processor's resize (model.preprocess): longest edge to `size`, then square."""
    w, h = img.size
    if max(w, h) != size:
        if w >= h:
            img = img.resize((size, max(1, round(h * size / w))), Image.LANCZOS)
        else:
            img = img.resize((max(1, round(w * size / h)), size), Image.LANCZOS)
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    return img


def to_rgb(img):
    """A picture's pixels as the C engine decodes them (src/engine/image.c): a JPEG's EXIF
    orientation applied (as transformers' load_image does), alpha over opaque white (as the
    PNG decoder and Idefics3's convert_to_rgb do). model.py's preprocessing starts here too."""
    if img.format == "JPEG":
        img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    return img.convert("RGB")


def _hsv(h, s, v):
    import colorsys
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255


def wide_color(rng):
    """A background colour of any kind: white, black, grey, saturated, pastel, dark, muted."""
    k = rng.choice(["white", "black", "grey", "saturated", "saturated", "pastel", "pastel",
                    "dark", "mid"])
    if k == "white":
        return _hsv(rng.random(), rng.uniform(0, 0.06), rng.uniform(0.93, 1.0))
    if k == "black":
        return _hsv(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.0, 0.12))
    if k == "grey":
        return _hsv(rng.random(), rng.uniform(0, 0.08), rng.uniform(0.1, 0.95))
    if k == "saturated":
        return _hsv(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.45, 1.0))
    if k == "pastel":
        return _hsv(rng.random(), rng.uniform(0.12, 0.4), rng.uniform(0.82, 1.0))
    if k == "dark":
        return _hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.12, 0.4))
    return _mid_color(rng)


def wide_background(rng, nrng, w, h):
    """(h, w, 3) float background of any kind and brightness."""
    kind = rng.choice(["plain", "plain", "plain", "gradient", "gradient", "noise", "stripes",
                       "checker", "blotch"])
    c1, c2 = wide_color(rng), wide_color(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "plain":
        img = np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    elif kind == "gradient":
        if rng.random() < 0.7:
            ang = rng.uniform(0, 2 * math.pi)
            t = xx / w * math.cos(ang) + yy / h * math.sin(ang)
        else:  # radial
            t = np.hypot(xx / w - rng.random(), yy / h - rng.random())
        t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
        img = c1 * (1 - t[..., None]) + c2 * t[..., None]
    elif kind in ("stripes", "checker"):
        period = rng.uniform(0.02, 0.15) * min(w, h) + 1
        if kind == "stripes":
            ang = rng.uniform(0, math.pi)
            m = ((xx * math.cos(ang) + yy * math.sin(ang)) // period) % 2
        else:
            m = ((xx // period) + (yy // period)) % 2
        c2 = c1 + (c2 - c1) * rng.uniform(0.15, 1.0)
        img = c1 * (1 - m[..., None]) + c2 * m[..., None]
    elif kind == "blotch":
        g = nrng.random((rng.randint(3, 9), rng.randint(3, 9), 1))
        g = np.asarray(Image.fromarray((g[..., 0] * 255).astype(np.uint8)).resize(
            (w, h), Image.BICUBIC), dtype=np.float32)[..., None] / 255
        img = c1 * (1 - g) + c2 * g
    else:
        img = np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
    if kind == "noise" or rng.random() < 0.25:  # photo-like grain, colour or grey
        sigma = rng.uniform(4, 40)
        n = nrng.normal(0, sigma, (h, w, 1 if rng.random() < 0.5 else 3))
        img = img + n
    return np.clip(img, 0, 255).astype(np.float32)


def wide_polygon(shape, cx, cy, r, rot, rng):
    """The wider world's outline of a shape: the first world's forms and the other ways people
    draw them (hexagons pointy or flat on top, squares with rounded corners, thinner or fatter
    crosses, diamonds and stars), so no one drawing program's proportions define a shape."""
    if shape == "hexagon":
        return polygon(shape, cx, cy, r, rot + (math.pi / 6 if rng.random() < 0.5 else 0.0))
    if shape not in ("square", "diamond", "star", "cross") or rng.random() < 0.4:
        return polygon(shape, cx, cy, r, rot)
    c, s = math.cos(rot), math.sin(rot)

    def place(pts):
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    if shape == "square":  # half side 0.74..0.92 r, corners rounded up to a fifth of the side
        h = r * rng.uniform(0.74, 0.92)
        k = h * rng.choice([0.0, rng.uniform(0.05, 0.4)])
        pts = []
        for (x, y), a0 in (((h - k, -h + k), -math.pi / 2), ((h - k, h - k), 0.0),
                           ((-h + k, h - k), math.pi / 2), ((-h + k, -h + k), math.pi)):
            pts += [(x + k * math.cos(a0 + math.pi / 2 * t / 6),
                     y + k * math.sin(a0 + math.pi / 2 * t / 6)) for t in range(7)]
        return place(pts)
    if shape == "diamond":
        ry = r * rng.uniform(0.95, 1.1)
        rx = ry * rng.uniform(0.52, 0.75)
        return place([(0, -ry), (rx, 0), (0, ry), (-rx, 0)])
    if shape == "star":
        ro = r * rng.uniform(1.0, 1.15)
        ri = ro * rng.uniform(0.38, 0.55)
        return place([((ro if k % 2 == 0 else ri) * math.cos(-math.pi / 2 + math.pi * k / 5),
                       (ro if k % 2 == 0 else ri) * math.sin(-math.pi / 2 + math.pi * k / 5))
                      for k in range(10)])
    w = r * rng.uniform(0.24, 0.44)  # cross
    return place([(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r),
                  (-w, w), (-r, w), (-r, -w), (-w, -w)])


def _cell(u):
    return min(2, int(u * 3))


def _place(rng, d_frac, W, H, cell):
    """A centre (px) in `cell` for a shape of diameter d_frac * min(W, H), fully in the picture
    and BORDER away from the cell's borders; None if it cannot fit."""
    r = d_frac * min(W, H) / 2
    row, col = divmod(cell, 3)
    lo_x = max(r * 1.1, (col / 3 + BORDER) * W)
    hi_x = min(W - r * 1.1, ((col + 1) / 3 - BORDER) * W)
    lo_y = max(r * 1.1, (row / 3 + BORDER) * H)
    hi_y = min(H - r * 1.1, ((row + 1) / 3 - BORDER) * H)
    if lo_x > hi_x or lo_y > hi_y:
        return None
    return rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)


def sample_wide_scene(rng):
    """Picture size and 1-3 objects: shape, size label, diameter (fraction of the shorter side),
    centre (px), cell; colours are chosen later against the background."""
    side = int(round(math.exp(rng.uniform(math.log(32), math.log(1024)))))
    if rng.random() < 0.5:
        W = H = side
    else:
        ratio = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        W, H = side, int(min(1024, max(32, round(side * ratio))))
        if rng.random() < 0.5:
            W, H = H, W
    n = rng.choice([1, 1, 2, 2, 3])
    for _ in range(50):
        objs = []
        for c in rng.sample(range(9), n):
            small = rng.random() < 0.4
            d_lo, d_hi = SMALL_D if small else (LARGE_D[0], LARGE_D[1] if n == 1 else 0.34)
            # never too small to tell apart, in the source or in the model's view
            short = min(W, H)
            d_lo = max(d_lo, MIN_PX / short, MIN_VIEW / 96 * max(W, H) / short)
            if d_lo > d_hi:
                break
            d = rng.uniform(d_lo, d_hi)
            at = _place(rng, d, W, H, c)
            if at is None:
                break
            objs.append({"shape": rng.choice(SHAPES), "size": "small" if small else "large",
                         "d": d, "cx": at[0], "cy": at[1], "row": c // 3, "col": c % 3})
        if len(objs) != n:
            continue
        rad = [o["d"] * min(W, H) / 2 for o in objs]
        if all(math.hypot(a["cx"] - b["cx"], a["cy"] - b["cy"]) > 1.35 * (ra + rb) + 2
               for i, (a, ra) in enumerate(zip(objs, rad)) for b, rb in zip(objs[i + 1:], rad[i + 1:])):
            objs.sort(key=lambda o: o["row"] * 3 + o["col"])  # reading order
            return W, H, objs
        n = max(1, n - (rng.random() < 0.3))
    # a last resort that always fits: one large shape in the centre
    d = max(0.3, MIN_VIEW / 96 * max(W, H) / min(W, H), MIN_PX / min(W, H))
    return W, H, [{"shape": rng.choice(SHAPES), "size": "large", "d": min(d, 0.7),
                   "cx": W / 2, "cy": H / 2, "row": 1, "col": 1}]


def _allowed_colors(bg, o, W, H):
    """Named colours no background pixel around the object could pass for."""
    r = o["d"] * min(W, H) / 2 * 1.3
    x0, x1 = int(max(0, o["cx"] - r)), int(min(W, o["cx"] + r + 1))
    y0, y1 = int(max(0, o["cy"] - r)), int(min(H, o["cy"] + r + 1))
    patch = bg[y0:y1, x0:x1].reshape(-1, 3)
    if len(patch) > 4096:
        patch = patch[:: len(patch) // 4096]
    out = []
    for name, shades in SHADES.items():
        near = min(float(np.percentile(np.sqrt(((patch - np.array(c, dtype=np.float32)) ** 2)
                                               .sum(1)), 1)) for c in shades)
        if near > NEAR:
            out.append(name)
    return out


def render_wide(rng, nrng):
    """(objects, encoded bytes, ext) of one wider-world picture."""
    W, H, objs = sample_wide_scene(rng)
    for _ in range(20):
        bg0 = bg = wide_background(rng, nrng, W, H)
        alpha = None
        if rng.random() < 0.15:  # PNG with alpha: the background fades to white (or vanishes)
            alpha = rng.choice([0.0, rng.uniform(0.3, 1.0)])
            bg = bg0 * alpha + 255 * (1 - alpha)  # what the model sees: over white
        allowed = [_allowed_colors(bg, o, W, H) for o in objs]
        if all(allowed):
            break
    else:
        bg0 = bg = np.full((H, W, 3), 128, dtype=np.float32)
        alpha, allowed = None, [[c for c in COLOR_NAMES] for _ in objs]
    for o, al in zip(objs, allowed):
        o["color"] = rng.choice(al)
    hard = rng.random() < 0.25
    ss = 1 if hard else (4 if max(W, H) <= 256 else 2 if max(W, H) <= 512 else 1)
    canvas = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    if ss > 1:
        canvas = canvas.resize((W * ss, H * ss), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    for o in objs:
        r = o["d"] * min(W, H) / 2 * ss
        cx, cy = o["cx"] * ss, o["cy"] * ss
        col = tuple(int(np.clip(v + rng.uniform(-15, 15), 0, 255))
                    for v in rng.choice(SHADES[o["color"]]))
        rot = math.radians(rng.uniform(-12, 12))
        view_d = o["d"] * min(W, H) * 96 / max(W, H)
        outline = view_d >= 16 and rng.random() < 0.3
        lw = max(int(round(r * rng.uniform(0.18, 0.3))), int(math.ceil(2.2 * ss * max(W, H) / 96)))
        if o["shape"] == "circle":
            box = [cx - r, cy - r, cx + r, cy + r]
            if outline:
                draw.ellipse(box, outline=col, width=lw)
            else:
                draw.ellipse(box, fill=col)
        else:
            pts = wide_polygon(o["shape"], cx, cy, r, rot, rng)
            if outline:
                draw.line(pts + pts[:2], fill=col, width=lw, joint="curve")
            else:
                draw.polygon(pts, fill=col)
        if outline:
            o["outline"] = True
        for k in ("d", "cx", "cy"):
            o[k] = round(o[k], 4)
    img = canvas if ss == 1 else canvas.resize((W, H), Image.LANCZOS)
    if not hard and rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8) * max(W, H) / 96))
    buf = io.BytesIO()
    if alpha is not None:
        # store the true background colour under the alpha, so only compositing shows white
        a = np.asarray(img, dtype=np.float32)
        shape_mask = np.abs(a - bg).sum(2) > 24
        al = np.where(shape_mask, 255, int(round(alpha * 255))).astype(np.uint8)
        rgb = np.where(shape_mask[..., None], a, bg0)
        rgba = np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), al])
        Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
        return objs, buf.getvalue(), "png"
    if rng.random() < 0.65:
        img.save(buf, format="JPEG", quality=rng.randint(30, 95))
        return objs, buf.getvalue(), "jpg"
    img.save(buf, format="PNG")
    return objs, buf.getvalue(), "png"


def make_wide_example(seed, size=96):
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    objs, data, ext = render_wide(rng, nrng)
    qs = questions(objs, rng)
    img = to_rgb(Image.open(io.BytesIO(data)))
    return {"seed": seed, "objects": objs, "questions": qs, "bytes": data, "ext": ext,
            "pixels": np.asarray(model_view(img, size), dtype=np.uint8)}


SPLIT_SEEDS = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000}
# the wider world's seeds: disjoint from the first world's and from each other
WIDE_SEEDS = {"train": 5_000_000, "val": 6_000_000, "test": 7_000_000}


def _job(args):
    seed, size, keep_bytes, wide = args
    ex = (make_wide_example if wide else make_example)(seed, size)
    if not keep_bytes:
        ex["bytes"] = None
    return ex


def split_jobs(split, n, size=96, keep_bytes=False, wide=0.0, wide_offset=0):
    """Example i of a split with a `wide` fraction of wider-world pictures: the first world's
    example i (seed base+i) or the wider world's (its own seed range), interleaved evenly.
    wide=0 is the first world exactly as before; the test split is kept that way (the held-out
    in-distribution split), the wider world's test split is written separately. wide_offset
    skips that many of the wider world's seeds (pictures a set made before already has)."""
    base, wbase = SPLIT_SEEDS[split], WIDE_SEEDS[split] + wide_offset
    return [(wbase + i if w else base + i, size, keep_bytes, w)
            for i in range(n) for w in [int((i + 1) * wide) > int(i * wide)]]


def make_split(split, n, size=96, workers=2, keep_bytes=False, wide=0.0, wide_offset=0):
    jobs = split_jobs(split, n, size, keep_bytes, wide, wide_offset)
    if workers > 1:
        with Pool(workers) as p:
            return p.map(_job, jobs, chunksize=16)
    return [_job(j) for j in jobs]


def save_split(examples, path):
    pix = np.stack([e["pixels"] for e in examples])
    meta = [{"seed": e["seed"], "objects": e["objects"], "questions": e["questions"]}
            for e in examples]
    np.savez(path, pixels=pix, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def load_split(path):
    z = np.load(path)
    return z["pixels"], json.loads(z["meta"].tobytes().decode())


def write_test_files(examples, out_dir, name="test"):
    """Source images + NAME.jsonl for the C engine (`tern perplexity`, accuracy)."""
    img_dir = os.path.join(out_dir, name)
    os.makedirs(img_dir, exist_ok=True)
    with open(os.path.join(out_dir, name + ".jsonl"), "w") as f:
        for i, e in enumerate(examples):
            name_i = os.path.join(name, f"{i:05d}.{e['ext']}")
            with open(os.path.join(out_dir, name_i), "wb") as g:
                g.write(e["bytes"])
            for qt in QTYPES:
                if qt in e["questions"]:
                    p, a = e["questions"][qt]
                    f.write(json.dumps({"image": name_i, "prompt": p, "answer": a,
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
    ap.add_argument("--wide", type=float, default=0.5,
                    help="fraction of the train and val splits drawn from the wider world")
    ap.add_argument("--test-wide", type=int, default=400,
                    help="pictures in the wider world's test split (test_wide.jsonl)")
    ap.add_argument("--wide-offset", type=int, default=0,
                    help="start the train split's wider-world pictures this many seeds on "
                         "(fresh pictures for a cycle that goes on from a model trained on the "
                         "first ones)")
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
        ex = make_split(split, n, a.size, a.workers, keep_bytes=(split == "test"),
                        wide=0.0 if split == "test" else a.wide,
                        wide_offset=a.wide_offset if split == "train" else 0)
        save_split(ex, os.path.join(a.out, f"{split}.npz"))
        if split == "test":
            write_test_files(ex, a.out)
            if a.test_wide:
                exw = make_split(split, a.test_wide, a.size, a.workers, True, wide=1.0)
                save_split(exw, os.path.join(a.out, "test_wide.npz"))
                write_test_files(exw, a.out, "test_wide")
        print(f"{split}: {n} images, {sum(len(e['questions']) for e in ex)} questions",
              file=sys.stderr)


if __name__ == "__main__":
    main()
