#!/usr/bin/python3
"""Writes a tiny Hugging Face Idefics3 checkpoint for the convert tests.

Random weights, safetensors written by hand (no safetensors package here),
sharded into two files with an index, text weights in BF16 and F16, vision in
F32, plus config.json, a small byte-level BPE tokenizer.json,
tokenizer_config.json and preprocessor_config.json.

usage: make_hf_fixture.py OUT_DIR
"""
import json
import os
import struct
import sys

import numpy as np

TEXT = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
            rope_theta=100000.0, max_position_embeddings=512, vocab_size=320,
            model_type="llama")
VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=2, image_size=32, patch_size=8,
              layer_norm_eps=1e-6, model_type="idefics3_vision")
SCALE = 2

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>",
            "<image>", "<fake_token_around_image>", "<global-img>"] + \
           [f"<row_{r}_col_{c}>" for r in range(1, 4) for c in range(1, 4)]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def make_tokenizer():
    b2u = bytes_to_unicode()
    vocab = {}
    for i, s in enumerate(SPECIALS):
        vocab[s] = i
    for b in range(256):
        vocab[b2u[b]] = len(vocab)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"),
              ("e", "r"), ("o", "n"), ("Ġ", "s"), ("r", "e"), ("Ġ", "c"),
              ("Ġ", "w"), ("a", "t"), ("e", "n"), ("Ġ", "o"), ("i", "s"),
              ("Ċ", "Ċ"), ("Ġs", "h"), ("Ġsh", "a"), ("p", "e"), ("Ġsha", "pe"),
              ("Ġc", "o"), ("l", "o"), ("Ġco", "lo"), ("Ġcolo", "r"),
              ("Ġ", "r"), ("e", "d"), ("Ġr", "ed"), ("i", "r"), ("c", "l"),
              ("cl", "e"), ("ir", "cle"), ("Ġc", "ircle")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    added = [{"id": vocab[s], "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True} for s in SPECIALS]
    tok = {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}]},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab,
                  # half in the old "a b" form, half in the new pair form
                  "merges": [f"{a} {b}" if i % 2 == 0 else [a, b]
                             for i, (a, b) in enumerate(merges)]},
    }
    return tok


def write_safetensors(path, tensors):
    header = {}
    blobs = []
    off = 0
    for name, (dtype, arr) in tensors.items():
        if dtype == "F32":
            raw = arr.astype("<f4").tobytes()
        elif dtype == "F16":
            raw = arr.astype("<f2").tobytes()
        elif dtype == "BF16":
            bits = arr.astype("<f4").view("<u4")
            # round to nearest even, as torch does
            bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
            raw = bits.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1234)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(np.float32)

    t = TEXT
    hd = t["hidden_size"] // t["num_attention_heads"]
    text = {}
    text["model.text_model.embed_tokens.weight"] = ("BF16", w(t["vocab_size"], t["hidden_size"]))
    for i in range(t["num_hidden_layers"]):
        p = f"model.text_model.layers.{i}."
        dt = "BF16" if i == 0 else "F16"
        text[p + "input_layernorm.weight"] = (dt, w(t["hidden_size"]))
        text[p + "self_attn.q_proj.weight"] = (dt, w(t["num_attention_heads"] * hd, t["hidden_size"]))
        text[p + "self_attn.k_proj.weight"] = (dt, w(t["num_key_value_heads"] * hd, t["hidden_size"]))
        text[p + "self_attn.v_proj.weight"] = (dt, w(t["num_key_value_heads"] * hd, t["hidden_size"]))
        text[p + "self_attn.o_proj.weight"] = (dt, w(t["hidden_size"], t["num_attention_heads"] * hd))
        text[p + "post_attention_layernorm.weight"] = (dt, w(t["hidden_size"]))
        text[p + "mlp.gate_proj.weight"] = (dt, w(t["intermediate_size"], t["hidden_size"]))
        text[p + "mlp.up_proj.weight"] = (dt, w(t["intermediate_size"], t["hidden_size"]))
        text[p + "mlp.down_proj.weight"] = (dt, w(t["hidden_size"], t["intermediate_size"]))
    text["model.text_model.norm.weight"] = ("BF16", w(t["hidden_size"]))
    text["lm_head.weight"] = ("BF16", w(t["vocab_size"], t["hidden_size"]))

    v = VISION
    vis = {}
    p = "model.vision_model."
    n_patches = (v["image_size"] // v["patch_size"]) ** 2
    vis[p + "embeddings.patch_embedding.weight"] = ("F32", w(v["hidden_size"], 3, v["patch_size"], v["patch_size"]))
    vis[p + "embeddings.patch_embedding.bias"] = ("F32", w(v["hidden_size"]))
    vis[p + "embeddings.position_embedding.weight"] = ("F32", w(n_patches, v["hidden_size"]))
    for i in range(v["num_hidden_layers"]):
        q = f"{p}encoder.layers.{i}."
        H, F = v["hidden_size"], v["intermediate_size"]
        for name, shape in [("layer_norm1", (H,)), ("layer_norm2", (H,)),
                            ("self_attn.q_proj", (H, H)), ("self_attn.k_proj", (H, H)),
                            ("self_attn.v_proj", (H, H)), ("self_attn.out_proj", (H, H)),
                            ("mlp.fc1", (F, H)), ("mlp.fc2", (H, F))]:
            vis[q + name + ".weight"] = ("F32", w(*shape))
            vis[q + name + ".bias"] = ("F32", w(shape[0]))
    vis[p + "post_layernorm.weight"] = ("F32", w(v["hidden_size"]))
    vis[p + "post_layernorm.bias"] = ("F32", w(v["hidden_size"]))
    vis["model.connector.modality_projection.proj.weight"] = (
        "F32", w(t["hidden_size"], v["hidden_size"] * SCALE * SCALE))

    shards = {"model-00001-of-00002.safetensors": text,
              "model-00002-of-00002.safetensors": vis}
    weight_map = {}
    for fname, tensors in shards.items():
        write_safetensors(os.path.join(out, fname), tensors)
        for name in tensors:
            weight_map[name] = fname
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f, indent=1)

    config = {"architectures": ["Idefics3ForConditionalGeneration"], "model_type": "idefics3",
              "scale_factor": SCALE, "image_token_id": SPECIALS.index("<image>"),
              "tie_word_embeddings": False, "text_config": TEXT, "vision_config": VISION}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(make_tokenizer(), f, ensure_ascii=False, indent=1)
    tc = {"bos_token": "<|im_start|>", "eos_token": "<end_of_utterance>",
          "pad_token": "<|im_end|>", "unk_token": {"content": "<|endoftext|>"},
          "add_bos_token": False,
          "chat_template": "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}: {{message['content']}}<end_of_utterance>\n{% endfor %}Assistant:"}
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=1)
    pp = {"image_processor_type": "Idefics3ImageProcessor", "do_resize": True,
          "size": {"longest_edge": 64}, "max_image_size": {"longest_edge": 32},
          "do_image_splitting": True, "resample": 1, "do_rescale": True,
          "rescale_factor": 1 / 255, "do_normalize": True,
          "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump(pp, f, indent=1)


if __name__ == "__main__":
    main()
