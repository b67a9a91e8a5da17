"""moondream2's model in PyTorch, written from its equations: the Phi decoder (llama.cpp's
"phi2"), and the SigLIP-style vision tower with the two-layer MLP projector (llama.cpp's clip
mmproj, projector_type "mlp"); golden outputs for tests/test_model.c.

The model, per layer l, on hidden rows x (one per position):

    h     = LayerNorm(x) * w + b                        one norm feeds both branches
    q,k,v = h Wq^T + bq, h Wk^T + bk, h Wv^T + bv        split into heads of size d
    q,k   : the first r = rope.dimension_count dimensions of each head rotate by the position's
            angles, as halves: (u, w) -> (u cos - w sin, w cos + u sin) for u = dims [0, r/2),
            w = dims [r/2, r), angle_i = pos * theta^(-2i/r); the other d - r dims pass through
    a     = softmax(q k^T / sqrt(d) + causal mask) v, heads concatenated, a Wo^T + bo
    m     = gelu_tanh(h W1^T + b1) W2^T + b2             gelu_tanh(z) = z/2 (1 + tanh(sqrt(2/pi)
                                                                          (z + 0.044715 z^3)))
    x     = x + a + m                                    attention and MLP in parallel

then logits = (LayerNorm(x) * w + b) Wout^T + bout (not tied to the embedding).

The vision side, on one normalised tile of S x S pixels cut into (S/p)^2 patches of p x p:

    x     = Conv2d(p, stride p)(pixels) + b, one row per patch (row-major), + position table
    x     = x + attn(LN1(x)), x = x + mlp(LN2(x))    per block: bidirectional multi-head
                                                     attention, every linear biased, GELU (tanh)
    f     = LN_post(x)
    rows  = gelu_tanh(f W0^T + b0) W2^T + b2          llama.cpp's mm.0 / mm.2: one row per patch

and the prompt's image positions take those rows in place of token embeddings.

It writes, under tests/data/golden/:

  phi-tiny-hf/          a tiny random-weight checkpoint in moondream2's Hugging Face layout
                        (revision 2024-05-08: text_model.transformer.* with fused Wqkv,
                        text_model.lm_head.{ln,linear}, vision_encoder.encoder.model.visual.*
                        with a linear patch embedding and fused qkv, vision_encoder.projection.*;
                        config.json with model_type "moondream1" and phi_config), F16, with the
                        byte-level tokenizer of tests/make_hf_fixture.py; tests/test_model.c
                        converts it with `tern convert`'s convert_hf
  phi-tiny.golden.gguf  the reference run: prompt ids (BOS, the image's rows, text), the input
                        tile's pixels, the image rows, the logits at every prompt position and a
                        32-token greedy continuation (the format of make_goldens.py's goldens)

The reference runs in float64 on the weights rounded to float16 (what the checkpoint stores), so
the engine's F32 path must agree to float32 rounding. Run from the repository root:
    python3 training/phi_reference.py
`--config moondream2 --out DIR` writes instead a random-weight checkpoint at moondream2's real
configuration (same layout and tokenizer, 3.7 GB) for full-size runs and benchmarks.

`--reference DIR --image PIC --golden OUT` is the full-size check's reference run (too big for
CI; `make -C training moondream2-check` runs it and tests/golden_check.c against it): the
checkpoint in DIR at moondream2's configuration, read tensor by tensor from the mapped file, on
the picture (squashed to 378 x 378, bicubic, as moondream2's processor does) and "\n\nQuestion:
Q\n\nAnswer:" after BOS and the image rows; it writes the pixels, the image rows, the logits at
every prompt position, and 32 greedy tokens with the logits that chose each (KV cache), in
float64 (`--dtype float32` to measure what float32 arithmetic alone moves).
"""

import argparse
import json
import math
import os
import resource
import struct
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
from make_goldens import GGML_F32, N_GREEDY, test_image, write_gguf  # noqa: E402
from make_hf_fixture import make_tokenizer  # noqa: E402
from model import save_safetensors  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402

OUT = os.path.join("tests", "data", "golden")

# moondream2's text_config (Phi-1.5) is n_vocab 51200, n_embd 2048, 24 layers of 32 heads, n_ff
# 8192, n_rot 32 (partial_rotary_factor 0.5), eps 1e-5, theta 10000, 2048 positions (`tern mkmodel
# --like moondream2`). The tests use a tiny one with the same head size and rotary share, whose
# every matrix row is a multiple of 256, so every tensor type applies.
TINY = dict(n_vocab=320, n_embd=256, n_layer=2, n_head=4, n_ff=512, n_rot=32, eps=1e-5,
            theta=10000.0, n_ctx=128)
# moondream2's vision side is SigLIP-so400m at 378 px, patch 14 (1152 wide, ffn 4304, 27 blocks of
# 16 heads) and an MLP 1152 -> 8192 -> 2048 (`tern mkmodel --like moondream2 --mmproj`); its code
# fixes 16 heads and nn.LayerNorm's epsilon, so the tiny one keeps those and the patch size.
TINY_VISION = dict(v_embd=256, v_ff=512, v_layer=2, v_head=16, image=56, patch=14, proj_ff=512,
                   eps=1e-5)
# The real shapes, for `--config moondream2`: a random-weight checkpoint only (no reference run).
MOONDREAM2 = dict(n_vocab=51200, n_embd=2048, n_layer=24, n_head=32, n_ff=8192, n_rot=32,
                  eps=1e-5, theta=10000.0, n_ctx=2048)
MOONDREAM2_VISION = dict(v_embd=1152, v_ff=4304, v_layer=27, v_head=16, image=378, patch=14,
                         proj_ff=8192, eps=1e-5)
IMAGE_ID = TINY["n_vocab"] - 1  # what the golden prompt holds at image positions


def make_weights(cfg, seed, dt=torch.float64):
    """Unit-gain random weights (activations and logits O(1): near-uniform logits would make a
    weak test), rounded to float16, as float64 tensors keyed by GGUF name (dt float32: drawn in
    float32 and kept as float16, for the real-size checkpoint)."""
    g = torch.Generator().manual_seed(seed)
    D, F, V = cfg["n_embd"], cfg["n_ff"], cfg["n_vocab"]
    w = {}

    def mat(name, n_out, n_in, gain=1.0):
        w[name] = _keep(torch.randn(n_out, n_in, generator=g, dtype=dt) * gain / n_in ** 0.5, dt)

    def vec(name, n, mean, std):
        w[name] = _keep(mean + std * torch.randn(n, generator=g, dtype=dt), dt)

    w["token_embd.weight"] = _keep(torch.randn(V, D, generator=g, dtype=dt), dt)
    for l in range(cfg["n_layer"]):
        p = "blk.%d." % l
        vec(p + "attn_norm.weight", D, 1.0, 0.1)
        vec(p + "attn_norm.bias", D, 0.0, 0.1)
        mat(p + "attn_qkv.weight", 3 * D, D)
        vec(p + "attn_qkv.bias", 3 * D, 0.0, 0.1)
        mat(p + "attn_output.weight", D, D)
        vec(p + "attn_output.bias", D, 0.0, 0.1)
        mat(p + "ffn_up.weight", F, D)
        vec(p + "ffn_up.bias", F, 0.0, 0.1)
        mat(p + "ffn_down.weight", D, F)
        vec(p + "ffn_down.bias", D, 0.0, 0.1)
    vec("output_norm.weight", D, 1.0, 0.1)
    vec("output_norm.bias", D, 0.0, 0.1)
    mat("output.weight", V, D)
    vec("output.bias", V, 0.0, 0.1)
    return {k: _round(v) for k, v in w.items()}


def _keep(t, dt):
    """float64 stays until the end (the goldens' rounding); float32 goes to float16 at once, so
    the real-size weights never sit in memory wider than the checkpoint."""
    return t if dt == torch.float64 else t.half()


def _round(t):
    return t.half().double() if t.dtype == torch.float64 else t


def make_vision_weights(vc, n_embd, seed, dt=torch.float64):
    """As make_weights, for the mmproj; keyed by llama.cpp's clip names."""
    g = torch.Generator().manual_seed(seed)
    Dv, Fv, p = vc["v_embd"], vc["v_ff"], vc["patch"]
    n_patch = (vc["image"] // p) ** 2
    w = {}

    def mat(name, n_out, n_in):
        w[name] = _keep(torch.randn(n_out, n_in, generator=g, dtype=dt) / n_in ** 0.5, dt)

    def vec(name, n, mean, std):
        w[name] = _keep(mean + std * torch.randn(n, generator=g, dtype=dt), dt)

    w["v.patch_embd.weight"] = _keep(torch.randn(Dv, 3, p, p, generator=g, dtype=dt) /
                                     (3 * p * p) ** 0.5, dt)
    vec("v.patch_embd.bias", Dv, 0.0, 0.1)
    w["v.position_embd.weight"] = _keep(torch.randn(n_patch, Dv, generator=g, dtype=dt), dt)
    for l in range(vc["v_layer"]):
        b = "v.blk.%d." % l
        for ln in ("ln1", "ln2"):
            vec(b + ln + ".weight", Dv, 1.0, 0.1)
            vec(b + ln + ".bias", Dv, 0.0, 0.1)
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            mat(b + name + ".weight", Dv, Dv)
            vec(b + name + ".bias", Dv, 0.0, 0.1)
        mat(b + "ffn_up.weight", Fv, Dv)
        vec(b + "ffn_up.bias", Fv, 0.0, 0.1)
        mat(b + "ffn_down.weight", Dv, Fv)
        vec(b + "ffn_down.bias", Dv, 0.0, 0.1)
    vec("v.post_ln.weight", Dv, 1.0, 0.1)
    vec("v.post_ln.bias", Dv, 0.0, 0.1)
    mat("mm.0.weight", vc["proj_ff"], Dv)
    vec("mm.0.bias", vc["proj_ff"], 0.0, 0.1)
    mat("mm.2.weight", n_embd, vc["proj_ff"])
    vec("mm.2.bias", n_embd, 0.0, 0.1)
    return {k: _round(v) for k, v in w.items()}


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def gelu_tanh(z):
    return 0.5 * z * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


def rotate(x, pos, r, theta):
    """x: [T, H, d]. The first r dims of each head turn as two halves."""
    i = torch.arange(r // 2, dtype=torch.float64)
    ang = pos[:, None].double() * theta ** (-2.0 * i / r)  # [T, r/2]
    cos = torch.cos(ang)[:, None, :].to(x.dtype)
    sin = torch.sin(ang)[:, None, :].to(x.dtype)
    u, w, rest = x[..., : r // 2], x[..., r // 2: r], x[..., r:]
    return torch.cat([u * cos - w * sin, w * cos + u * sin, rest], dim=-1)


def image_rows(vw, vc, pixels):
    """pixels [3, S, S] (normalised) -> one embedding row per patch, [P, n_embd]."""
    p, Dv, H = vc["patch"], vc["v_embd"], vc["v_head"]
    x = torch.nn.functional.conv2d(pixels[None], vw["v.patch_embd.weight"],
                                   vw["v.patch_embd.bias"], stride=p)[0]  # [Dv, S/p, S/p]
    x = x.flatten(1).T + vw["v.position_embd.weight"]  # [P, Dv], patches row-major
    P, d = x.shape[0], Dv // H
    for l in range(vc["v_layer"]):
        b = "v.blk.%d." % l

        def lin(name, t):
            return t @ vw[b + name + ".weight"].T + vw[b + name + ".bias"]

        h = layer_norm(x, vw[b + "ln1.weight"], vw[b + "ln1.bias"], vc["eps"])
        q, k, v = (lin(n, h).reshape(P, H, d) for n in ("attn_q", "attn_k", "attn_v"))
        s = torch.einsum("thd,uhd->htu", q, k) / math.sqrt(d)
        a = torch.einsum("htu,uhd->thd", torch.softmax(s, dim=-1), v).reshape(P, Dv)
        x = x + lin("attn_out", a)
        h = layer_norm(x, vw[b + "ln2.weight"], vw[b + "ln2.bias"], vc["eps"])
        x = x + lin("ffn_down", gelu_tanh(lin("ffn_up", h)))
    f = layer_norm(x, vw["v.post_ln.weight"], vw["v.post_ln.bias"], vc["eps"])
    f = gelu_tanh(f @ vw["mm.0.weight"].T + vw["mm.0.bias"])
    return f @ vw["mm.2.weight"].T + vw["mm.2.bias"]


def forward(w, cfg, ids, rows=None):
    """Logits [T, V] of every position of ids; rows (if given) replace the embeddings at the
    prompt's IMAGE_ID positions, in order."""
    x = embed(w, ids)
    if rows is not None:
        at = [i for i, t in enumerate(ids) if t == IMAGE_ID][: rows.shape[0]]
        x[at] = rows
    return decode(w, cfg, x, [], 0)


def embed(w, ids):
    """The token embeddings of ids, [T, D] (a Checkpoint's weights read only those rows)."""
    if isinstance(w, LazyWeights):
        return w.rows("token_embd.weight", ids)
    return w["token_embd.weight"][torch.tensor(ids)].clone()


def decode(w, cfg, x, kv, pos0):
    """Logits [T, V] of the rows x [T, D] at positions pos0.., after the pos0 positions whose
    keys and values kv holds (per layer (K, V), each [pos0, H, d]; extended in place)."""
    T, D, H = x.shape[0], cfg["n_embd"], cfg["n_head"]
    d = D // H
    pos = torch.arange(pos0, pos0 + T)
    mask = torch.full((T, pos0 + T), float("-inf"), dtype=x.dtype).triu(pos0 + 1)
    for l in range(cfg["n_layer"]):
        p = "blk.%d." % l
        h = layer_norm(x, w[p + "attn_norm.weight"], w[p + "attn_norm.bias"], cfg["eps"])
        qkv = h @ w[p + "attn_qkv.weight"].T + w[p + "attn_qkv.bias"]
        q, k, v = (t.reshape(T, H, d) for t in qkv.split(D, dim=-1))
        q = rotate(q, pos, cfg["n_rot"], cfg["theta"])
        k = rotate(k, pos, cfg["n_rot"], cfg["theta"])
        if l < len(kv):
            k, v = torch.cat([kv[l][0], k]), torch.cat([kv[l][1], v])
            kv[l] = (k, v)
        else:
            kv.append((k, v))
        s = torch.einsum("thd,uhd->htu", q, k) / math.sqrt(d) + mask
        a = torch.einsum("htu,uhd->thd", torch.softmax(s, dim=-1), v).reshape(T, D)
        a = a @ w[p + "attn_output.weight"].T + w[p + "attn_output.bias"]
        m = gelu_tanh(h @ w[p + "ffn_up.weight"].T + w[p + "ffn_up.bias"])
        m = m @ w[p + "ffn_down.weight"].T + w[p + "ffn_down.bias"]
        x = x + a + m
    x = layer_norm(x, w["output_norm.weight"], w["output_norm.bias"], cfg["eps"])
    return x @ w["output.weight"].T + w["output.bias"]


def hf_layout(cfg, vc):
    """Where each GGUF-named weight sits in moondream2's checkpoint: {gguf: (name, i, n)}, the
    i-th of n equal row blocks of that tensor (n = 3 for the vision tower's fused qkv, else 1);
    the patch embedding is stored flat ([Dv, 3 p p]) and the position table as [1, P, Dv]."""
    T, V, P = "text_model.transformer.", "vision_encoder.encoder.model.visual.", \
        "vision_encoder.projection.mlp."
    m = {"token_embd.weight": (T + "embd.wte.weight", 0, 1)}
    kinds = ("weight", "bias")
    for l in range(cfg["n_layer"]):
        g, h = "blk.%d." % l, T + "h.%d." % l
        for gg, hh in (("attn_norm", "ln"), ("attn_qkv", "mixer.Wqkv"),
                       ("attn_output", "mixer.out_proj"), ("ffn_up", "mlp.fc1"),
                       ("ffn_down", "mlp.fc2")):
            for kind in kinds:
                m[g + gg + "." + kind] = (h + hh + "." + kind, 0, 1)
    for gg, hh in (("output_norm", "text_model.lm_head.ln"),
                   ("output", "text_model.lm_head.linear")):
        for kind in kinds:
            m[gg + "." + kind] = (hh + "." + kind, 0, 1)
    m["v.patch_embd.weight"] = (V + "patch_embed.linear.weight", 0, 1)
    m["v.patch_embd.bias"] = (V + "patch_embed.linear.bias", 0, 1)
    m["v.position_embd.weight"] = (V + "pos_embed", 0, 1)
    for l in range(vc["v_layer"]):
        g, h = "v.blk.%d." % l, V + "blocks.%d." % l
        for kind in kinds:
            for gg, hh in (("ln1", "norm1"), ("ln2", "norm2"), ("attn_out", "attn.proj"),
                           ("ffn_up", "mlp.fc1"), ("ffn_down", "mlp.fc2")):
                m[g + gg + "." + kind] = (h + hh + "." + kind, 0, 1)
            for i, gg in enumerate(("attn_q", "attn_k", "attn_v")):
                m[g + gg + "." + kind] = (h + "attn.qkv." + kind, i, 3)
    for kind in kinds:
        m["v.post_ln." + kind] = (V + "norm." + kind, 0, 1)
        m["mm.0." + kind] = (P + "fc1." + kind, 0, 1)
        m["mm.2." + kind] = (P + "fc2." + kind, 0, 1)
    return m


class Checkpoint:
    """A model.safetensors mapped read-only: a tensor's bytes are read when it is asked for, so
    memory holds the tensors in use rather than the file."""

    def __init__(self, path):
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            self.header = json.loads(f.read(n))
        self.base = 8 + n
        self.map = np.memmap(path, dtype=np.uint8, mode="r")

    def array(self, name):
        info = self.header[name]
        types = {"F16": np.float16, "F32": np.float32}
        if info["dtype"] not in types:
            raise SystemExit("%s: %s is %s (the reference reads F16 and F32)" %
                             (self.map.filename, name, info["dtype"]))
        dt = np.dtype(types[info["dtype"]]).newbyteorder("<")
        a, b = info["data_offsets"]
        return np.frombuffer(self.map, dtype=dt, count=(b - a) // dt.itemsize,
                             offset=self.base + a).reshape(info["shape"])


class LazyWeights:
    """The reference's weights by GGUF name, read from a Checkpoint and widened to dtype at
    each access (a forward pass holds one layer's weights at a time)."""

    def __init__(self, ck, layout, dtype, patch):
        self.ck, self.layout, self.np_type, self.patch = ck, layout, \
            {torch.float64: np.float64, torch.float32: np.float32}[dtype], patch

    def _block(self, name):
        hf, i, n = self.layout[name]
        a = self.ck.array(hf)
        rows = a.shape[0] // n
        return a[i * rows:(i + 1) * rows]

    def __getitem__(self, name):
        t = torch.from_numpy(self._block(name).astype(self.np_type))
        if name == "v.patch_embd.weight":
            return t.reshape(t.shape[0], 3, self.patch, self.patch)
        if name == "v.position_embd.weight":
            return t.reshape(-1, t.shape[-1])
        return t

    def rows(self, name, ids):
        return torch.from_numpy(self._block(name)[np.asarray(ids)].astype(self.np_type))


def save_moondream_hf(out_dir, w, vw, cfg, vc):
    """The weights under moondream2's checkpoint names (the GGUF names' sources in tern
    convert), F16, with config.json and the tokenizer."""
    os.makedirs(out_dir, exist_ok=True)
    parts = {}
    for g, (hf, i, n) in hf_layout(cfg, vc).items():
        t = w[g] if g in w else vw[g]
        if g == "v.patch_embd.weight":
            t = t.reshape(t.shape[0], -1)
        elif g == "v.position_embd.weight":
            t = t[None]
        parts.setdefault(hf, [None] * n)[i] = t
    sd = {hf: torch.cat(p) if len(p) > 1 else p[0] for hf, p in parts.items()}
    save_safetensors({k: v.half() for k, v in sd.items()},
                     os.path.join(out_dir, "model.safetensors"), {"format": "pt"})
    config = {"architectures": ["Moondream"], "model_type": "moondream1",
              "phi_config": {"model_type": "phi", "vocab_size": cfg["n_vocab"],
                             "hidden_size": cfg["n_embd"], "intermediate_size": cfg["n_ff"],
                             "num_hidden_layers": cfg["n_layer"],
                             "num_attention_heads": cfg["n_head"],
                             "max_position_embeddings": cfg["n_ctx"],
                             "layer_norm_eps": cfg["eps"], "rope_theta": cfg["theta"],
                             "partial_rotary_factor": cfg["n_rot"] / (cfg["n_embd"] //
                                                                      cfg["n_head"])},
              "torch_dtype": "float16"}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(make_tokenizer(), f, ensure_ascii=False, indent=1)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                   "tokenizer_class": "CodeGenTokenizer"}, f, indent=2)


def prompt_ids(n_vocab, n_image, n=27):
    """BOS (id 1 in the tests' vocabulary), the image's positions, then words."""
    g = np.random.default_rng(11)
    words = [int(t) for t in g.integers(2, IMAGE_ID, size=n)]
    return [1] + [IMAGE_ID] * n_image + words


def run_reference(w, cfg, ids, rows):
    with torch.no_grad():
        logits = forward(w, cfg, ids, rows)
        seq, greedy = list(ids), []
        for _ in range(N_GREEDY):
            # rows go to the first IMAGE_ID positions, all in the prompt: a generated IMAGE_ID
            # is an ordinary token, as in the engine
            nxt = forward(w, cfg, seq, rows)[-1]
            top2 = torch.topk(nxt, 2).values
            if float(top2[0] - top2[1]) < 1e-3:
                print("warning: near tie in greedy step %d" % len(greedy))
            greedy.append(int(nxt.argmax()))
            seq.append(greedy[-1])
    return logits.numpy(), greedy


def save_moondream2(out_dir):
    """A random-weight checkpoint at moondream2's real configuration (1.9 G parameters, 3.7 GB in
    F16) with the tests' small byte-level tokenizer: for tern convert / quantize / run / ternd at
    full size. Weights are drawn in float32 and kept as float16 (about 8 GB of memory at the
    peak, while the file is written)."""
    w = make_weights(MOONDREAM2, 5, torch.float32)
    vw = make_vision_weights(MOONDREAM2_VISION, MOONDREAM2["n_embd"], 6, torch.float32)
    save_moondream_hf(out_dir, w, vw, MOONDREAM2, MOONDREAM2_VISION)
    print("moondream2-shaped checkpoint in %s" % out_dir)


def picture_pixels(path, size):
    """moondream2's preprocessing: the picture (EXIF orientation applied, as tern's decoder
    does) squashed to size x size, bicubic, then scaled to [-1, 1] (mean = std = 0.5):
    [3, size, size] float64."""
    from PIL import Image, ImageOps
    im = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    a = np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.float64) / 255.0
    return torch.from_numpy(((a - 0.5) / 0.5).transpose(2, 0, 1).copy())


def reference_run(hf_dir, image, question, out, dtype):
    """The full-size check's golden: a checkpoint at moondream2's configuration (from `--config
    moondream2`, or any with its shapes) on one picture and question, in dtype on the
    checkpoint's float16 weights; written as OUT for tests/golden_check.c."""
    t_start = time.time()
    with open(os.path.join(hf_dir, "config.json")) as f:
        pc = json.load(f)["phi_config"]
    cfg, vc = MOONDREAM2, MOONDREAM2_VISION
    for key, want in (("vocab_size", cfg["n_vocab"]), ("hidden_size", cfg["n_embd"]),
                      ("num_hidden_layers", cfg["n_layer"]),
                      ("num_attention_heads", cfg["n_head"]),
                      ("intermediate_size", cfg["n_ff"])):
        if pc.get(key) != want:
            raise SystemExit("%s: phi_config.%s is %s, moondream2's is %s" %
                             (hf_dir, key, pc.get(key), want))
    ck = Checkpoint(os.path.join(hf_dir, "model.safetensors"))
    layout = hf_layout(cfg, vc)
    missing = sorted({hf for hf, _, _ in layout.values()} - set(ck.header))
    if missing:
        raise SystemExit("%s: no %s" % (hf_dir, ", ".join(missing[:3])))
    w = LazyWeights(ck, layout, dtype, vc["patch"])

    pixels = picture_pixels(image, vc["image"])
    with torch.no_grad():
        rows = image_rows(w, vc, pixels.to(dtype))
    t_vision = time.time()

    tk = Tokenizer.load(os.path.join(hf_dir, "tokenizer.json"))
    bos = tk.token_id("<|endoftext|>")
    image_id = tk.token_id("<image>")
    text = tk.encode("\n\nQuestion: %s\n\nAnswer:" % question)
    ids = [bos] + [image_id] * rows.shape[0] + text
    with torch.no_grad():
        x = embed(w, ids)
        x[1:1 + rows.shape[0]] = rows
        kv = []
        logits = decode(w, cfg, x, kv, 0)
        t_prompt = time.time()
        step, greedy, margin = logits[-1], [], float("inf")
        steps = []
        for k in range(N_GREEDY):
            steps.append(step.float().numpy())
            top2 = torch.topk(step, 2).values
            margin = min(margin, float(top2[0] - top2[1]))
            greedy.append(int(step.argmax()))
            if k + 1 < N_GREEDY:
                step = decode(w, cfg, embed(w, greedy[-1:]), kv, len(ids) + k)[-1]
    kvs = {"golden.image_token_id": image_id, "golden.n_prompt": len(ids),
           "golden.n_greedy": len(greedy), "golden.prompt": ids, "golden.greedy": greedy,
           "golden.image": os.path.abspath(image), "golden.question": question,
           "golden.dtype": str(dtype).replace("torch.", "")}
    write_gguf(out, kvs, [("logits", logits.float().numpy(), GGML_F32),
                          ("greedy_logits", np.stack(steps), GGML_F32),
                          ("pixels", pixels.float().numpy(), GGML_F32),
                          ("image_embd", rows.float().numpy(), GGML_F32)])
    print("reference (%s): %d prompt positions (%d image rows); greedy %s; smallest top-2 "
          "margin of a greedy step %.3g" % (kvs["golden.dtype"], len(ids), rows.shape[0],
                                           greedy, margin))
    print("time: vision %.1f s, prompt %.1f s, greedy %.1f s; peak RSS %d MB; wrote %s" %
          (t_vision - t_start, t_prompt - t_vision, time.time() - t_prompt,
           resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=("tiny", "moondream2"), default="tiny",
                    help="tiny: the goldens under tests/data/golden/ (default); moondream2: only "
                    "a random-weight checkpoint at the real shapes, in --out")
    ap.add_argument("--out", help="where --config moondream2 writes its checkpoint")
    ap.add_argument("--reference", metavar="HF_DIR",
                    help="instead: the reference run of a checkpoint at moondream2's real "
                    "configuration on --image and --question, written to --golden (the "
                    "full-size check, make moondream2-check)")
    ap.add_argument("--image", help="the picture of --reference")
    ap.add_argument("--question", default="What is in the picture?")
    ap.add_argument("--golden", help="the golden file --reference writes")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                    help="arithmetic of --reference (default float64)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for --reference")
    args = ap.parse_args()
    if args.reference:
        if not args.image or not args.golden:
            ap.error("--reference needs --image and --golden")
        torch.set_num_threads(args.threads)
        reference_run(args.reference, args.image, args.question, args.golden,
                      getattr(torch, args.dtype))
        return
    if args.config == "moondream2":
        if not args.out:
            ap.error("--config moondream2 needs --out DIR")
        save_moondream2(args.out)
        return
    os.makedirs(OUT, exist_ok=True)
    w = make_weights(TINY, 3)
    vw = make_vision_weights(TINY_VISION, TINY["n_embd"], 4)
    pixels = test_image(TINY_VISION["image"])[0]
    with torch.no_grad():
        rows = image_rows(vw, TINY_VISION, pixels)
    ids = prompt_ids(TINY["n_vocab"], rows.shape[0])
    logits, greedy = run_reference(w, TINY, ids, rows)
    save_moondream_hf(os.path.join(OUT, "phi-tiny-hf"), w, vw, TINY, TINY_VISION)
    kvs = {"golden.image_token_id": IMAGE_ID, "golden.n_prompt": len(ids),
           "golden.n_greedy": len(greedy), "golden.prompt": ids, "golden.greedy": greedy}
    write_gguf(os.path.join(OUT, "phi-tiny.golden.gguf"), kvs,
               [("logits", logits, GGML_F32), ("pixels", pixels.numpy(), GGML_F32),
                ("image_embd", rows.numpy(), GGML_F32)])
    print("phi-tiny: %d prompt tokens (%d image rows), greedy %s" %
          (len(ids), rows.shape[0], greedy))


if __name__ == "__main__":
    main()
