"""Golden outputs for tests/test_model.c, from the PyTorch reference in training/model.py.

Makes two small random-weight Idefics3 checkpoints and writes, under tests/data/golden/:

  tiny-hf/          HF checkpoint (save_hf, float16 safetensors) whose every matrix row is a
                    multiple of 256, so all tensor types apply: text 256 wide, vision 256 wide,
                    64x64 tiles, 4 image tokens
  odd-hf/           rows of 64/192/384, not multiples of 256 (Q2_0's case): text 192 wide,
                    vision 64 wide, 32x32 tiles, 1 image token
  <name>.golden.gguf
                    the reference run: prompt ids, the input tile's pixels, the image
                    embeddings, the logits at every prompt position and a 32-token greedy
                    continuation (a GGUF file of F32 tensors and golden.* keys)

The reference runs in float64 on weights rounded to float16 (what the checkpoint stores), so
the C engine's F32 path must agree to float32 rounding. tests/test_model.c converts the
checkpoints at test time with `tern convert`'s convert_hf (to F32), then quantizes from there.
The tokenizer is the small byte-level BPE of tests/make_hf_fixture.py.
Run from the repository root:  python3 training/make_goldens.py
"""

import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
import model as M  # noqa: E402
from make_hf_fixture import SPECIALS, make_tokenizer  # noqa: E402

OUT = os.path.join("tests", "data", "golden")
IMAGE_TOKEN = SPECIALS.index("<image>")
FAKE_AROUND = SPECIALS.index("<fake_token_around_image>")
GLOBAL_IMG = SPECIALS.index("<global-img>")
VOCAB = 320
N_GREEDY = 32

# ---------------------------------------------------------------------------------------------
# A minimal GGUF v3 writer, for the golden outputs

T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64 = 4, 5, 6, 7, 8, 9, 10
GGML_F32, GGML_F16 = 0, 1


def _str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _kv(key, value):
    out = _str(key)
    if isinstance(value, bool):
        return out + struct.pack("<IB", T_BOOL, value)
    if isinstance(value, int):
        return out + struct.pack("<Ii", T_I32, value) if value < 2**31 else \
            out + struct.pack("<IQ", T_U64, value)
    if isinstance(value, float):
        return out + struct.pack("<If", T_F32, value)
    if isinstance(value, str):
        return out + struct.pack("<I", T_STR) + _str(value)
    if isinstance(value, list) and all(isinstance(v, float) for v in value):
        return out + struct.pack("<IIQ", T_ARR, T_F32, len(value)) + \
            struct.pack("<%df" % len(value), *value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return out + struct.pack("<IIQ", T_ARR, T_STR, len(value)) + \
            b"".join(_str(v) for v in value)
    if isinstance(value, list):
        return out + struct.pack("<IIQ", T_ARR, T_I32, len(value)) + \
            struct.pack("<%di" % len(value), *value)
    raise TypeError(key)


def write_gguf(path, kvs, tensors, align=32):
    """tensors: list of (name, np.ndarray in numpy order, ggml type). GGUF dims are reversed."""
    infos, blobs, off = b"", [], 0
    for name, arr, ty in tensors:
        data = arr.astype(np.float16 if ty == GGML_F16 else np.float32).tobytes()
        infos += _str(name) + struct.pack("<I", arr.ndim)
        infos += b"".join(struct.pack("<Q", d) for d in reversed(arr.shape))
        infos += struct.pack("<IQ", ty, off)
        pad = -len(data) % align
        blobs.append(data + b"\0" * pad)
        off += len(data) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    head += b"".join(_kv(k, v) for k, v in kvs.items()) + infos
    head += b"\0" * (-len(head) % align)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Checkpoints and the reference run


def make_model(cfg, seed):
    """Random weights with unit-gain scales (so activations and logits are O(1), unlike HF's
    0.02 init whose near-uniform logits would make a weak test), rounded to float16."""
    torch.manual_seed(seed)
    m = M.Idefics3(cfg)
    with torch.no_grad():
        for name, prm in m.named_parameters():
            if prm.ndim >= 2:
                fan_in = prm[0].numel()
                prm.copy_(torch.randn_like(prm) / fan_in ** 0.5)
                if "embed" in name and prm.ndim == 2:
                    prm.mul_(fan_in ** 0.5)
            elif name.endswith("bias"):
                prm.copy_(0.1 * torch.randn_like(prm))
            else:  # norm weights
                prm.copy_(1.0 + 0.1 * torch.randn_like(prm))
            prm.copy_(prm.half().float())
    return m.double().eval()


def test_image(size):
    """A fixed synthetic picture: colour gradients plus a square and a disc, normalised."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    img = np.stack([x, y, 0.5 * (x + y)], axis=-1) * 255
    img[size // 8: size // 2, size // 8: size // 2] = [220, 30, 40]
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (yy - 0.7 * size) ** 2 + (xx - 0.65 * size) ** 2 < (0.2 * size) ** 2
    img[disc] = [20, 60, 230]
    u8 = torch.from_numpy(np.round(img).astype(np.uint8))
    return M.to_pixels(u8)[None].double()


def prompt_ids(n_image_tokens, with_image, n=28):
    g = np.random.default_rng(7)
    words = [int(t) for t in g.integers(len(SPECIALS), 300, size=n)]
    if not with_image:
        return [1] + words
    img = [FAKE_AROUND, GLOBAL_IMG] + [IMAGE_TOKEN] * n_image_tokens + [FAKE_AROUND]
    return [1] + words[:6] + img + words[6:]


def run_reference(m, ids, pixels):
    """Logits of every prompt position, then greedy decoding. Image rows go only where the
    prompt has <image>; a generated <image> id is an ordinary token, as in the engine."""
    n_prompt = len(ids)

    def forward(seq, feats):
        h = m.model.text_model.embed_tokens(torch.tensor([seq]))
        if feats is not None:
            sel = torch.tensor([[t == IMAGE_TOKEN and i < n_prompt for i, t in enumerate(seq)]])
            h = h.masked_scatter(sel[..., None], feats.to(h.dtype))
        return m.lm_head(m.model.text_model(h))[0]

    with torch.no_grad():
        feats = m.image_features(pixels) if pixels is not None else None
        logits = forward(ids, feats)
        seq, greedy = list(ids), []
        for _ in range(N_GREEDY):
            nxt = forward(seq, feats)[-1]
            top2 = torch.topk(nxt, 2).values
            if float(top2[0] - top2[1]) < 1e-3:
                print("warning: near tie in greedy step %d" % len(greedy))
            greedy.append(int(nxt.argmax()))
            seq.append(greedy[-1])
    return logits.numpy(), greedy, (feats[0].numpy() if feats is not None else None)


def golden_gguf(path, ids, logits, greedy, pixels, feats):
    kvs = {"golden.image_token_id": IMAGE_TOKEN, "golden.n_prompt": len(ids),
           "golden.n_greedy": len(greedy), "golden.prompt": ids, "golden.greedy": greedy}
    ts = [("logits", logits, GGML_F32)]
    if pixels is not None:
        ts += [("pixels", pixels[0].numpy(), GGML_F32), ("image_embd", feats, GGML_F32)]
    write_gguf(path, kvs, ts)


def build(name, cfg, seed, with_vision):
    m = make_model(cfg, seed)
    nimg = M.image_seq_len(cfg)
    pixels = test_image(m.vcfg["image_size"]) if with_vision else None
    ids = prompt_ids(nimg, with_vision)
    logits, greedy, feats = run_reference(m, ids, pixels)
    M.save_hf(m.float(), os.path.join(OUT, name + "-hf"), tokenizer_json=make_tokenizer(),
              dtype=torch.float16)
    golden_gguf(os.path.join(OUT, name + ".golden.gguf"), ids, logits, greedy, pixels, feats)
    print("%s: %d prompt tokens, greedy %s" % (name, len(ids), greedy))


def main():
    os.makedirs(OUT, exist_ok=True)
    tiny = M.demo_config(VOCAB, IMAGE_TOKEN,
                         vision_config=dict(hidden_size=256, intermediate_size=256,
                                            num_hidden_layers=1, num_attention_heads=4,
                                            image_size=64, patch_size=16),
                         text_config=dict(hidden_size=256, intermediate_size=256,
                                          num_hidden_layers=2, num_attention_heads=4,
                                          num_key_value_heads=2, head_dim=64,
                                          max_position_embeddings=128))
    build("tiny", tiny, 1, True)
    odd = M.demo_config(VOCAB, IMAGE_TOKEN,
                        vision_config=dict(hidden_size=64, intermediate_size=128,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           image_size=32, patch_size=16),
                        text_config=dict(hidden_size=192, intermediate_size=384,
                                         num_hidden_layers=2, num_attention_heads=3,
                                         num_key_value_heads=1, head_dim=64,
                                         rope_theta=100000.0, max_position_embeddings=128))
    build("odd", odd, 2, True)


if __name__ == "__main__":
    main()
