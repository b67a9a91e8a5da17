"""Accuracy of an HF-format model directory on a split, as greedy exact match per question type.

  python3 evaluate.py --model DIR --data DATA [--split test] [--out FILE.json] [--limit N]

Reports the teacher-forced exact match on the whole split (every answer token is the argmax:
equal to greedy exact match by construction, one forward pass), real batched greedy decoding
with string comparison on the first --greedy-limit images (a check of that equivalence), and
the mean answer-token loss. The model is evaluated as stored in the file
(f16 files are run in f32 after loading, as the C engine does with F16 tensors).
"""

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
import train as TR  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402


def run(model_dir, data_dir, split="test", limit=None, greedy_limit=60):
    dev = TR.device_pick()
    tok = Tokenizer.load(os.path.join(model_dir, "tokenizer.json"))
    model = M.load_hf(model_dir).to(dev)
    ds = TR.Encoded(os.path.join(data_dir, f"{split}.npz"), tok, M.image_seq_len(model.config))
    t = time.time()
    tf, loss = TR.evaluate(model, ds, dev, limit=limit)
    res = {"model": model_dir, "split": split, "teacher_forced": tf, "answer_loss": loss}
    if greedy_limit:
        gl = greedy_limit if limit is None else min(limit, greedy_limit)
        g, wrong = TR.evaluate_greedy(model.to(dev), tok, ds, dev, limit=gl)
        res["greedy"] = g
        res["greedy_errors"] = wrong
    res["seconds"] = time.time() - t
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--greedy-limit", type=int, default=60,
                    help="images decoded for real (greedy, no KV cache: slow); 0 = none")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = run(a.model, a.data, a.split, a.limit, a.greedy_limit)
    s = json.dumps(res, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(s)
    print(s)


if __name__ == "__main__":
    main()
