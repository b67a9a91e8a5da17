"""Ternarize anyone's SmolVLM/Idefics3 checkpoint: k-means initialisation + self-distillation.

  python3 ternarize.py --from HF_DIR --images DIR_OR_JSONL --out OUT [options]
  python3 distill.py   --from HF_DIR --images DIR_OR_JSONL --out OUT [options]   (the same)

The paper's process with no labels:

1. Load the Hugging Face checkpoint (config.json, model.safetensors or shards, tokenizer.json)
   into model.py at its real configuration, twice: the frozen float teacher and the student.
2. Initialise the student's ternary weights by the per-row k-means rule of `tern quantize`
   (ternarize.py's q_kmeans): every linear layer except those kept in float (--keep: by
   default the first and last decoder blocks; norms, embeddings, biases, the patch and
   position embeddings and lm_head are always float, as in `tern quantize`).
3. Prompts: each of the user's pictures with a question from a built-in set of generic ones
   (or --questions FILE, or the "prompt"/"question" of a JSONL line). The teacher answers
   greedily; its answer is the text and its logits at every answer position are the target,
   kept on disk under OUT/teacher/ (computed once, on first use). No labels anywhere.
4. Fine-tune the student (straight-through estimator on latent float weights, the scale
   recomputed by the k-means rule every step, as ternarize.py does) to minimise
   KL(teacher || student) over the answer tokens. Batch 1-2, optional gradient checkpointing;
   with --keep-vision the vision tower and connector stay float and frozen and their features
   are computed once per picture.
5. Export OUT/hf/ (f16; ternary layers hold exactly t * scale), then `tern convert` and
   `tern quantize` write OUT/NAME-TYPE.gguf + OUT/NAME-TYPE-mmproj.gguf for each --types entry
   (tq2_0 by default; tq1_0, q2_0; q1_0 with --mode binary), keeping the float layers float.

OUT/ckpt.pt (every --ckpt-every steps) makes a killed run resumable with --resume;
OUT/log.jsonl has one line per logged step (training KL, held-out KL); OUT/check.jsonl holds the
held-out prompts with the teacher's answers in `tern perplexity`'s format, to score the result.
"""

import argparse
import fnmatch
import glob
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
import ternarize as TZ  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402

QUESTIONS = [
    "Describe the image.",
    "What is in the picture?",
    "What do you see in this image?",
    "Describe this picture in detail.",
    "What is the main object in the image?",
    "What colours are in the image?",
    "How many objects are there?",
    "What is happening in this picture?",
    "Where could this picture have been taken?",
    "Is there a person in the image?",
    "What is on the left of the image?",
    "What is on the right of the image?",
    "What is in the background?",
    "Write a short caption for this image.",
    "What shapes can you see?",
    "What is the most noticeable thing in the picture?",
]

IMAGE_EXT = (".jpg", ".jpeg", ".png")


# ---------------------------------------------------------------------------------------------
# Inputs


def read_sources(path):
    """[(image path, [its own questions])] from a folder of JPEG/PNG files or a JSONL file whose
    lines have "image" (relative to the file) and optionally "prompt" or "question" (any
    "answer" is ignored: no labels are used)."""
    if os.path.isdir(path):
        files = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                       if f.lower().endswith(IMAGE_EXT))
        if not files:
            raise SystemExit(f"{path}: no .jpg/.jpeg/.png files")
        return [(f, []) for f in files]
    if not os.path.exists(path):
        raise SystemExit(f"{path}: no such file or folder")
    base, by_image = os.path.dirname(os.path.abspath(path)), {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                img = os.path.join(base, rec["image"])
            except (ValueError, KeyError, TypeError):
                raise SystemExit(f"{path}:{n}: not a JSON object with an \"image\" field")
            q = rec.get("prompt") or rec.get("question")
            qs = by_image.setdefault(img, [])
            if q and q not in qs:
                qs.append(q)
    if not by_image:
        raise SystemExit(f"{path}: no lines")
    return sorted(by_image.items())


def read_questions(path):
    if path is None:
        return list(QUESTIONS)
    if path == "none":  # only each JSONL line's own question
        return []
    with open(path) as f:
        qs = [q.strip() for q in f if q.strip()]
    if not qs:
        raise SystemExit(f"{path}: no questions")
    return qs


# ---------------------------------------------------------------------------------------------
# Which layers are ternary


def kept_names(model, keep, keep_vision):
    """Names of the QLinear modules that stay float. keep: words (first, last, vision,
    connector, none) or fnmatch globs over parameter-module names."""
    L = model.tcfg["num_hidden_layers"]
    globs = []
    for k in keep:
        if k == "none":
            continue
        elif k == "first":
            globs.append("model.text_model.layers.0.*")
        elif k == "last":
            globs.append(f"model.text_model.layers.{L - 1}.*")
        elif k == "vision":
            globs.append("model.vision_model.*")
        elif k == "connector":
            globs.append("model.connector.*")
        elif k in ("norms", "embeddings", "lm_head"):
            continue  # never ternary
        else:
            globs.append(k)
    if keep_vision:
        globs += ["model.vision_model.*", "model.connector.*"]
    out = set()
    for n, _ in TZ.quant_layers(model):
        if any(fnmatch.fnmatchcase(n, g) for g in globs):
            out.add(n)
    return out


def ternary_layers(model, kept):
    return [(n, m) for n, m in TZ.quant_layers(model) if n not in kept]


def gguf_name(hf):
    """GGUF tensor name (docs/model-format.md) of an HF linear module."""
    p = hf.split(".")
    if hf.startswith("model.text_model.layers."):
        sub = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
        return f"blk.{p[3]}.{sub['.'.join(p[4:])]}.weight"
    if hf.startswith("model.vision_model.encoder.layers."):
        sub = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.out_proj": "attn_out",
               "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down"}
        return f"v.blk.{p[4]}.{sub['.'.join(p[5:])]}.weight"
    if hf == "model.connector.modality_projection.proj":
        return "mm.model.fc.weight"
    raise ValueError(hf)


def keep_globs(model, kept):
    """`tern quantize --keep` patterns for the float layers: a whole block as blk.N.*, the
    whole vision tower as v.*, else one name per matrix."""
    by_block, out = {}, []
    for n, _ in TZ.quant_layers(model):
        g = gguf_name(n)
        key = ".".join(g.split(".")[:2]) if g.startswith("blk.") else g.split(".")[0]
        by_block.setdefault(key, []).append(n in kept)
    for key, flags in by_block.items():
        if all(flags):
            out.append(key + ".*")
        elif any(flags):
            out += [gguf_name(n) for n, _ in TZ.quant_layers(model)
                    if n in kept and gguf_name(n).startswith(key + ".")]
    return out


def cached_ste(fn):
    """ternarize.ste, with the quantized weight kept until the latent weight changes (the
    optimizer's in-place update bumps its version counter): k-means then runs once per step,
    not once per forward pass of every prompt of the batch and of the held-out set."""
    memo = {}

    def q(w):
        if memo.get("version") != w._version:
            with torch.no_grad():
                t, s = fn(w)
                memo["wq"], memo["version"] = t * s, w._version
        return w + (memo["wq"] - w).detach()
    return q


def set_student_quant(model, kept, mode):
    for n, m in TZ.quant_layers(model):
        m.quant = None if n in kept else cached_ste(TZ.QUANT[mode])


# ---------------------------------------------------------------------------------------------
# Forward passes


def hidden(model, ids, feats):
    """Final hidden states (B,T,D): the model without lm_head, so logits are computed only where
    they are needed (SmolVLM's vocabulary is 49280 wide)."""
    h = model.model.text_model.embed_tokens(ids)
    if feats is not None:
        sel = ids == model.image_token_id
        h = h.masked_scatter(sel[..., None], feats.to(h.dtype))
    return model.model.text_model(h)


def _cached_layers(tm, h, cache, pos0):
    """The decoder on new positions pos0.. with a key/value cache (greedy decoding)."""
    n = h.shape[1]
    pos = torch.arange(pos0, pos0 + n, dtype=torch.float32)
    f = torch.outer(pos, tm.inv_freq)
    emb = torch.cat((f, f), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    mask = torch.full((n, pos0 + n), float("-inf")).triu(pos0 + 1)
    for i, layer in enumerate(tm.layers):
        att = layer.self_attn
        x = layer.input_layernorm(h)
        q = att.q_proj(x).view(1, n, att.heads, att.head_dim).transpose(1, 2)
        k = att.k_proj(x).view(1, n, att.kv_heads, att.head_dim).transpose(1, 2)
        v = att.v_proj(x).view(1, n, att.kv_heads, att.head_dim).transpose(1, 2)
        q = q * cos + M.rotate_half(q) * sin
        k = k * cos + M.rotate_half(k) * sin
        if i < len(cache):
            k = torch.cat((cache[i][0], k), 2)
            v = torch.cat((cache[i][1], v), 2)
            cache[i] = (k, v)
        else:
            cache.append((k, v))
        rep = att.heads // att.kv_heads
        kk = k.repeat_interleave(rep, dim=1) if rep > 1 else k
        vv = v.repeat_interleave(rep, dim=1) if rep > 1 else v
        a = torch.softmax(q @ kk.transpose(2, 3) / math.sqrt(att.head_dim) + mask, dim=-1)
        h = h + att.o_proj((a @ vv).transpose(1, 2).reshape(1, n, att.heads * att.head_dim))
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return tm.norm(h)


@torch.no_grad()
def teacher_answer(teacher, prompt, feats, eou, max_new):
    """Greedy answer ids (ending with <end_of_utterance>, unless cut at max_new) and the
    teacher's logits (len(answer), V) at the positions that predict them."""
    tm = teacher.model.text_model
    ids = torch.tensor([prompt])
    h = tm.embed_tokens(ids)
    if feats is not None:
        h = h.masked_scatter((ids == teacher.image_token_id)[..., None], feats)
    cache = []
    out = _cached_layers(tm, h, cache, 0)[:, -1:]
    answer, logits, pos = [], [], len(prompt)
    for _ in range(max_new):
        lg = teacher.lm_head(out)[0, 0]
        t = int(lg.argmax())
        answer.append(t)
        logits.append(lg)
        if t == eou:
            break
        out = _cached_layers(tm, tm.embed_tokens(torch.tensor([[t]])), cache, pos)
        pos += 1
    return answer, torch.stack(logits)


def kl_loss(student, ids, feats, n_prompt, t_logits, temp):
    """Mean over answer positions of KL(teacher || student) at temperature temp."""
    h = hidden(student, ids, feats)
    n = t_logits.shape[0]
    s_logits = student.lm_head(h[0, n_prompt - 1:n_prompt - 1 + n])
    lp_t = F.log_softmax(t_logits.float() / temp, -1)
    lp_s = F.log_softmax(s_logits / temp, -1)
    return (lp_t.exp() * (lp_t - lp_s)).sum(-1).mean() * temp * temp


# ---------------------------------------------------------------------------------------------
# Prompts, answers and features, cached


class Pairs:
    """(picture, question) pairs; the teacher's answer ids and logits per pair are computed on
    first use and kept in OUT/teacher/ (f16 logits), so a resumed run never recomputes them."""

    def __init__(self, a, teacher, student_vision, tok, sources, questions):
        self.a, self.teacher, self.tok = a, teacher, tok
        self.student_vision = student_vision  # False: features shared, computed once
        self.proc = dict(teacher.processor)
        if a.longest_edge:
            self.proc["longest_edge"] = a.longest_edge
            self.proc["split"] = a.longest_edge > self.proc["tile"]
        self.n_img = M.image_seq_len(teacher.config)
        self.sources = sources
        self.pairs = [(i, q) for i, (_, own) in enumerate(sources) for q in own + questions]
        if not self.pairs:
            raise SystemExit(f"{a.images}: no questions (--questions none needs a JSONL with "
                             "\"prompt\" lines)")
        self.dir = os.path.join(a.out, "teacher")
        os.makedirs(self.dir, exist_ok=True)
        self.eou = tok.token_id("<end_of_utterance>")
        self.feat_cache = {}
        self.teacher_s = 0.0  # seconds spent on teacher answers and features

    def pixels(self, i):
        from PIL import Image
        path = self.sources[i][0]
        try:
            with Image.open(path) as im:
                rows, cols, px = M.preprocess_tiles(im, self.proc)
        except OSError as e:
            raise SystemExit(f"{path}: cannot read the picture ({e})")
        return rows, cols, px

    def prompt(self, rows, cols, q):
        text = ("<|im_start|>User:" + M.image_block(rows, cols, self.n_img) + q +
                "<end_of_utterance>\nAssistant:")
        return self.tok.encode(text)

    @torch.no_grad()
    def teacher_feats(self, px):
        return self.teacher.image_features(px).reshape(-1, self.teacher.tcfg["hidden_size"])

    def get(self, k):
        """-> dict(ids, n_prompt, logits, px, feats (teacher's; None if the student has its own
        vision), question, answer)."""
        i, q = self.pairs[k]
        rows, cols, px = self.pixels(i)
        prompt = self.prompt(rows, cols, q)
        path = os.path.join(self.dir, f"{k:06d}.pt")
        feats = None
        if not self.student_vision:
            if i not in self.feat_cache:
                if len(self.feat_cache) >= self.a.feature_cache:
                    self.feat_cache.pop(next(iter(self.feat_cache)))
                t0 = time.time()
                self.feat_cache[i] = self.teacher_feats(px)
                self.teacher_s += time.time() - t0
            feats = self.feat_cache[i]
        # The cache is indexed by pair number; the key says which picture, question and answer
        # length a record was made for, so a changed --questions or picture set recomputes it
        # (records written before the key existed are trusted).
        key = [os.path.abspath(self.sources[i][0]), q, self.a.max_new]
        rec = torch.load(path) if os.path.exists(path) else None
        if rec is None or rec.get("key", key) != key:
            t0 = time.time()
            tf = feats if feats is not None else self.teacher_feats(px)
            ans, lg = teacher_answer(self.teacher, prompt, tf, self.eou, self.a.max_new)
            self.teacher_s += time.time() - t0
            rec = {"answer": ans, "logits": lg.half(), "key": key}
            torch.save(rec, path + ".tmp")
            os.replace(path + ".tmp", path)
        ids = torch.tensor([prompt + rec["answer"]])
        return {"ids": ids, "n_prompt": len(prompt), "logits": rec["logits"], "px": px,
                "feats": feats, "question": q, "answer": rec["answer"], "image": i}

    def answer_text(self, ids):
        """Decoded answer without the closing token (ids outside the tokenizer: skipped)."""
        return self.tok.decode([t for t in ids if t != self.eou and int(t) in self.tok.id_to_tok],
                               skip_special=True).strip()


def pair_loss(student, rec, temp, student_vision):
    feats = rec["feats"]
    if student_vision:
        feats = student.image_features(rec["px"]).reshape(-1, student.tcfg["hidden_size"])
    return kl_loss(student, rec["ids"], feats, rec["n_prompt"], rec["logits"], temp)


@torch.no_grad()
def held_out_kl(student, pairs, val, temp, student_vision):
    student.eval()
    total = sum(float(pair_loss(student, pairs.get(k), temp, student_vision)) for k in val)
    student.train()
    return total / len(val)


# ---------------------------------------------------------------------------------------------
# Export


def export(student, kept, mode, proc, tok_path, out_dir):
    """OUT/hf: the student with every ternary layer replaced by exactly t * scale, in f16 (exact:
    scale is an f16 value). The image processor settings are those it was fine-tuned with
    (the checkpoint's unless --longest-edge changed them)."""
    q = M.Idefics3(student.config)
    sd = {k: v.detach().clone() for k, v in student.state_dict().items()}
    for n, m in ternary_layers(student, kept):
        t, s = TZ.QUANT[mode](m.weight.detach().float())
        sd[n + ".weight"] = t * s
    q.load_state_dict(sd)
    q.processor = dict(proc)
    names = sorted(kept)
    M.save_hf(q, out_dir, tok_path, dtype=torch.float16,
              extra_config={"quantization": {
                  "method": mode, "per": "row", "process": "self-distillation",
                  "float_layers": names,
                  "excluded": "embeddings, norms, biases, patch embedding, lm_head"}})
    for extra in ("tokenizer_config.json", "generation_config.json"):
        src = os.path.join(os.path.dirname(tok_path), extra)
        if os.path.exists(src):
            shutil.copy(src, out_dir)
    return q


def find_tern(arg):
    if arg:
        return arg
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for c in (os.path.join(here, "build", "src", "cli", "tern"), shutil.which("tern")):
        if c and os.path.exists(c):
            return c
    return None


def make_gguf(tern, hf_dir, out, name, types, keep):
    """tern convert (f16) then tern quantize per type; returns the written pairs."""
    base = os.path.join(out, name)
    subprocess.run([tern, "convert", hf_dir, base + "-f16"], check=True)
    written = []
    for ty in types:
        extra = []
        for g in keep:
            extra += ["--keep", g]
        for suffix in ("", "-mmproj"):
            src = f"{base}-f16{suffix}.gguf"
            if not os.path.exists(src):
                continue
            subprocess.run([tern, "quantize", src, f"{base}-{ty}{suffix}.gguf", "--type", ty] +
                           extra, check=True)
        written.append((f"{base}-{ty}.gguf", f"{base}-{ty}-mmproj.gguf"))
    return written


# ---------------------------------------------------------------------------------------------


def progress(step, total, kl, sps):
    width = 30
    fill = step * width // max(1, total)
    eta = sps * (total - step)
    sys.stderr.write(f"\rdistill [{'#' * fill}{'.' * (width - fill)}] {step}/{total}  "
                     f"kl {kl:.4f}  {sps:.2f} s/step  eta {int(eta) // 60}m{int(eta) % 60:02d}s ")
    sys.stderr.flush()


def peak_rss_mib():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def log(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def parser():
    ap = argparse.ArgumentParser(
        prog="ternarize.py",
        description="k-means ternarization + self-distillation of a Hugging Face "
                    "SmolVLM/Idefics3 checkpoint on your own pictures, no labels needed; "
                    "writes OUT/hf and the GGUF pair for tern.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--from", dest="src", required=True, metavar="HF_DIR",
                    help="checkpoint folder: config.json, model.safetensors (or shards with "
                         "model.safetensors.index.json), tokenizer.json")
    ap.add_argument("--images", required=True, metavar="DIR_OR_JSONL",
                    help="a folder of JPEG/PNG pictures, or a JSONL file with \"image\" paths "
                         "(and optional \"prompt\" questions; answers are ignored)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    ap.add_argument("--batch", type=int, default=1, help="prompts per step (1-2 on a CPU)")
    ap.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (AdamW)")
    ap.add_argument("--warmup", type=int, default=10, help="linear warm-up steps")
    ap.add_argument("--mode", choices=["kmeans", "absmean", "binary"], default="kmeans",
                    help="quantizer and initialisation: the paper's per-row k-means; absmean "
                         "(BitNet, per tensor) for comparison; binary for Q1_0")
    ap.add_argument("--keep", default="first,last",
                    help="linear layers kept in float, comma-separated: first, last (decoder "
                         "blocks), vision, connector, none, or globs over module names such as "
                         "'model.text_model.layers.1[0-5].*'; norms, embeddings, biases and "
                         "lm_head are always float")
    ap.add_argument("--keep-vision", action="store_true",
                    help="keep the vision tower and connector float and frozen (their features "
                         "are then computed once per picture: much faster)")
    ap.add_argument("--questions", metavar="FILE",
                    help="one question per line instead of the built-in generic set, asked of every "
                    "picture; 'none': only the JSONL's own questions")
    ap.add_argument("--max-new", type=int, default=48,
                    help="longest teacher answer, in tokens")
    ap.add_argument("--temperature", type=float, default=1.0, help="KL temperature")
    ap.add_argument("--val", type=int, default=4,
                    help="held-out prompts for the held-out KL (also written to OUT/check.jsonl)")
    ap.add_argument("--longest-edge", type=int, default=0,
                    help="resize pictures so their longest edge is this (0: the checkpoint's "
                         "preprocessor setting). Set it to the tile size (512 for SmolVLM) to "
                         "train on the global tile only: one tile instead of up to 17. The "
                         "exported preprocessor_config.json records the value trained with")
    ap.add_argument("--grad-ckpt", action="store_true",
                    help="gradient checkpointing: recompute each layer in the backward pass")
    ap.add_argument("--feature-cache", type=int, default=256,
                    help="pictures whose frozen vision features stay in memory (--keep-vision)")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    ap.add_argument("--init", metavar="CKPT",
                    help="start the student from another run's ckpt.pt instead of the k-means "
                         "initialisation, with a fresh optimizer and learning-rate schedule (a "
                         "new warm-up and cosine cycle over --steps); --resume takes precedence "
                         "once OUT/ckpt.pt exists")
    ap.add_argument("--ckpt-every", type=int, default=50, help="steps between checkpoints")
    ap.add_argument("--keep-ckpt", default="", metavar="STEPS",
                    help="comma-separated steps at which OUT/ckpt-STEP.pt is kept as well (to "
                         "export and score intermediate models: copy it to ckpt.pt of a new OUT "
                         "and run with --resume --steps STEP)")
    ap.add_argument("--eval-every", type=int, default=50, help="steps between held-out KLs")
    ap.add_argument("--log-every", type=int, default=10,
                    help="steps between training-KL lines in OUT/log.jsonl")
    ap.add_argument("--types", default=None,
                    help="GGUF types to write, comma-separated (tq2_0, tq1_0, q2_0, q1_0); "
                         "default tq2_0, or q1_0 with --mode binary; 'none' for no GGUF")
    ap.add_argument("--name", default="model", help="GGUF file name prefix")
    ap.add_argument("--tern", help="the tern binary (default: build/src/cli/tern, else PATH)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 is fastest on a busy 2-core machine)")
    ap.add_argument("--seed", type=int, default=1)
    return ap


def main(argv=None):
    a = parser().parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    types = a.types or ("q1_0" if a.mode == "binary" else "tq2_0")
    types = [] if types == "none" else types.split(",")
    tern = find_tern(a.tern) if types else None
    if types and not tern:
        raise SystemExit("no tern binary: build it (ninja -C build), pass --tern, or --types none")
    for need in ("config.json", "tokenizer.json"):
        if not os.path.exists(os.path.join(a.src, need)):
            raise SystemExit(f"{a.src}: no {need} (a Hugging Face checkpoint folder is needed)")
    tok_path = os.path.join(a.src, "tokenizer.json")
    sources = read_sources(a.images)
    t0 = time.time()
    try:
        teacher = M.load_hf(a.src)
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f"{a.src}: cannot load the checkpoint: {e}")
    teacher.eval().requires_grad_(False)
    student = M.load_hf(a.src)
    kept = kept_names(student, [k.strip() for k in a.keep.split(",") if k.strip()],
                      a.keep_vision)
    student_vision = not a.keep_vision
    set_student_quant(student, kept, a.mode)
    student.set_checkpointing(a.grad_ckpt)
    # Trained: every decoder (and, without --keep-vision, vision) parameter; frozen: the token
    # embeddings and lm_head (the largest matrices, float in the GGUF anyway).
    for n, p in student.named_parameters():
        frozen = "embed_tokens" in n or n.startswith("lm_head")
        if a.keep_vision and (n.startswith("model.vision_model") or
                              n.startswith("model.connector")):
            frozen = True
        p.requires_grad_(not frozen)
    params = [p for p in student.parameters() if p.requires_grad]
    n_tern = sum(m.weight.numel() for _, m in ternary_layers(student, kept))
    print(f"distill: {a.src}: {M.num_params(student) / 1e6:.1f} M parameters, "
          f"{len(ternary_layers(student, kept))} ternary matrices ({n_tern / 1e6:.1f} M weights), "
          f"{len(kept)} float, {sum(p.numel() for p in params) / 1e6:.1f} M trained; "
          f"loaded in {time.time() - t0:.1f} s", file=sys.stderr)

    tok = Tokenizer.load(tok_path)
    pairs = Pairs(a, teacher, student_vision, tok, sources, read_questions(a.questions))
    order = list(range(len(pairs.pairs)))
    random.Random(a.seed).shuffle(order)
    val = order[:min(a.val, max(1, len(order) // 5))]
    train = order[len(val):] or val
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.98), weight_decay=0.0)
    logf, ckpt = os.path.join(a.out, "log.jsonl"), os.path.join(a.out, "ckpt.pt")
    step, rng = 0, random.Random(a.seed + 1)
    if a.resume and os.path.exists(ckpt):
        st = torch.load(ckpt, weights_only=False)
        student.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step = st["step"]
        rng.setstate(st["rng"])
        print(f"distill: resumed at step {step}", file=sys.stderr)
    else:
        if os.path.exists(logf):
            os.remove(logf)
        if a.init:
            try:
                student.load_state_dict(torch.load(a.init, weights_only=False)["model"])
            except (OSError, KeyError, RuntimeError) as e:
                raise SystemExit(f"{a.init}: not a checkpoint of this model ({e})")
            print(f"distill: student initialised from {a.init}", file=sys.stderr)
    keep_ckpt = {int(x) for x in a.keep_ckpt.split(",") if x.strip()}

    if step == 0:
        kl0 = held_out_kl(student, pairs, val, a.temperature, student_vision)
        init = a.init or a.mode
        log(logf, {"step": 0, "val_kl": kl0, "mode": a.mode, "init": init})
        print(f"distill: held-out KL after {init} initialisation {kl0:.4f}", file=sys.stderr)
    student.train()
    run, rn, tl, t_teacher = 0.0, 0, time.time(), pairs.teacher_s
    sps = 0.0
    while step < a.steps:
        lr = TZ.TR.lr_at(step, a.steps, a.lr, a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for _ in range(a.batch):
            rec = pairs.get(rng.choice(train))
            loss = pair_loss(student, rec, a.temperature, student_vision) / a.batch
            loss.backward()
            loss_sum += float(loss)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        run += loss_sum
        rn += 1
        now = time.time()
        sps = (now - tl) / rn
        progress(step, a.steps, run / rn, sps)
        if step % a.log_every == 0 or step == a.steps:
            # s_per_step includes the teacher's answers to prompts seen for the first time;
            # student_s_per_step leaves them out (what a step costs once they are cached)
            tt = pairs.teacher_s - t_teacher
            log(logf, {"step": step, "kl": run / rn, "lr": lr, "s_per_step": sps,
                       "student_s_per_step": (now - tl - tt) / rn,
                       "peak_rss_mib": peak_rss_mib()})
            run, rn, tl, t_teacher = 0.0, 0, time.time(), pairs.teacher_s
        if step % a.eval_every == 0 or step == a.steps:
            vk = held_out_kl(student, pairs, val, a.temperature, student_vision)
            log(logf, {"step": step, "val_kl": vk})
            sys.stderr.write(f"\ndistill: step {step}: held-out KL {vk:.4f}\n")
            tl, t_teacher = time.time(), pairs.teacher_s
        if step % a.ckpt_every == 0 or step == a.steps or step in keep_ckpt:
            torch.save({"model": student.state_dict(), "opt": opt.state_dict(), "step": step,
                        "rng": rng.getstate()}, ckpt + ".tmp")
            if step in keep_ckpt:
                kept_ckpt = os.path.join(a.out, f"ckpt-{step}.pt")
                shutil.copyfile(ckpt + ".tmp", kept_ckpt + ".tmp")
                os.replace(kept_ckpt + ".tmp", kept_ckpt)
            os.replace(ckpt + ".tmp", ckpt)
    sys.stderr.write("\n")

    # The held-out prompts with the teacher's answers: `tern perplexity --data` scores a GGUF
    # model on them (how closely it reproduces the float model).
    with open(os.path.join(a.out, "check.jsonl"), "w") as f:
        for k in val:
            rec = pairs.get(k)
            f.write(json.dumps({"image": os.path.abspath(sources[rec["image"]][0]),
                                "prompt": rec["question"],
                                "answer": pairs.answer_text(rec["answer"])}) + "\n")
    student.eval()
    hf = os.path.join(a.out, "hf")
    export(student, kept, a.mode, pairs.proc, tok_path, hf)
    summary = {"steps": step, "mode": a.mode, "float_layers": sorted(kept),
               "val_kl": [json.loads(x)["val_kl"] for x in open(logf) if "val_kl" in x]}
    if types:
        summary["gguf"] = make_gguf(tern, hf, a.out, a.name, types, keep_globs(student, kept))
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"distill: wrote {hf}" + "".join(f", {p}" for g in summary.get("gguf", []) for p in g),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
