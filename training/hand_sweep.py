"""Single shapes written here as SVG (neither data.py nor data_ood.py draws them), rendered by
librsvg (rsvg-convert, Debian's librsvg2-bin), asked "What shape is the COLOUR object?" through
`tern run` with greedy decoding. 7 shapes x 4 sizes (15-60 % of the width) x 3 backgrounds x
2 colours = 168 pictures, 240 x 240 px, one shape in the centre.

  python3 training/hand_sweep.py MODEL.gguf MMPROJ.gguf [--tern build/src/cli/tern]

Prints the count right and every wrong answer by shape and size.
"""
import argparse
import math
import os
import subprocess
import tempfile

W = 240
SHAPES = ["circle", "square", "triangle", "star", "hexagon", "diamond", "cross"]
SIZES = (0.15, 0.3, 0.45, 0.6)  # the shape's span, a fraction of the picture's width
BACKGROUNDS = {"white": "#ffffff", "black": "#000000", "pastel": "#f3e3a8"}
COLOURS = {"red": "#e01010", "blue": "#1040e0"}


def polygon(points, fill):
    return '<polygon points="%s" fill="%s"/>' % (" ".join("%.1f,%.1f" % p for p in points), fill)


def around(radii, turn):
    """Points at the given radii, evenly spaced around the centre, starting at angle turn."""
    n = len(radii)
    return [(W / 2 + r * math.cos(turn + 2 * math.pi * k / n),
             W / 2 + r * math.sin(turn + 2 * math.pi * k / n)) for k, r in enumerate(radii)]


def rect(x, y, w, h, fill):
    return '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>' % (x, y, w, h, fill)


def shape_svg(shape, span, fill):
    r, c = span / 2, W / 2
    if shape == "circle":
        return '<circle cx="%.1f" cy="%.1f" r="%.1f" fill="%s"/>' % (c, c, r, fill)
    if shape == "square":
        return rect(c - 0.85 * r, c - 0.85 * r, 1.7 * r, 1.7 * r, fill)
    if shape == "triangle":
        return polygon(around([r] * 3, -math.pi / 2), fill)
    if shape == "hexagon":  # pointy sides left and right, flat top and bottom
        return polygon(around([r] * 6, 0), fill)
    if shape == "diamond":
        return polygon([(c, c - r), (c + 0.7 * r, c), (c, c + r), (c - 0.7 * r, c)], fill)
    if shape == "star":
        return polygon(around([r, 0.42 * r] * 5, -math.pi / 2), fill)
    arm = 0.34 * r  # cross: two bars
    return rect(c - arm, c - r, 2 * arm, 2 * r, fill) + rect(c - r, c - arm, 2 * r, 2 * arm, fill)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("mmproj")
    ap.add_argument("--tern", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                   "src", "cli", "tern"))
    a = ap.parse_args()
    right, total, wrong = 0, 0, {}
    with tempfile.TemporaryDirectory() as tmp:
        svg, png = os.path.join(tmp, "x.svg"), os.path.join(tmp, "x.png")
        for shape in SHAPES:
            for span in SIZES:
                for bg in BACKGROUNDS.values():
                    for name, fill in COLOURS.items():
                        with open(svg, "w") as f:
                            f.write('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d">'
                                    '%s%s</svg>' % (W, W, rect(0, 0, W, W, bg),
                                                    shape_svg(shape, span * W, fill)))
                        subprocess.run(["rsvg-convert", svg, "-o", png], check=True)
                        answer = subprocess.run(
                            [a.tern, "run", "-m", a.model, "--mmproj", a.mmproj, "--image", png,
                             "-p", "What shape is the %s object?" % name, "-t", "1"],
                            capture_output=True, text=True, check=True).stdout.strip()
                        total += 1
                        if answer == "A %s." % shape:
                            right += 1
                        else:
                            wrong.setdefault((shape, span), []).append(answer)
    print("right %d / %d" % (right, total))
    for (shape, span), answers in sorted(wrong.items()):
        print("  %s, %d %% of the width: %s" % (shape, 100 * span, ", ".join(answers)))


if __name__ == "__main__":
    main()
