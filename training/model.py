"""A miniature SmolVLM (Hugging Face "Idefics3") in plain PyTorch.

Same architecture and the same parameter names as transformers' Idefics3ForConditionalGeneration,
so one code path trains the demo model and loads a real SmolVLM checkpoint:

  vision  SigLIP-style encoder: Conv2d patch embedding + learned position embedding, pre-LN
          blocks (LayerNorm with bias, multi-head attention with biases, tanh-GELU MLP),
          post_layernorm.
  connector  Idefics3 pixel shuffle (scale_factor) then one linear layer without bias.
  text    Llama decoder: RMSNorm, RoPE (HF rotate_half convention, rope_theta from the config),
          grouped-query attention, SwiGLU MLP, final norm, lm_head (tied to the token
          embeddings when the config says tie_word_embeddings, as SmolVLM's is).

Image features replace the `<image>` tokens of the prompt in order (Idefics3's inputs_merger).

Files: save_hf()/load_hf() write and read an HF-style directory (config.json, model.safetensors
or sharded model-*.safetensors with model.safetensors.index.json, preprocessor_config.json,
processor_config.json, chat_template.json, tokenizer.json). The image processor's settings
(longest edge, tile size, splitting) travel with the model as `model.processor`, and
preprocess_tiles()/image_block() reproduce Idefics3's image splitting and prompt. The
safetensors format is written by hand (no PyPI here): u64 little-endian header length, a JSON
header {name: {dtype, shape, data_offsets}}, then the raw little-endian tensor bytes.

Every nn.Linear is a QLinear: a plain linear layer unless `quant` is set, in which case the
forward pass uses a quantized copy of the weight (ternarize.py uses this for the straight-through
estimator). Parameter names are unchanged either way.
"""

import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

# ---------------------------------------------------------------------------------------------
# Config

VISION_DEFAULTS = dict(hidden_size=1152, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=16, num_channels=3, image_size=224, patch_size=32,
                       layer_norm_eps=1e-6, hidden_act="gelu_pytorch_tanh")
TEXT_DEFAULTS = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=None, rms_norm_eps=1e-6,
                     rope_theta=10000.0, vocab_size=32000, max_position_embeddings=2048,
                     hidden_act="silu", head_dim=None)


def demo_config(vocab_size, image_token_id, **over):
    """The demo model's Idefics3 config dict. Every matrix input dimension is a multiple of 256
    so ternary TQ2_0 blocks (256 weights) apply to all of them."""
    cfg = {
        "architectures": ["Idefics3ForConditionalGeneration"],
        "model_type": "idefics3",
        "scale_factor": 2,
        "image_token_id": image_token_id,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "vision_config": {
            "model_type": "idefics3_vision",
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_channels": 3,
            "image_size": 96,
            "patch_size": 16,
            "layer_norm_eps": 1e-6,
            "hidden_act": "gelu_pytorch_tanh",
        },
        "text_config": {
            "model_type": "llama",
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 3,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "vocab_size": vocab_size,
            "max_position_embeddings": 256,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
        },
    }
    for k, v in over.items():
        if k in ("vision_config", "text_config"):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


def tied(cfg):
    """Whether lm_head shares the token embedding matrix (SmolVLM: yes, the demo: no). HF reads
    the top-level key; a text_config one is honoured when the top level says nothing."""
    if "tie_word_embeddings" in cfg:
        return bool(cfg["tie_word_embeddings"])
    return bool(cfg.get("text_config", {}).get("tie_word_embeddings", False))


def _filled(cfg):
    """Config with HF defaults filled in (real checkpoints leave many fields out)."""
    v = dict(VISION_DEFAULTS)
    v.update(cfg.get("vision_config", {}))
    t = dict(TEXT_DEFAULTS)
    t.update(cfg.get("text_config", {}))
    if t.get("num_key_value_heads") is None:
        t["num_key_value_heads"] = t["num_attention_heads"]
    if t.get("head_dim") is None:
        t["head_dim"] = t["hidden_size"] // t["num_attention_heads"]
    return v, t


# ---------------------------------------------------------------------------------------------
# Layers


class QLinear(nn.Linear):
    """nn.Linear whose forward may use a quantized weight (set `quant` to a function W -> W_q).
    Gradients reach the latent float weight through the quantizer's straight-through estimator."""

    quant = None

    def forward(self, x):
        w = self.weight if self.quant is None else self.quant(self.weight)
        return F.linear(x, w, self.bias)


class VisionEmbeddings(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.patch_size = v["patch_size"]
        self.patch_embedding = nn.Conv2d(v["num_channels"], v["hidden_size"],
                                         kernel_size=self.patch_size, stride=self.patch_size)
        self.num_patches_per_side = v["image_size"] // v["patch_size"]
        self.position_embedding = nn.Embedding(self.num_patches_per_side ** 2, v["hidden_size"])

    def forward(self, pixel_values):
        x = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, patches, D)
        # Full (unpadded) images only: position ids are 0..patches-1 in row-major order, which is
        # what Idefics3's bucketized ids reduce to when the image fills the whole square.
        return x + self.position_embedding.weight[: x.shape[1]]


class VisionAttention(nn.Module):
    def __init__(self, v):
        super().__init__()
        d = v["hidden_size"]
        self.heads = v["num_attention_heads"]
        self.head_dim = d // self.heads
        self.q_proj = QLinear(d, d)
        self.k_proj = QLinear(d, d)
        self.v_proj = QLinear(d, d)
        self.out_proj = QLinear(d, d)

    def forward(self, x):
        b, n, d = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        a = torch.softmax((q @ k.transpose(2, 3)) / math.sqrt(self.head_dim), dim=-1)
        return self.out_proj((a @ v).transpose(1, 2).reshape(b, n, d))


class VisionMLP(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.fc1 = QLinear(v["hidden_size"], v["intermediate_size"])
        self.fc2 = QLinear(v["intermediate_size"], v["hidden_size"])

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class VisionLayer(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.self_attn = VisionAttention(v)
        self.layer_norm1 = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])
        self.mlp = VisionMLP(v)
        self.layer_norm2 = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.layers = nn.ModuleList([VisionLayer(v) for _ in range(v["num_hidden_layers"])])
        self.checkpointing = False


class VisionModel(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.embeddings = VisionEmbeddings(v)
        self.encoder = VisionEncoder(v)
        self.post_layernorm = nn.LayerNorm(v["hidden_size"], eps=v["layer_norm_eps"])

    def forward(self, pixel_values):
        x = self.embeddings(pixel_values)
        for layer in self.encoder.layers:
            if self.encoder.checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(layer, x, use_reentrant=False)
            else:
                x = layer(x)
        return self.post_layernorm(x)


def pixel_shuffle(x, s):
    """Idefics3's pixel shuffle: (B, H*W, D) -> (B, H*W/s^2, D*s^2), with its exact element order
    (each output vector concatenates an s x s block of patches, column-pairs first)."""
    b, n, d = x.shape
    h = w = int(round(math.sqrt(n)))
    x = x.view(b, h, w // s, d * s)
    x = x.permute(0, 2, 1, 3)
    x = x.reshape(b, w // s, h // s, d * s * s)
    x = x.permute(0, 2, 1, 3)
    return x.reshape(b, n // (s * s), d * s * s)


class ModalityProjection(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.proj = QLinear(n_in, n_out, bias=False)


class Connector(nn.Module):
    def __init__(self, v, t, scale_factor):
        super().__init__()
        self.scale_factor = scale_factor
        self.modality_projection = ModalityProjection(v["hidden_size"] * scale_factor ** 2,
                                                      t["hidden_size"])

    def forward(self, x):
        return self.modality_projection.proj(pixel_shuffle(x, self.scale_factor))


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class TextAttention(nn.Module):
    def __init__(self, t):
        super().__init__()
        d, hd = t["hidden_size"], t["head_dim"]
        self.heads, self.kv_heads, self.head_dim = (t["num_attention_heads"],
                                                    t["num_key_value_heads"], hd)
        self.q_proj = QLinear(d, self.heads * hd, bias=False)
        self.k_proj = QLinear(d, self.kv_heads * hd, bias=False)
        self.v_proj = QLinear(d, self.kv_heads * hd, bias=False)
        self.o_proj = QLinear(self.heads * hd, d, bias=False)
        self.keep_attn = False

    def forward(self, x, cos, sin, mask):
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.heads // self.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(2, 3)) / math.sqrt(self.head_dim) + mask
        a = torch.softmax(s, dim=-1)
        if self.keep_attn:  # training aid: train.py --attn-sup reads the weights
            self.last_attn = a
        return self.o_proj((a @ v).transpose(1, 2).reshape(b, n, self.heads * self.head_dim))


class TextMLP(nn.Module):
    def __init__(self, t):
        super().__init__()
        d, f = t["hidden_size"], t["intermediate_size"]
        self.gate_proj = QLinear(d, f, bias=False)
        self.up_proj = QLinear(d, f, bias=False)
        self.down_proj = QLinear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class TextLayer(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.self_attn = TextAttention(t)
        self.mlp = TextMLP(t)
        self.input_layernorm = RMSNorm(t["hidden_size"], t["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(t["hidden_size"], t["rms_norm_eps"])

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class TextModel(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.embed_tokens = nn.Embedding(t["vocab_size"], t["hidden_size"])
        self.layers = nn.ModuleList([TextLayer(t) for _ in range(t["num_hidden_layers"])])
        self.norm = RMSNorm(t["hidden_size"], t["rms_norm_eps"])
        hd = t["head_dim"]
        inv = 1.0 / (t["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        self.register_buffer("inv_freq", inv.float(), persistent=False)
        self.checkpointing = False  # recompute each layer in backward: memory for time

    def forward(self, h):
        n = h.shape[1]
        pos = torch.arange(n, dtype=torch.float32, device=h.device)
        f = torch.outer(pos, self.inv_freq)
        emb = torch.cat((f, f), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        mask = torch.full((n, n), float("-inf"), device=h.device).triu(1)
        for layer in self.layers:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(layer, h, cos, sin, mask,
                                                      use_reentrant=False)
            else:
                h = layer(h, cos, sin, mask)
        return self.norm(h)


class Idefics3Inner(nn.Module):
    def __init__(self, v, t, scale_factor):
        super().__init__()
        self.vision_model = VisionModel(v)
        self.connector = Connector(v, t, scale_factor)
        self.text_model = TextModel(t)


class Idefics3(nn.Module):
    """forward(input_ids (B,T) long, pixel_values (B,3,H,W) float or None) -> logits (B,T,V).
    Sequences are right-padded: causal attention means padding never affects earlier tokens."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        v, t = _filled(config)
        self.vcfg, self.tcfg = v, t
        self.image_token_id = config["image_token_id"]
        self.model = Idefics3Inner(v, t, config.get("scale_factor", 2))
        self.lm_head = QLinear(t["hidden_size"], t["vocab_size"], bias=False)
        if tied(config):
            self.lm_head.weight = self.model.text_model.embed_tokens.weight
        self.processor = processor_settings(config)

    def set_checkpointing(self, on):
        """Gradient checkpointing of every decoder and vision layer (training only)."""
        self.model.text_model.checkpointing = on
        self.model.vision_model.encoder.checkpointing = on

    def image_features(self, pixel_values):
        """(B,3,H,W) -> (B, image_seq_len, text_hidden): what replaces the <image> tokens."""
        return self.model.connector(self.model.vision_model(pixel_values))

    def forward(self, input_ids, pixel_values=None, image_feats=None):
        h = self.model.text_model.embed_tokens(input_ids)
        if image_feats is None and pixel_values is not None:
            image_feats = self.image_features(pixel_values)
        if image_feats is not None:
            sel = input_ids == self.image_token_id
            h = h.masked_scatter(sel[..., None], image_feats.to(h.dtype))
        return self.lm_head(self.model.text_model(h))


def build_model(config):
    """Model from an HF-style Idefics3 config dict, with the small-std init HF uses."""
    m = Idefics3(config)
    for mod in m.modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.normal_(mod.weight, std=0.02)
            if getattr(mod, "bias", None) is not None:
                nn.init.zeros_(mod.bias)
    return m


def num_params(model):
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------
# safetensors, by hand

_ST_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
              torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8"}
_NP_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I8": np.int8, "U8": np.uint8, "BF16": np.uint16, "F64": np.float64}


def save_safetensors(tensors, path, metadata=None):
    """tensors: {name: torch.Tensor}. Keys are written sorted, data 8-byte aligned header."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        arr = np.frombuffer(data, dtype=np.dtype(_NP_DTYPES[info["dtype"]]).newbyteorder("<"),
                            count=(b - a) // np.dtype(_NP_DTYPES[info["dtype"]]).itemsize,
                            offset=base + a)
        if info["dtype"] == "BF16":
            t = torch.from_numpy((arr.astype(np.uint32) << 16).view(np.float32).copy())
        else:
            t = torch.from_numpy(arr.copy())
        out[name] = t.reshape(info["shape"])
    return out


# ---------------------------------------------------------------------------------------------
# HF directory

PREPROCESSOR = {
    "image_processor_type": "Idefics3ImageProcessor",
    "do_convert_rgb": True,
    "do_resize": True,
    "resample": 1,  # PIL LANCZOS, as SmolVLM's processor uses
    "do_rescale": True,
    "rescale_factor": 1.0 / 255.0,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_image_splitting": False,
    "do_pad": True,
}

CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")


def image_seq_len(config):
    v, _ = _filled(config)
    return (v["image_size"] // v["patch_size"]) ** 2 // config.get("scale_factor", 2) ** 2


def processor_settings(config, pp=None):
    """The image processor's settings: tile = the encoder's image_size (max_image_size), the
    first resize's longest edge (size.longest_edge) and the normalisation, from a
    preprocessor_config.json dict when given. Splitting follows tern's engine: an image is cut
    into tiles whenever the longest edge is larger than a tile (src/engine/chat.c)."""
    v, _ = _filled(config)
    out = {"tile": v["image_size"], "longest_edge": v["image_size"],
           "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    if pp:
        out["longest_edge"] = int(pp.get("size", {}).get("longest_edge", out["longest_edge"]))
        out["mean"] = list(pp.get("image_mean", out["mean"]))
        out["std"] = list(pp.get("image_std", out["std"]))
    out["split"] = out["longest_edge"] > out["tile"]
    return out


def save_hf(model, out_dir, tokenizer_json=None, dtype=torch.float32, extra_config=None):
    """Write config.json, model.safetensors, preprocessor/processor configs, chat template and
    (if given, as a path or a dict) tokenizer.json. dtype applies to floating tensors. A tied
    lm_head is not written (HF layout: it is the token embedding matrix)."""
    os.makedirs(out_dir, exist_ok=True)
    cfg = dict(model.config)
    cfg["torch_dtype"] = {torch.float32: "float32", torch.float16: "float16",
                          torch.bfloat16: "bfloat16"}[dtype]
    if extra_config:
        cfg.update(extra_config)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    sd = {k: (v.to(dtype) if v.is_floating_point() else v)
          for k, v in model.state_dict().items()}
    if tied(model.config):
        del sd["lm_head.weight"]
    save_safetensors(sd, os.path.join(out_dir, "model.safetensors"), {"format": "pt"})
    pr = model.processor
    pp = dict(PREPROCESSOR, size={"longest_edge": pr["longest_edge"]},
              max_image_size={"longest_edge": pr["tile"]})
    if pr["split"]:
        pp["do_image_splitting"] = True
    if pr["mean"] != PREPROCESSOR["image_mean"] or pr["std"] != PREPROCESSOR["image_std"]:
        pp["image_mean"], pp["image_std"] = pr["mean"], pr["std"]
    with open(os.path.join(out_dir, "preprocessor_config.json"), "w") as f:
        json.dump(pp, f, indent=2)
    with open(os.path.join(out_dir, "processor_config.json"), "w") as f:
        json.dump({"processor_class": "Idefics3Processor",
                   "image_seq_len": image_seq_len(model.config)}, f, indent=2)
    with open(os.path.join(out_dir, "chat_template.json"), "w") as f:
        json.dump({"chat_template": CHAT_TEMPLATE}, f, indent=2)
    if tokenizer_json is not None:
        if isinstance(tokenizer_json, str):
            with open(tokenizer_json) as f:
                tokenizer_json = json.load(f)
        with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
            json.dump(tokenizer_json, f, ensure_ascii=False, indent=1)


def load_state(in_dir):
    """All tensors of an HF directory: model.safetensors, or the shards that
    model.safetensors.index.json lists."""
    single = os.path.join(in_dir, "model.safetensors")
    if os.path.exists(single):
        return load_safetensors(single)
    index = os.path.join(in_dir, "model.safetensors.index.json")
    if not os.path.exists(index):
        raise ValueError(f"{in_dir}: no model.safetensors nor model.safetensors.index.json")
    with open(index) as f:
        files = sorted(set(json.load(f)["weight_map"].values()))
    sd = {}
    for name in files:
        sd.update(load_safetensors(os.path.join(in_dir, name)))
    return sd


def load_hf(in_dir, dtype=torch.float32):
    """Model from an HF directory (ours or a real SmolVLM/Idefics3 one, one safetensors file or
    shards). A missing lm_head.weight means tied embeddings."""
    with open(os.path.join(in_dir, "config.json")) as f:
        cfg = json.load(f)
    sd = load_state(in_dir)
    if "lm_head.weight" not in sd and not tied(cfg):
        cfg = dict(cfg, tie_word_embeddings=True)
    model = Idefics3(cfg)
    if tied(cfg):
        sd.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()},
                                                strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and tied(cfg))]
    if missing or unexpected:
        raise ValueError(f"{in_dir}: missing tensors {missing}, unexpected {unexpected}")
    pp_path = os.path.join(in_dir, "preprocessor_config.json")
    if os.path.exists(pp_path):
        with open(pp_path) as f:
            model.processor = processor_settings(cfg, json.load(f))
    return model.to(dtype)


# ---------------------------------------------------------------------------------------------
# Image preprocessing (Idefics3 processor with do_image_splitting=False)


def engine_rgb(img):
    """data.to_rgb: EXIF orientation and alpha over white, as the C engine decodes pictures, so
    that a user's camera JPEGs and transparent PNGs train on the pixels ternd will see."""
    import data  # PIL and numpy only; training/ is on the path of every script here
    return data.to_rgb(img)


def preprocess(img, size):
    """PIL image -> (3,size,size) float tensor: RGB, resize with LANCZOS (the processor first
    scales the longest edge to `size`, then squares to max_image_size=`size`; for the square
    images used here both are one resize), rescale 1/255, normalize mean 0.5 std 0.5."""
    from PIL import Image
    img = engine_rgb(img)
    w, h = img.size
    if max(w, h) != size:
        if w >= h:
            img = img.resize((size, max(1, round(h * size / w))), Image.LANCZOS)
        else:
            img = img.resize((max(1, round(w * size / h)), size), Image.LANCZOS)
    if img.size != (size, size):
        img = img.resize((size, size), Image.LANCZOS)
    a = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
    return to_pixels(a)


def to_pixels(u8):
    """uint8 (...,H,W,3) -> float (...,3,H,W) normalized as the processor does."""
    x = u8.float() * (1.0 / 255.0)
    x = (x - 0.5) / 0.5
    return x.movedim(-1, -3).contiguous()


def _longest_edge_size(h0, w0, longest):
    """Idefics3's first resize (tern's image.c longest_edge_size): the longest edge becomes
    `longest`, the other keeps the aspect, rounded up to even; at most 4096."""
    aspect = w0 / h0
    if w0 >= h0:
        w = longest
        h = int(w / aspect)
        h += h % 2
    else:
        h = longest
        w = int(h * aspect)
        w += w % 2
    h, w = max(1, h), max(1, w)
    aspect = w / h
    if w >= h and w > 4096:
        w, h = 4096, int(4096 / aspect)
    elif h > w and h > 4096:
        h, w = 4096, int(4096 * aspect)
    return h, w


def _ceil_to(x, m):
    return (x + m - 1) // m * m


def preprocess_tiles(img, proc):
    """PIL image -> (rows, cols, (rows*cols+1, 3, T, T) float tensor) as tern's engine prepares
    it (src/engine/image.c): resize to the longest edge; without splitting one T x T image;
    with splitting, resize to multiples of T, crop rows x cols tiles, then the whole image
    resized to T x T as the global tile, last. Normalised with the processor's mean and std."""
    from PIL import Image
    img = engine_rgb(img)
    T = proc["tile"]
    h, w = _longest_edge_size(img.size[1], img.size[0], proc["longest_edge"])
    a = img.resize((w, h), Image.LANCZOS)
    rows = cols = 0
    tiles = []
    if proc["split"]:
        aspect = w / h
        if w >= h:
            W = _ceil_to(w, T)
            H = _ceil_to(int(W / aspect), T)
        else:
            H = _ceil_to(h, T)
            W = _ceil_to(int(H * aspect), T)
        H, W = max(H, T), max(W, T)
        b = a.resize((W, H), Image.LANCZOS)
        if H > T or W > T:
            rows, cols = H // T, W // T
        for r in range(rows):
            for c in range(cols):
                tiles.append(b.crop((c * T, r * T, c * T + T, r * T + T)))
        tiles.append(b.resize((T, T), Image.LANCZOS))
    else:
        tiles.append(a.resize((T, T), Image.LANCZOS))
    u8 = torch.from_numpy(np.stack([np.asarray(t, dtype=np.uint8) for t in tiles]))
    x = u8.float() * (1.0 / 255.0)
    mean = torch.tensor(proc["mean"]).view(1, 1, 1, 3)
    std = torch.tensor(proc["std"]).view(1, 1, 1, 3)
    return rows, cols, ((x - mean) / std).movedim(-1, -3).contiguous()


def image_block(rows, cols, n):
    """The prompt text of one image of rows x cols tiles plus the global tile, n <image> tokens
    each (SmolVLM's processor; tern's src/engine/prompt.c)."""
    s = ""
    for r in range(rows):
        for c in range(cols):
            s += f"<fake_token_around_image><row_{r + 1}_col_{c + 1}>" + "<image>" * n
        s += "\n"
    if rows:
        s += "\n"
    return s + "<fake_token_around_image><global-img>" + "<image>" * n + "<fake_token_around_image>"
