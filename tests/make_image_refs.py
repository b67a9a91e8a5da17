#!/usr/bin/python3
"""Writes the image fixtures and Pillow reference outputs under
tests/data/images (committed; rerun to regenerate):

- small PNGs (RGB, RGBA, grey, palette with transparency) and JPEGs, one per
  EXIF orientation, plus truncated/corrupt copies;
- *.rgb: the RGB8 pixels Pillow gives for each (EXIF applied as
  transformers' load_image does, alpha over white as Idefics3's
  convert_to_rgb does);
- resize.txt + resize_*.rgb: Image.resize(..., LANCZOS) outputs;
- preprocess.txt + pre_*.rgb: the uint8 tiles of the Idefics3 processor.

usage: tests/make_image_refs.py [OUT_DIR]
"""
import io
import math
import os
import sys

import numpy as np
from PIL import Image, ImageOps

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "data", "images")
rng = np.random.default_rng(7)


def save_rgb(name, im):
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(arr.tobytes())


def convert_to_rgb(im):
    """Idefics2/3's convert_to_rgb: composite over white unless already RGB."""
    if im.mode == "RGB":
        return im
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def pattern(w, h):
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x * y) % 256], -1)
    noise = rng.integers(-40, 40, size=(h, w, 3))
    a = np.clip(a + noise, 0, 255).astype(np.uint8)
    a[h // 3, :, :] = [255, 0, 0]      # sharp edges exercise the filter's overshoot
    a[:, w // 4, :] = [0, 0, 0]
    return Image.fromarray(a, "RGB")


def main():
    os.makedirs(OUT, exist_ok=True)
    base = pattern(37, 23)
    base.save(os.path.join(OUT, "rgb.png"))
    save_rgb("rgb.rgb", base)

    alpha = np.zeros((7, 9, 4), np.uint8)
    alpha[..., :3] = rng.integers(0, 256, size=(7, 9, 3))
    alpha[..., 3] = np.linspace(0, 255, 63).astype(np.uint8).reshape(7, 9)
    im = Image.fromarray(alpha, "RGBA")
    im.save(os.path.join(OUT, "rgba.png"))
    save_rgb("rgba.rgb", convert_to_rgb(Image.open(os.path.join(OUT, "rgba.png"))))

    grey = Image.fromarray(rng.integers(0, 256, size=(5, 6)).astype(np.uint8), "L")
    grey.save(os.path.join(OUT, "grey.png"))
    save_rgb("grey.rgb", convert_to_rgb(Image.open(os.path.join(OUT, "grey.png"))))

    pal = Image.fromarray(rng.integers(0, 4, size=(4, 5)).astype(np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30] + [0] * (252 * 3))
    pal.info["transparency"] = bytes([255, 0, 128, 255])
    pal.save(os.path.join(OUT, "palette.png"), transparency=bytes([255, 0, 128, 255]))
    save_rgb("palette.rgb", convert_to_rgb(Image.open(os.path.join(OUT, "palette.png"))))

    photo = pattern(12, 8)  # not square, so each orientation differs
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=90, exif=exif.tobytes())
        data = buf.getvalue()
        with open(os.path.join(OUT, f"orient{o}.jpg"), "wb") as f:
            f.write(data)
        im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        save_rgb(f"orient{o}.rgb", convert_to_rgb(im))
        if o == 1:
            with open(os.path.join(OUT, "truncated.jpg"), "wb") as f:
                f.write(data[: len(data) * 2 // 3])
    grey_jpg = io.BytesIO()
    grey.save(grey_jpg, "JPEG", quality=95)
    with open(os.path.join(OUT, "grey.jpg"), "wb") as f:
        f.write(grey_jpg.getvalue())
    save_rgb("grey_jpg.rgb", convert_to_rgb(Image.open(io.BytesIO(grey_jpg.getvalue()))))

    png = open(os.path.join(OUT, "rgb.png"), "rb").read()
    with open(os.path.join(OUT, "truncated.png"), "wb") as f:
        f.write(png[: len(png) // 2])
    bad = bytearray(png)
    idat = bad.find(b"IDAT")
    bad[idat + 10] ^= 0x55  # data no longer matches the chunk's CRC
    with open(os.path.join(OUT, "corrupt.png"), "wb") as f:
        f.write(bytes(bad))

    # Image.resize(LANCZOS): down, up, one axis only, mixed
    sizes = [(16, 10), (5, 3), (1, 1), (80, 50), (50, 12), (37, 11), (20, 23), (74, 46), (36, 22)]
    with open(os.path.join(OUT, "resize.txt"), "w") as idx:
        for w, h in sizes:
            name = f"resize_{w}x{h}.rgb"
            save_rgb(name, base.resize((w, h), Image.LANCZOS))
            idx.write(f"rgb.rgb 37 23 {w} {h} {name}\n")

    # The Idefics3 processor's uint8 tiles, for a few settings
    with open(os.path.join(OUT, "preprocess.txt"), "w") as idx:
        for src, (w0, h0) in [("rgb.rgb", (37, 23)), ("orient6.rgb", (8, 12))]:
            img = Image.frombytes("RGB", (w0, h0), open(os.path.join(OUT, src), "rb").read())
            for longest, tile, split in [(64, 16, True), (64, 16, False), (32, 32, True),
                                         (20, 8, True), (40, 16, True)]:
                tiles, rows, cols = idefics3_tiles(img, longest, tile, split)
                name = f"pre_{src[:-4]}_{longest}_{tile}_{int(split)}.rgb"
                with open(os.path.join(OUT, name), "wb") as f:
                    for t in tiles:
                        f.write(np.asarray(t, dtype=np.uint8).tobytes())
                idx.write(f"{src} {w0} {h0} {longest} {tile} {int(split)} {rows} {cols} {len(tiles)} {name}\n")


def longest_edge_size(h, w, longest):
    """transformers' Idefics3 get_resize_output_image_size, restated."""
    aspect = w / h
    if w >= h:
        w = longest
        h = int(w / aspect)
        if h % 2:
            h += 1
    else:
        h = longest
        w = int(h * aspect)
        if w % 2:
            w += 1
    h, w = max(h, 1), max(w, 1)
    aspect = w / h
    if w >= h and w > 4096:
        w = 4096
        h = int(w / aspect)
    elif h > w and h > 4096:
        h = 4096
        w = int(h * aspect)
    return max(h, 1), max(w, 1)


def idefics3_tiles(img, longest, tile, split):
    """Idefics3ImageProcessor's resize / resize_for_vision_encoder /
    split_image, restated on PIL images (it runs these same PIL resizes)."""
    h, w = longest_edge_size(img.height, img.width, longest)
    img = img.resize((w, h), Image.LANCZOS)
    if not split:
        return [img.resize((tile, tile), Image.LANCZOS)], 0, 0
    aspect = img.width / img.height
    if img.width >= img.height:
        w = math.ceil(img.width / tile) * tile
        h = math.ceil(int(w / aspect) / tile) * tile
    else:
        h = math.ceil(img.height / tile) * tile
        w = math.ceil(int(h * aspect) / tile) * tile
    img = img.resize((w, h), Image.LANCZOS)
    tiles, rows, cols = [], 0, 0
    if h > tile or w > tile:
        rows, cols = math.ceil(h / tile), math.ceil(w / tile)
        oh, ow = math.ceil(h / rows), math.ceil(w / cols)
        for r in range(rows):
            for c in range(cols):
                tiles.append(img.crop((c * ow, r * oh, min(c * ow + ow, w), min(r * oh + oh, h))))
        if (h, w) != (tile, tile):
            img = img.resize((tile, tile), Image.LANCZOS)
    tiles.append(img)
    return tiles, rows, cols


if __name__ == "__main__":
    main()
