"""Golden outputs for tests/test_model.c, from the PyTorch reference in training/model.py.

Makes two small random-weight Idefics3 checkpoints and writes, under tests/data/golden/:

  tiny.gguf, tiny-mmproj.gguf   every matrix row a multiple of 256 (all tensor types apply);
                                text 256 wide, vision 256 wide, 64x64 tiles, 4 image tokens
  odd.gguf                      text-only, rows of 192/384 (not multiples of 256: Q2_0's case)
  tiny.golden.gguf, odd.golden.gguf
                                the reference run: prompt ids, the input tile's pixels, the
                                image embeddings, the logits at every prompt position and a
                                32-token greedy continuation

The reference runs in float64 on weights rounded to float16, and the GGUF files store those
same weights (matrices as F16, vectors and the vision patch/position embeddings as F32), so the
C engine's float path must agree to float32 rounding. The test derives F32 and quantized files
from these at run time.

The GGUF files are written by the small writer below with llama.cpp's names and keys (q/k rows
permuted as llama.cpp's converter does), not by `tern convert`, which did not exist when this
was written. Run from the repository root:  python3 training/make_goldens.py
"""

import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402

OUT = os.path.join("tests", "data", "golden")
IMAGE_TOKEN, FAKE_AROUND, GLOBAL_IMG = 250, 251, 252
VOCAB = 256
N_GREEDY = 32

# ---------------------------------------------------------------------------------------------
# A minimal GGUF v3 writer

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


def permute(w, n_head):
    """llama.cpp's converter order for q/k rows: within each head, HF's halves interleave, so
    RoPE on adjacent pairs equals HF's rotate_half."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]) \
        .swapaxes(1, 2).reshape(w.shape)


def text_gguf(path, m):
    t, sd = m.tcfg, {k: v.double().numpy() for k, v in m.state_dict().items()}
    p = "model.text_model."
    kvs = {
        "general.architecture": "llama",
        "general.name": os.path.basename(path),
        "llama.block_count": t["num_hidden_layers"],
        "llama.context_length": t["max_position_embeddings"],
        "llama.embedding_length": t["hidden_size"],
        "llama.feed_forward_length": t["intermediate_size"],
        "llama.attention.head_count": t["num_attention_heads"],
        "llama.attention.head_count_kv": t["num_key_value_heads"],
        "llama.rope.freq_base": float(t["rope_theta"]),
        "llama.rope.dimension_count": t["head_dim"],
        "llama.attention.layer_norm_rms_epsilon": float(t["rms_norm_eps"]),
        "llama.vocab_size": t["vocab_size"],
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["<t%d>" % i for i in range(t["vocab_size"])],
    }
    ts = [("token_embd.weight", sd[p + "embed_tokens.weight"], GGML_F16)]
    for i in range(t["num_hidden_layers"]):
        q = p + "layers.%d." % i
        b = "blk.%d." % i
        ts += [
            (b + "attn_norm.weight", sd[q + "input_layernorm.weight"], GGML_F32),
            (b + "attn_q.weight", permute(sd[q + "self_attn.q_proj.weight"],
                                          t["num_attention_heads"]), GGML_F16),
            (b + "attn_k.weight", permute(sd[q + "self_attn.k_proj.weight"],
                                          t["num_key_value_heads"]), GGML_F16),
            (b + "attn_v.weight", sd[q + "self_attn.v_proj.weight"], GGML_F16),
            (b + "attn_output.weight", sd[q + "self_attn.o_proj.weight"], GGML_F16),
            (b + "ffn_norm.weight", sd[q + "post_attention_layernorm.weight"], GGML_F32),
            (b + "ffn_gate.weight", sd[q + "mlp.gate_proj.weight"], GGML_F16),
            (b + "ffn_up.weight", sd[q + "mlp.up_proj.weight"], GGML_F16),
            (b + "ffn_down.weight", sd[q + "mlp.down_proj.weight"], GGML_F16),
        ]
    ts += [("output_norm.weight", sd[p + "norm.weight"], GGML_F32),
           ("output.weight", sd["lm_head.weight"], GGML_F16)]
    write_gguf(path, kvs, ts)


def vision_gguf(path, m):
    v, sd = m.vcfg, {k: v_.double().numpy() for k, v_ in m.state_dict().items()}
    p = "model.vision_model."
    kvs = {
        "general.architecture": "clip",
        "clip.projector_type": "idefics3",
        "clip.has_vision_encoder": True,
        "clip.use_gelu": True,
        "clip.vision.image_size": v["image_size"],
        "clip.vision.patch_size": v["patch_size"],
        "clip.vision.embedding_length": v["hidden_size"],
        "clip.vision.feed_forward_length": v["intermediate_size"],
        "clip.vision.block_count": v["num_hidden_layers"],
        "clip.vision.attention.head_count": v["num_attention_heads"],
        "clip.vision.attention.layer_norm_epsilon": float(v["layer_norm_eps"]),
        "clip.vision.projection_dim": m.tcfg["hidden_size"],
        "clip.vision.projector.scale_factor": m.config["scale_factor"],
        "clip.vision.image_mean": [0.5, 0.5, 0.5],
        "clip.vision.image_std": [0.5, 0.5, 0.5],
    }
    ts = [("v.patch_embd.weight", sd[p + "embeddings.patch_embedding.weight"], GGML_F32),
          ("v.patch_embd.bias", sd[p + "embeddings.patch_embedding.bias"], GGML_F32),
          ("v.position_embd.weight", sd[p + "embeddings.position_embedding.weight"], GGML_F32)]
    names = [("ln1", "layer_norm1"), ("ln2", "layer_norm2"), ("attn_q", "self_attn.q_proj"),
             ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
             ("attn_out", "self_attn.out_proj"), ("ffn_up", "mlp.fc1"),
             ("ffn_down", "mlp.fc2")]
    for i in range(v["num_hidden_layers"]):
        for g, h in names:
            q = p + "encoder.layers.%d.%s." % (i, h)
            w = sd[q + "weight"]
            ts.append(("v.blk.%d.%s.weight" % (i, g), w, GGML_F16 if w.ndim == 2 else GGML_F32))
            ts.append(("v.blk.%d.%s.bias" % (i, g), sd[q + "bias"], GGML_F32))
    ts += [("v.post_ln.weight", sd[p + "post_layernorm.weight"], GGML_F32),
           ("v.post_ln.bias", sd[p + "post_layernorm.bias"], GGML_F32),
           ("mm.model.fc.weight", sd["model.connector.modality_projection.proj.weight"],
            GGML_F16)]
    write_gguf(path, kvs, ts)


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
    words = [int(t) for t in g.integers(2, 240, size=n)]
    if not with_image:
        return [1] + words
    img = [FAKE_AROUND, GLOBAL_IMG] + [IMAGE_TOKEN] * n_image_tokens + [FAKE_AROUND]
    return [1] + words[:6] + img + words[6:]


def run_reference(m, ids, pixels):
    with torch.no_grad():
        x = torch.tensor([ids])
        feats = m.image_features(pixels) if pixels is not None else None
        logits = m(x, image_feats=feats)[0]
        seq, greedy = list(ids), []
        for _ in range(N_GREEDY):
            nxt = m(torch.tensor([seq]), image_feats=feats)[0, -1]
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
    text_gguf(os.path.join(OUT, name + ".gguf"), m)
    if with_vision:
        vision_gguf(os.path.join(OUT, name + "-mmproj.gguf"), m)
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
                        text_config=dict(hidden_size=192, intermediate_size=384,
                                         num_hidden_layers=2, num_attention_heads=3,
                                         num_key_value_heads=1, head_dim=64,
                                         rope_theta=100000.0, max_position_embeddings=128))
    build("odd", odd, 2, False)


if __name__ == "__main__":
    main()
