"""The Phi decoder (moondream2's text model, llama.cpp's "phi2") in PyTorch, written from its
equations, and golden outputs for tests/test_model.c.

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

It writes, under tests/data/golden/:

  phi-tiny.gguf         the model as llama.cpp's converter lays out moondream2's text GGUF
                        (general.architecture "phi2", q/k/v fused in blk.N.attn_qkv, biases,
                        F16 matrices and F32 vectors), random weights from a seed
  phi-tiny.golden.gguf  the reference run: prompt ids, the logits at every prompt position and a
                        32-token greedy continuation (the format of make_goldens.py's goldens)

The reference runs in float64 on the weights rounded to float16 (what the file stores), so the
engine's F32 path must agree to float32 rounding. Run from the repository root:
    python3 training/phi_reference.py
"""

import math
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_goldens import GGML_F16, GGML_F32, N_GREEDY, write_gguf  # noqa: E402

OUT = os.path.join("tests", "data", "golden")

# moondream2's text_config (Phi-1.5) is n_vocab 51200, n_embd 2048, 24 layers of 32 heads, n_ff
# 8192, n_rot 32 (partial_rotary_factor 0.5), eps 1e-5, theta 10000, 2048 positions (`tern mkmodel
# --like moondream2`). The tests use a tiny one with the same head size and rotary share, whose
# every matrix row is a multiple of 256, so every tensor type applies.
TINY = dict(n_vocab=320, n_embd=256, n_layer=2, n_head=4, n_ff=512, n_rot=32, eps=1e-5,
            theta=10000.0, n_ctx=128)


def make_weights(cfg, seed):
    """Unit-gain random weights (activations and logits O(1): near-uniform logits would make a
    weak test), rounded to float16, as float64 tensors keyed by GGUF name."""
    g = torch.Generator().manual_seed(seed)
    D, F, V = cfg["n_embd"], cfg["n_ff"], cfg["n_vocab"]
    w = {}

    def mat(name, n_out, n_in, gain=1.0):
        w[name] = torch.randn(n_out, n_in, generator=g, dtype=torch.float64) * gain / n_in ** 0.5

    def vec(name, n, mean, std):
        w[name] = mean + std * torch.randn(n, generator=g, dtype=torch.float64)

    w["token_embd.weight"] = torch.randn(V, D, generator=g, dtype=torch.float64)
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
    return {k: v.half().double() for k, v in w.items()}


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
    cos, sin = torch.cos(ang)[:, None, :], torch.sin(ang)[:, None, :]
    u, w, rest = x[..., : r // 2], x[..., r // 2: r], x[..., r:]
    return torch.cat([u * cos - w * sin, w * cos + u * sin, rest], dim=-1)


def forward(w, cfg, ids):
    """Logits [T, V] of every position of ids."""
    T, D, H = len(ids), cfg["n_embd"], cfg["n_head"]
    d = D // H
    pos = torch.arange(T)
    x = w["token_embd.weight"][torch.tensor(ids)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["n_layer"]):
        p = "blk.%d." % l
        h = layer_norm(x, w[p + "attn_norm.weight"], w[p + "attn_norm.bias"], cfg["eps"])
        qkv = h @ w[p + "attn_qkv.weight"].T + w[p + "attn_qkv.bias"]
        q, k, v = (t.reshape(T, H, d) for t in qkv.split(D, dim=-1))
        q = rotate(q, pos, cfg["n_rot"], cfg["theta"])
        k = rotate(k, pos, cfg["n_rot"], cfg["theta"])
        s = torch.einsum("thd,uhd->htu", q, k) / math.sqrt(d) + mask
        a = torch.einsum("htu,uhd->thd", torch.softmax(s, dim=-1), v).reshape(T, D)
        a = a @ w[p + "attn_output.weight"].T + w[p + "attn_output.bias"]
        m = gelu_tanh(h @ w[p + "ffn_up.weight"].T + w[p + "ffn_up.bias"])
        m = m @ w[p + "ffn_down.weight"].T + w[p + "ffn_down.bias"]
        x = x + a + m
    x = layer_norm(x, w["output_norm.weight"], w["output_norm.bias"], cfg["eps"])
    return x @ w["output.weight"].T + w["output.bias"]


def model_gguf(path, w, cfg):
    D = cfg["n_embd"]
    kvs = {"general.architecture": "phi2", "general.name": "phi-tiny (tern golden)",
           "phi2.context_length": cfg["n_ctx"], "phi2.embedding_length": D,
           "phi2.feed_forward_length": cfg["n_ff"], "phi2.block_count": cfg["n_layer"],
           "phi2.attention.head_count": cfg["n_head"],
           "phi2.attention.head_count_kv": cfg["n_head"],
           "phi2.attention.layer_norm_epsilon": cfg["eps"],
           "phi2.rope.dimension_count": cfg["n_rot"]}
    ts = [(k, v.numpy(), GGML_F16 if v.ndim == 2 else GGML_F32) for k, v in w.items()]
    write_gguf(path, kvs, ts)


def prompt_ids(n_vocab, n=28):
    g = np.random.default_rng(11)
    return [int(t) for t in g.integers(1, n_vocab, size=n)]


def run_reference(w, cfg, ids):
    with torch.no_grad():
        logits = forward(w, cfg, ids)
        seq, greedy = list(ids), []
        for _ in range(N_GREEDY):
            nxt = forward(w, cfg, seq)[-1]
            top2 = torch.topk(nxt, 2).values
            if float(top2[0] - top2[1]) < 1e-3:
                print("warning: near tie in greedy step %d" % len(greedy))
            greedy.append(int(nxt.argmax()))
            seq.append(greedy[-1])
    return logits.numpy(), greedy


def main():
    os.makedirs(OUT, exist_ok=True)
    w = make_weights(TINY, 3)
    ids = prompt_ids(TINY["n_vocab"])
    logits, greedy = run_reference(w, TINY, ids)
    model_gguf(os.path.join(OUT, "phi-tiny.gguf"), w, TINY)
    kvs = {"golden.image_token_id": -1, "golden.n_prompt": len(ids),
           "golden.n_greedy": len(greedy), "golden.prompt": ids, "golden.greedy": greedy}
    write_gguf(os.path.join(OUT, "phi-tiny.golden.gguf"), kvs, [("logits", logits, GGML_F32)])
    print("phi-tiny: %d prompt tokens, greedy %s" % (len(ids), greedy))


if __name__ == "__main__":
    main()
