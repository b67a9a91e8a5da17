"""The paper's figures as pictures (python3-matplotlib), from the runs' own outputs.

  python3 figures.py [--results results.json] [--table demo_table.json] [--out ../docs/figures]

  kmeans_init.png        fine-tuning loss and quantization error by step: k-means vs absmean
                         initialisation (and binary), from results.json (report.py, out of the
                         run's log.jsonl files)
  accuracy_by_size.png   exact match (held-out split and the second renderer's split) and
                         perplexity by file size (text + mmproj), one point per file type
  accuracy_by_memory.png the same by peak RSS while running (`tern bench`)
  tokens_per_s.png       generation tokens/s by file type (`tern bench`, 64 tokens)
The last three read demo_table.json (bench/demo_table.py --json, through the C engine).
Nothing is typed in: a missing input leaves its figure out with a message.
"""

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STAGES = (("ternary", "ternary, k-means init"), ("absmean", "ternary, absmean init"),
          ("binary", "binary"))


def load(path):
    if not os.path.exists(path):
        print(f"figures: {path} missing, its figures are left out", file=sys.stderr)
        return None
    with open(path) as f:
        return json.load(f)


def kmeans_init(res, out):
    st = res.get("stages", {})
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label in STAGES:
        if key in st and st[key].get("loss_curve"):
            xs, ys = zip(*st[key]["loss_curve"])
            a.plot(xs, ys, label=label)
        if key in st and st[key].get("qerr_curve"):
            xs, ys = zip(*st[key]["qerr_curve"])
            b.plot(xs, ys, label=label)
    a.set(xlabel="fine-tuning step", ylabel="answer-token loss", yscale="log",
          title="Fine-tuning loss")
    b.set(xlabel="fine-tuning step", ylabel="||W - Q(W)|| / ||W||",
          title="Quantization error of the latent weights")
    for ax in (a, b):
        if ax.lines:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "not in this run's logs", ha="center", transform=ax.transAxes)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "kmeans_init.png"), dpi=110)
    plt.close(fig)


def short(r):
    return r["file"].replace(" post-training only (f16 re-typed)", " PTQ")


def offsets(points):
    """Label offsets (points) that keep labels of near-coincident points apart: each one that
    falls close to an earlier point's goes one line lower (tq1_0 sits beside tq2_0)."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    dx, dy = (max(xs) - min(xs)) or 1, (max(ys) - min(ys)) or 1
    out = []
    for i, (x, y) in enumerate(points):
        near = sum(abs(x - points[j][0]) < 0.04 * dx and abs(y - points[j][1]) < 0.04 * dy
                   for j in range(i))
        out.append((4, 4 - 10 * near))
    return out


def by(table, key, xlabel, name, out):
    rows = table["rows"]
    heads = [h for h in rows[0]["exact"]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for h in heads:
        xs = [r[key] for r in rows]
        a.plot(xs, [100 * r["exact"][h] for r in rows], "o",
               label={"in_distribution": "held-out split"}.get(h, h))
    pa = [(r[key], 100 * r["exact"]["in_distribution"]) for r in rows]
    pb = [(r[key], r["perplexity"]) for r in rows]
    for r, xa, xb, oa, ob in zip(rows, pa, pb, offsets(pa), offsets(pb)):
        a.annotate(short(r), xa, textcoords="offset points", xytext=oa, fontsize=8)
        b.plot(*xb, "o", color="C0")
        b.annotate(short(r), xb, textcoords="offset points", xytext=ob, fontsize=8)
    a.set(xlabel=xlabel, ylabel="exact match %", title="Exact match")
    b.set(xlabel=xlabel, ylabel="perplexity (held-out split)", title="Perplexity")
    a.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)


def tokens(table, out):
    rows = [r for r in table["rows"] if "post-training" not in r["file"]]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar([r["file"] for r in rows], [r["tg_tok_s"] for r in rows], color="C2")
    ax.set(ylabel="generation tokens/s", title="tern bench, %s thread(s), 64 tokens, %s rounds"
           " (shared machine: noisy)" % (table.get("threads", "?"), table.get("reps", "?")))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "tokens_per_s.png"), dpi=110)
    plt.close(fig)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=os.path.join(here, "results.json"))
    ap.add_argument("--table", default=os.path.join(here, "demo_table.json"))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(here), "docs", "figures"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    res = load(a.results)
    if res:
        kmeans_init(res, a.out)
    table = load(a.table)
    if table and table.get("rows"):
        by(table, "mb", "file size, MB (text + mmproj)", "accuracy_by_size.png", a.out)
        by(table, "peak_rss_mb", "peak RSS while running, MB", "accuracy_by_memory.png", a.out)
        tokens(table, a.out)
    print("figures in", a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
