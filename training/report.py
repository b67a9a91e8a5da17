"""Collect the pipeline's numbers into results.json and a markdown summary.

  python3 report.py OUT RESULTS_JSON RESULTS_MD

Reads OUT/data, OUT/float/{log.jsonl,eval.json}, OUT/{ternary,binary,absmean}/{log.jsonl,eval.json}
and OUT/*/eval_hf.json (accuracy of the exported files), whatever exists. OUT/float2 (run.sh's
second float cycle) and OUT/world, world2, world3 (the wider-world cycles) continue the float
stage: their steps are counted on from the previous cycle's last; the last cycle present is the
float model. OUT/cycles, when run.sh wrote it, lists those cycles in order instead (one
directory name a line: the language-side stages after the tower, or the model the fine-tunings
were continued from).
"""

import json
import os
import sys


def jl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def js(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def curve(log, every=None):
    pts = [(r["step"], round(r["loss"], 4)) for r in log if "loss" in r]
    if every:
        pts = [p for p in pts if p[0] % every == 0 or p == pts[-1]]
    return pts


def pct(x):
    return "-" if x is None else f"{100 * x:.1f}"


def main():
    out, rj, rm = sys.argv[1:4]
    res = {"stages": {}}
    listed = os.path.join(out, "cycles")
    names = ("float2", "world", "world2", "world3")
    if os.path.exists(listed):
        with open(listed) as f:
            names = [line.strip() for line in f if line.strip()]
    cycles = [c for c in names if os.path.isdir(os.path.join(out, c))]
    last = os.path.join(out, cycles[-1] if cycles else "float")
    cfg = js(os.path.join(last, "hf", "config.json"))
    if cfg:
        res["config"] = {"vision": cfg["vision_config"], "text": cfg["text_config"],
                         "scale_factor": cfg["scale_factor"]}
    for st in ("float", "ternary", "binary", "absmean"):
        d = os.path.join(out, st)
        if not os.path.isdir(d) and not (st == "float" and cycles):
            continue
        log = jl(os.path.join(d, "log.jsonl"))
        if st == "float":
            for c in cycles:
                base = max((r["step"] for r in log), default=0)
                log += [dict(r, step=r["step"] + base, cycle=c)
                        for r in jl(os.path.join(out, c, "log.jsonl"))]
            d = last
        e = {"loss_curve": curve(log), "val": [r for r in log if "val_acc" in r]}
        q = [(r["step"], round(r["qerr"], 5)) for r in log if "qerr" in r]
        if q:  # relative quantization error of the latent weights (ternarize.py)
            e["qerr_curve"] = q
        sp = [r["s_per_step"] for r in log if "s_per_step" in r]
        if sp:
            e["s_per_step_median"] = sorted(sp)[len(sp) // 2]
        for k in ("eval.json", "eval_hf.json"):
            v = js(os.path.join(d, k))
            if v:
                v.pop("layers", None)
                e[k[:-5]] = v
        res["stages"][st] = e
    with open(rj, "w") as f:
        json.dump(res, f, indent=1)

    L = ["# Demo model: training results", ""]
    if cfg:
        v, t = cfg["vision_config"], cfg["text_config"]
        L += [f"Model: vision {v['num_hidden_layers']}x{v['hidden_size']} (ffn "
              f"{v['intermediate_size']}, {v['image_size']} px, patch {v['patch_size']}), "
              f"pixel shuffle x{cfg['scale_factor']}, text {t['num_hidden_layers']}x"
              f"{t['hidden_size']} (ffn {t['intermediate_size']}, {t['num_attention_heads']} heads,"
              f" {t['num_key_value_heads']} kv), vocab {t['vocab_size']}.", ""]
    L += ["Accuracy = greedy exact match on the test split (teacher-forced argmax over every",
          "answer token, which is the same thing; `greedy` rows decode for real).", "",
          "| model | overall | describe | count | color | shape | where | exists |",
          "|---|---|---|---|---|---|---|---|"]

    def row(name, acc):
        if not acc:
            return
        L.append(f"| {name} | " + " | ".join(pct(acc.get(k)) for k in
                 ("overall", "describe", "count", "color", "shape", "where", "exists")) + " |")

    s = res["stages"]
    if "float" in s and "eval_hf" in s["float"]:
        row("float (f16 file)", s["float"]["eval_hf"]["teacher_forced"])
        if "greedy" in s["float"]["eval_hf"]:
            row("float, greedy", s["float"]["eval_hf"]["greedy"])
    for st, nm in (("ternary", "ternary k-means"), ("binary", "binary"),
                   ("absmean", "ternary absmean")):
        if st in s and "eval" in s[st]:
            row(f"{nm}, post-training only", s[st]["eval"].get("ptq_test"))
            row(f"{nm}, fine-tuned ({s[st]['eval']['steps']} steps)", s[st]["eval"].get("qat_test"))
        if st in s and "eval_hf" in s[st]:
            row(f"{nm} (exported file), greedy", s[st]["eval_hf"].get("greedy"))
    L += ["", "Fine-tuning loss by step (answer tokens), k-means init vs absmean init:", "",
          "| step | k-means | absmean | binary |", "|---|---|---|---|"]
    curves = {st: dict(s[st]["loss_curve"]) for st in ("ternary", "absmean", "binary") if st in s}
    steps = sorted({k for c in curves.values() for k in c})
    for k in steps:
        if k <= 30 or k in (50, 100) or k % 250 == 0 or k == steps[-1]:
            L.append(f"| {k} | " + " | ".join(str(curves.get(st, {}).get(k, "-"))
                                               for st in ("ternary", "absmean", "binary")) + " |")
    if "float" in s and not s["float"]["loss_curve"]:  # run.sh SHAPES_CONTINUE: no float steps
        given = os.path.basename(os.path.realpath(os.path.join(last, "hf")))
        L += ["", f"No float training in this run: the float model was given ({given})."]
    elif "float" in s:
        fc = s["float"]["loss_curve"]
        L += ["", "Float training loss: " + ", ".join(f"{a}: {b}" for a, b in fc
                                                     if a % 500 == 0 or a == fc[-1][0]),
              f"(median {s['float'].get('s_per_step_median', 0):.2f} s/step)."]
    with open(rm, "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
