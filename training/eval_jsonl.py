"""The Python reference for `tern perplexity`: score a JSONL test set under teacher forcing.

  python3 eval_jsonl.py --model HF_DIR --data FILE.jsonl

Same inputs as the C engine (source images decoded with PIL and resized by model.preprocess,
prompt built with the SmolVLM template) and the same outputs per question type: mean NLL per
answer token (answer = " ANSWER<end_of_utterance>"), perplexity, exact match. Comparing the
two checks the C image pipeline, tokenizer and forward pass end to end.
"""

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
import train as TR  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    tok = Tokenizer.load(os.path.join(a.model, "tokenizer.json"))
    model = M.load_hf(a.model).eval()
    n_img = M.image_seq_len(model.config)
    size = model.vcfg["image_size"]
    base = os.path.dirname(os.path.abspath(a.data))
    stats = {}
    with open(a.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    for r in rows:
        px = M.preprocess(Image.open(os.path.join(base, r["image"])), size)[None]
        p = tok.encode(TR.prompt_text(r["prompt"], n_img))
        full = tok.encode(TR.prompt_text(r["prompt"], n_img) + " " + r["answer"] +
                          "<end_of_utterance>")
        logits = model(torch.tensor([full]), px)[0]
        tgt = torch.tensor(full[len(p):])
        lg = logits[len(p) - 1:len(full) - 1]
        nll = float(F.cross_entropy(lg, tgt, reduction="sum"))
        ok = bool((lg.argmax(-1) == tgt).all())
        for k in ("all", r.get("qtype", "all")):
            s = stats.setdefault(k, [0, 0, 0.0, 0])
            s[0] += 1
            s[1] += len(tgt)
            s[2] += nll
            s[3] += int(ok)
            if k == "all" and r.get("qtype", "all") == "all":
                break
    for k, (n, t, nll, ok) in stats.items():
        print(f"{k:10s} examples {n:5d}  tokens {t:6d}  nll/token {nll / t:.4f}  "
              f"perplexity {math.exp(nll / t):.4f}  exact {ok / n:.4f}")


if __name__ == "__main__":
    main()
