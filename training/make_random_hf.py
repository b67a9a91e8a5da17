"""A random-weight Idefics3 checkpoint in Hugging Face layout, at SmolVLM-256M's real
configuration or at a tiny one for tests.

  python3 make_random_hf.py --like smolvlm-256m|tiny --out DIR [--seed N] [--dtype bf16|f32]

Writes DIR/config.json (Idefics3 keys: text_config, vision_config, scale_factor,
image_token_id, tie_word_embeddings; SmolVLM-256M's lm_head is untied, the tiny one's is tied), DIR/model.safetensors (BF16 by default, as SmolVLM ships),
preprocessor_config.json (SmolVLM-256M: first resize to 2048 px, tiles of 512, so images are
split), processor_config.json, chat_template.json, tokenizer.json and tokenizer_config.json.

The tokenizer: SmolVLM's real 49k-token vocabulary cannot be made offline, so tokenizer.json is
a small byte-level BPE (SmolLM2 pre-tokenizer) trained here on a few hundred words, with the
special tokens at SmolVLM-256M's real ids (<image> = 49190, <end_of_utterance> = 49279, ...).
Ids between the BPE tokens and the special tokens are unused; config.json's vocab_size is the
real 49280, so the matrices have their real shapes and `tern convert` pads the token table.
"""

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
import tokenizer as TK  # noqa: E402

# SmolVLM-256M-Instruct's config.json (the fields tern and model.py read).
# Its lm_head is a separate matrix (untied): 228 M parameters with it tied, 256.5 M without.
SMOLVLM_256M = {
    "scale_factor": 4,
    "tie_word_embeddings": False,
    "text_config": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64,
                    "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "vocab_size": 49280,
                    "max_position_embeddings": 8192, "tie_word_embeddings": False},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "image_size": 512, "patch_size": 16},
    "longest_edge": 2048,
    # special tokens at their SmolVLM ids; the BPE tokens take ids 3 and up
    "ids": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<global-img>": 49152,
            **{f"<row_{r}_col_{c}>": 49153 + (r - 1) * 6 + (c - 1)
               for r in range(1, 7) for c in range(1, 7)},
            "<fake_token_around_image>": 49189, "<image>": 49190, "<end_of_utterance>": 49279},
}

# Small enough for a CI run in seconds; tied embeddings (SmolLM2-style), 4 decoder blocks (first and last kept in float,
# two ternary), tied embeddings, a non-default rope theta, and splitting (a 128 px longest edge
# over 64 px tiles: 2 x 2 tiles + the global one). Every matrix input is 256 or a multiple.
TINY = {
    "scale_factor": 2,
    "tie_word_embeddings": True,
    "text_config": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
                    "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "vocab_size": 768,
                    "max_position_embeddings": 1024, "tie_word_embeddings": True},
    "vision_config": {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "image_size": 64, "patch_size": 16},
    "longest_edge": 128,
    "ids": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<global-img>": 720,
            **{f"<row_{r}_col_{c}>": 721 + (r - 1) * 6 + (c - 1)
               for r in range(1, 7) for c in range(1, 7)},
            "<fake_token_around_image>": 757, "<image>": 758, "<end_of_utterance>": 767},
}

LIKE = {"smolvlm-256m": SMOLVLM_256M, "tiny": TINY}

# Words the small BPE is trained on: the generic questions distill.py asks, and plain answers.
CORPUS = """Describe the image. What is in the picture? What do you see? What colour is the
main object? How many objects are there? Is there a person in the image? Where was this photo
taken? What is happening here? Describe the scene in detail. What is on the left and on the
right? The image shows a red car parked on a street next to a green tree. There are two people
walking a dog in the park. A cat is sleeping on a sofa. The sky is blue and the sun is shining.
A kitchen with a white table, four chairs and a window. Yes. No. One. Two. Three. Four. Five.
It is a photo of a building at night with lights in the windows. A camera frame from a
shop: shelves with boxes, a door and a counter. The weather is cloudy and it may rain."""


def make_tokenizer(ids, n_words=400):
    """Small byte-level BPE with the special tokens at `ids`; BPE tokens from id 3 on."""
    tok = TK.train([CORPUS] * 3, vocab_size=len(TK.SPECIAL_TOKENS) + 256 + n_words)
    order = sorted(tok.vocab.items(), key=lambda x: x[1])
    vocab = {t: 3 + k for k, (t, _) in enumerate(order)}
    top = max(vocab.values())
    assert top < min(i for s, i in ids.items() if i > 2), "BPE ids run into the specials"
    specials = {s: ids[s] for s in TK.SPECIAL_TOKENS}
    return TK.Tokenizer(vocab, tok.merges, specials)


def config_for(like):
    spec = LIKE[like]
    t = dict(spec["text_config"])
    return M.demo_config(t["vocab_size"], spec["ids"]["<image>"],
                         scale_factor=spec["scale_factor"],
                         tie_word_embeddings=spec["tie_word_embeddings"],
                         torch_dtype="bfloat16", text_config=t,
                         vision_config=dict(spec["vision_config"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--like", choices=sorted(LIKE), required=True,
                    help="configuration: SmolVLM-256M's real one, or a tiny one for tests")
    ap.add_argument("--out", required=True, help="output directory (HF layout)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default="bf16",
                    help="tensor type of model.safetensors (default bf16, as SmolVLM ships)")
    ap.add_argument("--std", type=float, default=0.02,
                    help="standard deviation of the random weights (HF's initializer range)")
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    spec = LIKE[a.like]
    cfg = config_for(a.like)
    with torch.no_grad():
        model = M.Idefics3(cfg)
        for mod in model.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding)):
                torch.nn.init.normal_(mod.weight, std=a.std)
                if getattr(mod, "bias", None) is not None:
                    torch.nn.init.zeros_(mod.bias)
    model.processor = M.processor_settings(
        cfg, {"size": {"longest_edge": spec["longest_edge"]}})
    tok = make_tokenizer(spec["ids"])
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    M.save_hf(model, a.out, tok.to_json(), dtype=dtype)
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>",
                   "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>",
                   "add_bos_token": False}, f, indent=1)
    print(f"{a.out}: {a.like}, {M.num_params(model) / 1e6:.1f} M parameters, "
          f"{len(tok)} tokenizer entries, vocab_size {cfg['text_config']['vocab_size']}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
