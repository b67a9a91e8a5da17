#!/usr/bin/python3
"""Reference answer NLLs for `tern perplexity`, with the PyTorch model of
training/model.py on a Hugging Face checkpoint: the same prompt (SmolVLM
template, Idefics3 image block, no splitting), the answer scored as
" " + answer + <end_of_utterance>.

usage: ppl_reference.py TRAINING_DIR HF_DIR DATA.jsonl
prints one line per example: LINE_NO TOKENS TOTAL_NLL
"""
import json
import math
import os
import sys

import numpy as np
import torch
from PIL import Image, ImageOps

sys.path.insert(0, sys.argv[1])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402  (training/model.py)
from tokenizer import Tokenizer  # noqa: E402  (training/tokenizer.py)
import make_image_refs as R  # noqa: E402  (the Idefics3 tiling restated)


def main():
    hf, data = sys.argv[2], sys.argv[3]
    model = M.load_hf(hf).eval()
    tok = Tokenizer.load(os.path.join(hf, "tokenizer.json"))
    pp = json.load(open(os.path.join(hf, "preprocessor_config.json")))
    cfg = json.load(open(os.path.join(hf, "config.json")))
    v = cfg["vision_config"]
    tile = v["image_size"]
    longest = pp.get("size", {}).get("longest_edge", tile)
    n_img = (tile // v["patch_size"]) ** 2 // cfg.get("scale_factor", 2) ** 2
    base = os.path.dirname(data)
    for no, line in enumerate(open(data), 1):
        if not line.strip():
            continue
        ex = json.loads(line)
        prompt = "<|im_start|>User:"
        pix = None
        if "image" in ex:
            img = R.convert_to_rgb(ImageOps.exif_transpose(Image.open(os.path.join(base, ex["image"]))))
            tiles, _, _ = R.idefics3_tiles(img, longest, tile, False)
            a = torch.from_numpy(np.asarray(tiles[0], dtype=np.uint8).copy())
            pix = M.to_pixels(a)[None]
            prompt += ("<fake_token_around_image><global-img>" + "<image>" * n_img +
                       "<fake_token_around_image>")
        else:
            prompt += " "
        prompt += ex["prompt"] + "<end_of_utterance>\nAssistant:"
        p_ids = tok.encode(prompt)
        a_ids = tok.encode(" " + ex["answer"] + "<end_of_utterance>")
        ids = torch.tensor([p_ids + a_ids])
        with torch.no_grad():
            logits = model(ids, pixel_values=pix)[0].double()
        lp = torch.log_softmax(logits, -1)
        nll = -sum(lp[len(p_ids) - 1 + i, t].item() for i, t in enumerate(a_ids))
        print(no, len(a_ids), f"{nll:.6f}")


if __name__ == "__main__":
    main()
