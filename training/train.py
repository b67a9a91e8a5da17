"""Float training of the demo model on the shapes data (loss on answer tokens only).

  python3 train.py --data DIR --out DIR [--steps N] [--resume]

Writes OUT/ckpt.pt (model, optimizer, step; every --ckpt-every steps, so a killed run resumes
with --resume), OUT/log.jsonl (one line per logged step: loss, lr, seconds per step; val accuracy
lines), OUT/hf/ (the final model in HF format) and OUT/eval.json. Uses a GPU when one is
present, never needs one.

Prompt layout is SmolVLM's chat template with the Idefics3 single-image block:
  <|im_start|>User:<fake_token_around_image><global-img><image>*N<fake_token_around_image>
  QUESTION<end_of_utterance>\\nAssistant: ANSWER<end_of_utterance>
The answer part is " ANSWER<end_of_utterance>" (the space belongs to the answer, as in SmolVLM).
"""

import argparse
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as D  # noqa: E402
import model as M  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402

PAD = 0  # <|endoftext|>


def image_block(n):
    return "<fake_token_around_image><global-img>" + "<image>" * n + "<fake_token_around_image>"


def prompt_text(question, n_image_tokens):
    return ("<|im_start|>User:" + image_block(n_image_tokens) + question +
            "<end_of_utterance>\nAssistant:")


class Encoded:
    """A split, tokenized: pixels (N,H,W,3) uint8 and per image {qtype: (prompt_ids, ans_ids)}."""

    def __init__(self, path, tok, n_img, unlabel_reached=False):
        self.pixels, meta = D.load_split(path)
        self.pixels = torch.from_numpy(self.pixels)
        self.items = []
        # per-cell labels for the auxiliary vision loss: (shape, colour, size), 0 = empty cell
        self.cells = torch.zeros((len(meta), 9, 3), dtype=torch.long)
        # first-world pictures (shapes centred in their grid cells): the ones --shift moves
        self.first = torch.tensor(["d" not in m["objects"][0] for m in meta], dtype=torch.bool)
        for n, m in enumerate(meta):
            for c in reached_cells(m) if unlabel_reached else []:
                self.cells[n, c] = -100  # part of a shape, neither empty nor its centre: no label
            for o in m["objects"]:
                c = o["row"] * 3 + o["col"]
                self.cells[n, c, 0] = D.SHAPES.index(o["shape"]) + 1
                self.cells[n, c, 1] = D.COLOR_NAMES.index(o["color"]) + 1
                self.cells[n, c, 2] = 1 if o["size"] == "large" else 2
        # the grid cell of the object a question is about (-1: none, e.g. count, describe, "No.")
        self.target = [{qt: question_target(m["objects"], qt, q, a)
                        for qt, (q, a) in m["questions"].items()} for m in meta]
        for m in meta:
            qs = {}
            for qt, (q, a) in m["questions"].items():
                p = tok.encode(prompt_text(q, n_img))
                full = tok.encode(prompt_text(q, n_img) + " " + a + "<end_of_utterance>")
                assert full[:len(p)] == p, (q, a)
                qs[qt] = (p, full[len(p):])
            self.items.append(qs)

    def flat(self):
        """All (image index, qtype, prompt ids, answer ids)."""
        return [(i, qt, p, a) for i, qs in enumerate(self.items) for qt, (p, a) in qs.items()]


def reached_cells(meta):
    """Grid cells a wider-world picture's shapes reach into besides their centres' (the 96 px
    view, stretched as the processor does). The per-cell vision loss would call them empty: more
    than half the wider world's shapes reach into another cell. The picture's size is not in
    the metadata; data.py's sampler gives it again from the seed (checked against the stored
    centres, so the second renderer's pictures and the first world's give [])."""
    objs = meta["objects"]
    if "d" not in objs[0]:
        return []
    W, H, again = D.sample_wide_scene(random.Random(meta["seed"]))
    if len(again) != len(objs) or any(abs(a["cx"] - o["cx"]) > 1e-3 for a, o in zip(again, objs)):
        return []
    out = set()
    for o in objs:
        r = o["d"] * min(W, H) / 2
        c0, c1 = max(0, int((o["cx"] - r) / W * 3)), min(2, int((o["cx"] + r) / W * 3))
        r0, r1 = max(0, int((o["cy"] - r) / H * 3)), min(2, int((o["cy"] + r) / H * 3))
        out |= {row * 3 + col for row in range(r0, r1 + 1) for col in range(c0, c1 + 1)}
    return sorted(out - {o["row"] * 3 + o["col"] for o in objs})


def question_target(objs, qt, q, a):
    """Cell (row*3+col) of the one object the question names, or -1."""
    words = set(q.lower().rstrip("?.").split())
    for o in objs:
        cell = o["row"] * 3 + o["col"]
        if qt in ("color", "where") and o["shape"] in words:
            return cell
        if qt == "shape" and o["color"] in words:
            return cell
        if qt == "exists" and a == "Yes." and o["shape"] in words and o["color"] in words:
            return cell
    return -1


def shift_pictures(pixels_u8, which, max_px, rng):
    """Each picture with which[i] set moved by a random (dx, dy) in [-max_px, max_px], the edge
    pixels repeated into the gap. The first world centres its shapes in the 3x3 cells, which is
    one fixed offset to the 16 px patches and the 2x2 patch blocks of the image tokens: the
    encoder learned shapes at that offset only (moved 8 px, held-out shape answers fall from
    92 % to 26 %, training/RESULTS-world.md). Moves up to 8 px keep every centre in its cell,
    so every answer and per-cell label stays true."""
    if max_px <= 0 or not bool(which.any()):
        return pixels_u8
    out = pixels_u8.clone()
    for i in range(len(out)):
        if which[i]:
            out[i] = move_picture(pixels_u8[i], rng.randint(-max_px, max_px),
                                  rng.randint(-max_px, max_px))
    return out


def move_picture(img, dx, dy):
    """One (H, W, C) picture moved dx px right and dy px down, edge pixels repeated into the gap."""
    h, w = img.shape[:2]
    return img[(torch.arange(h) - dy).clamp(0, h - 1)][:, (torch.arange(w) - dx).clamp(0, w - 1)]


def collate(seqs, device):
    """seqs: list of (img_slot, prompt, answer[, target cell]).
    -> ids, labels (answer tokens only), slots."""
    T = max(len(s[1]) + len(s[2]) for s in seqs)
    ids = torch.full((len(seqs), T), PAD, dtype=torch.long)
    labels = torch.full((len(seqs), T), -100, dtype=torch.long)
    for r, (_, p, a) in enumerate(s[:3] for s in seqs):
        s = p + a
        ids[r, :len(s)] = torch.tensor(s)
        # position t predicts token t+1: label the positions that predict answer tokens
        labels[r, len(p) - 1:len(s) - 1] = torch.tensor(a)
    slots = torch.tensor([s[0] for s in seqs])
    return ids.to(device), labels.to(device), slots.to(device)


AUX_SIZES = (len(D.SHAPES) + 1, len(D.COLOR_NAMES) + 1, 3)


def aux_head(model):
    """Auxiliary per-cell classifier on the connector output (one image token per grid cell):
    shape, colour and size of what is in the cell. Not part of the model; it gives the vision
    encoder a dense signal early on, which the answer-token loss alone gives it only slowly."""
    return torch.nn.Linear(model.tcfg["hidden_size"], sum(AUX_SIZES))


def aux_loss(head, feats, cells):
    out = head(feats)  # (B, 9, sum sizes)
    loss, o = 0.0, 0
    for k, n in enumerate(AUX_SIZES):
        loss = loss + F.cross_entropy(out[..., o:o + n].flatten(0, 1), cells[..., k].flatten())
        o += n
    return loss


def attn_sup_loss(model, layer, ids, seqs):
    """-log of the attention weight that head 0 of decoder layer `layer` puts, from the position
    that predicts the first answer token, on the image token of the object the question names.
    A training-only hint for the step the plain loss learns slowest: finding that object."""
    att = model.model.text_model.layers[layer].self_attn.last_attn  # (B, H, T, T)
    img = ids == model.image_token_id
    loss, n = 0.0, 0
    for r, s in enumerate(seqs):
        if len(s) < 4 or s[3] < 0:
            continue
        pos = img[r].nonzero().flatten()[s[3]]
        loss = loss - torch.log(att[r, 0, len(s[1]) - 1, pos] + 1e-6)
        n += 1
    return loss / max(1, n)


def batch_loss(model, pixels_u8, seqs, device, groups=1, aux=None, attn_sup=None,
               feat_teacher=None):
    """Mean cross-entropy over answer tokens. With groups > 1 the sequences are sorted by length
    and run in that many chunks, so short questions are not padded to the long descriptions.
    Also returns (logits, labels) of the last chunk (groups=1: the whole batch, in order).
    feat_teacher: (model, weight): adds weight * the relative squared error of this model's
    image features (the connector's output) against that frozen model's."""
    px = M.to_pixels(pixels_u8.to(device))
    feats = model.image_features(px)
    extra = 0.0
    if feat_teacher is not None:
        with torch.no_grad():
            want = feat_teacher[0].image_features(px)
        extra = feat_teacher[1] * ((feats - want) ** 2).mean() / (want ** 2).mean()
    if aux is not None:  # (head, cells (B,9,3), weight)
        extra = aux[2] * aux_loss(aux[0], feats, aux[1].to(device))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][1]) + len(seqs[i][2]))
    if groups == 1:
        order = list(range(len(seqs)))
    total, ntok = 0.0, 0
    k = (len(order) + groups - 1) // groups
    for g in range(0, len(order), k):
        chunk = [seqs[i] for i in order[g:g + k]]
        ids, labels, slots = collate(chunk, device)
        if attn_sup is not None:  # (layer, weight)
            model.model.text_model.layers[attn_sup[0]].self_attn.keep_attn = True
        logits = model(ids, image_feats=feats[slots])
        if attn_sup is not None:
            extra = extra + attn_sup[1] * attn_sup_loss(model, attn_sup[0], ids, chunk) / (
                (len(order) + k - 1) // k)
            attn = model.model.text_model.layers[attn_sup[0]].self_attn
            attn.keep_attn, attn.last_attn = False, None  # do not hold the graph past the step
        n = int((labels != -100).sum())
        total = total + F.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                        ignore_index=-100, reduction="sum")
        ntok += n
    batch_loss.last_aux = float(extra)
    return total / max(1, ntok) + extra, logits, labels


def sample_batch(ds, rng, n_images, q_per_image, with_idx=False, keep=None):
    idx = [rng.randrange(len(ds.items)) for _ in range(n_images)]
    if with_idx:
        p, s = sample_batch_at(ds, rng, idx, q_per_image, keep)
        return p, s, idx
    return sample_batch_at(ds, rng, idx, q_per_image, keep)


def sample_batch_at(ds, rng, idx, q_per_image, keep=None):
    """keep: {qtype: probability} of asking a question of that type (default 1): the easy,
    long types (count, describe) can be asked less often than the ones that need the model to
    find an object by its name in the question."""
    seqs = []
    for slot, i in enumerate(idx):
        qts = list(ds.items[i])
        if keep:
            qts = [q for q in qts if rng.random() < keep.get(q, 1.0)]
        for qt in rng.sample(qts, min(q_per_image, len(qts))):
            p, a = ds.items[i][qt]
            seqs.append((slot, p, a, ds.target[i][qt]))
    return ds.pixels[idx], seqs


@torch.no_grad()
def evaluate(model, ds, device, batch_images=64, limit=None):
    """Exact match under teacher forcing: every answer token (and the closing
    <end_of_utterance>) is the argmax. That is exactly when greedy decoding reproduces the
    answer, so it equals greedy exact-match accuracy at the cost of one forward pass.
    Returns ({qtype: acc, "overall": acc}, mean answer-token loss)."""
    model.eval()
    n = len(ds.items) if limit is None else min(limit, len(ds.items))
    right, total, losses, ntok = {}, {}, 0.0, 0
    for s in range(0, n, batch_images):
        idx = list(range(s, min(n, s + batch_images)))
        seqs, qts = [], []
        for slot, i in enumerate(idx):
            for qt, (p, a) in ds.items[i].items():
                seqs.append((slot, p, a))
                qts.append(qt)
        loss, logits, labels = batch_loss(model, ds.pixels[idx], seqs, device)
        m = labels != -100
        ok = ((logits.argmax(-1) == labels) | ~m).all(1)
        k = int(m.sum())
        losses += float(loss) * k
        ntok += k
        for qt, o in zip(qts, ok.tolist()):
            right[qt] = right.get(qt, 0) + int(o)
            total[qt] = total.get(qt, 0) + 1
    model.train()
    acc = {qt: right[qt] / total[qt] for qt in sorted(total)}
    acc["overall"] = sum(right.values()) / sum(total.values())
    return acc, losses / max(1, ntok)


@torch.no_grad()
def greedy(model, tok, pixels_u8, prompts, device, max_new=48):
    """Batched greedy decoding (no KV cache: the sequences are short). Returns strings."""
    model.eval()
    eou = tok.token_id("<end_of_utterance>")
    feats = model.image_features(M.to_pixels(pixels_u8.to(device)))
    L = max(len(p) for p in prompts) + max_new
    ids = torch.full((len(prompts), L), PAD, dtype=torch.long, device=device)
    lens = torch.tensor([len(p) for p in prompts], device=device)
    for r, p in enumerate(prompts):
        ids[r, :len(p)] = torch.tensor(p)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    out = [[] for _ in prompts]
    for _ in range(max_new):
        T = int(lens.max())
        logits = model(ids[:, :T], image_feats=feats)
        nxt = logits[torch.arange(len(prompts)), lens - 1].argmax(-1)
        for r in range(len(prompts)):
            if not done[r]:
                t = int(nxt[r])
                if t == eou:
                    done[r] = True
                else:
                    out[r].append(t)
                    ids[r, lens[r]] = t
                    lens[r] += 1
        if done.all():
            break
    model.train()
    return [tok.decode(o).strip() for o in out]


@torch.no_grad()
def evaluate_greedy(model, tok, ds, device, batch_images=32, limit=None):
    """Real greedy decoding, string exact match per qtype (for the final results)."""
    n = len(ds.items) if limit is None else min(limit, len(ds.items))
    right, total, examples = {}, {}, []
    for s in range(0, n, batch_images):
        idx = list(range(s, min(n, s + batch_images)))
        pix, prompts, answers, qts = [], [], [], []
        for i in idx:
            for qt, (p, a) in ds.items[i].items():
                pix.append(i)
                prompts.append(p)
                answers.append(tok.decode(a, skip_special=True).strip())
                qts.append(qt)
        outs = greedy(model, tok, ds.pixels[pix], prompts, device)
        for qt, o, a in zip(qts, outs, answers):
            right[qt] = right.get(qt, 0) + int(o == a)
            total[qt] = total.get(qt, 0) + 1
            if o != a and len(examples) < 20:
                examples.append({"qtype": qt, "expected": a, "got": o})
    acc = {qt: right[qt] / total[qt] for qt in sorted(total)}
    acc["overall"] = sum(right.values()) / sum(total.values())
    acc["n"] = sum(total.values())
    return acc, examples


def lr_at(step, total, base, warmup):
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def device_pick():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def log(path, rec):
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", default=None, help="default: DATA/tokenizer.json")
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--images", type=int, default=32, help="images per batch")
    ap.add_argument("--qpi", type=int, default=3, help="questions per image in a batch")
    ap.add_argument("--groups", type=int, default=3, help="length buckets per batch")
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-limit", type=int, default=150, help="val images per eval")
    ap.add_argument("--ckpt-every", type=int, default=50)
    # 1 thread: on a busy 2-core box, 2 OpenMP threads were 6-10x slower than 1 (barrier
    # waits when a thread is descheduled). Measured 02:40 UTC, load average ~9.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--aux", type=float, default=1.0,
                    help="weight of the auxiliary per-cell vision loss (0: answer tokens only)")
    ap.add_argument("--aux-steps", type=int, default=10 ** 9,
                    help="use the auxiliary loss for the first N steps only")
    ap.add_argument("--stop-at", type=int, default=None,
                    help="stop (checkpoint, no HF export) after this step; the learning-rate "
                         "schedule still runs over --steps (run.sh grows the model there)")
    ap.add_argument("--qkeep", default="",
                    help="ask some question types less often, e.g. 'describe=0.4,count=0.3'")
    ap.add_argument("--attn-sup", default="",
                    help="LAYER,WEIGHT: supervise head 0 of that decoder layer to look at the "
                         "object the question names (see attn_sup_loss)")
    ap.add_argument("--eval-extra", default="",
                    help="NAME=FILE.npz,...: more splits scored at each evaluation (e.g. the "
                         "second renderer's test_ood.npz and the wider world's test_wide.npz), "
                         "logged as NAME_acc; never trained on")
    ap.add_argument("--unlabel-reached", action="store_true",
                    help="the per-cell vision loss leaves the cells a wider-world shape reaches "
                         "into beside its own unlabelled instead of 'empty' (see reached_cells)")
    ap.add_argument("--shift", type=int, default=0,
                    help="move each first-world training picture by up to this many px "
                         "(see shift_pictures; at most 8)")
    ap.add_argument("--config", default=None, help="JSON overrides for demo_config")
    ap.add_argument("--init", default=None,
                    help="start from the weights of this HF directory (e.g. models/hf/float) "
                         "instead of a random initialisation; ignored when resuming")
    ap.add_argument("--vision-init", default=None,
                    help="then replace the vision tower by the one in this checkpoint of "
                         "world_probe.py pool (a tower taught to name each object's shape and "
                         "colour); ignored when resuming")
    ap.add_argument("--freeze-vision", action="store_true",
                    help="train the connector and the language side only: the vision tower "
                         "(e.g. one from --vision-init) keeps what it was taught")
    a = ap.parse_args()
    if not 0 <= a.shift <= 8:
        ap.error("--shift: 0..8 px (more moves first-world centres out of their cells)")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = device_pick()
    os.makedirs(a.out, exist_ok=True)
    tok_path = a.tokenizer or os.path.join(a.data, "tokenizer.json")
    tok = Tokenizer.load(tok_path)
    over = json.loads(a.config) if a.config else {}
    cfg = M.demo_config(len(tok), tok.token_id("<image>"), **over)
    n_img = M.image_seq_len(cfg)
    model = M.build_model(cfg).to(dev)
    if a.freeze_vision:
        model.model.vision_model.requires_grad_(False)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.dim() >= 2 and "embed" not in n]
    other = [p for n, p in params if not (p.dim() >= 2 and "embed" not in n)]
    head = aux_head(model).to(dev)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.wd},
                             {"params": other, "weight_decay": 0.0},
                             {"params": list(head.parameters()), "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98))
    ckpt = os.path.join(a.out, "ckpt.pt")
    logf = os.path.join(a.out, "log.jsonl")
    step = 0
    if a.init and not (a.resume and os.path.exists(ckpt)):
        src = M.load_hf(a.init)
        model.load_state_dict(src.state_dict())
        print(f"initialised from {a.init}", flush=True)
    if a.vision_init and not (a.resume and os.path.exists(ckpt)):
        model.model.vision_model.load_state_dict(torch.load(a.vision_init)["vision"])
        print(f"vision tower from {a.vision_init}", flush=True)
    if a.resume and os.path.exists(ckpt):
        st = torch.load(ckpt, map_location=dev)
        model.load_state_dict(st["model"])
        if "head" in st:
            head.load_state_dict(st["head"])
        try:
            opt.load_state_dict(st["opt"])
        except (KeyError, ValueError):  # grown by grow.py, or from before the auxiliary head
            print("optimizer state not restored", flush=True)
        step = st["step"]
        print(f"resumed at step {step}", flush=True)

    t0 = time.time()
    train = Encoded(os.path.join(a.data, "train.npz"), tok, n_img, a.unlabel_reached)
    val = Encoded(os.path.join(a.data, "val.npz"), tok, n_img)
    print(f"params {M.num_params(model)}; train {len(train.items)} images "
          f"{len(train.flat())} questions; val {len(val.items)}; load {time.time() - t0:.1f}s; "
          f"device {dev}", flush=True)
    extra = [(kv.split("=")[0], Encoded(kv.split("=", 1)[1], tok, n_img))
             for kv in a.eval_extra.split(",") if kv]
    keep = {k: float(v) for k, v in (kv.split("=") for kv in a.qkeep.split(",") if kv)}
    attn_sup = (int(a.attn_sup.split(",")[0]), float(a.attn_sup.split(",")[1])) \
        if a.attn_sup else None
    rng = random.Random(a.seed * 1000003 + step)

    def evaluate_all():
        acc, vl = evaluate(model, val, dev, limit=a.eval_limit)
        rec = {"step": step, "val_loss": vl, "val_acc": acc}
        for name, ds in extra:
            rec[name + "_acc"] = evaluate(model, ds, dev, limit=a.eval_limit)[0]
        log(logf, rec)
    if a.init and step == 0:  # where a cycle from another model starts, for its curve
        evaluate_all()
    model.train()
    run_loss, run_n, t_last = 0.0, 0, time.time()
    end = a.steps if a.stop_at is None else min(a.steps, a.stop_at)
    while step < end:
        lr = lr_at(step, a.steps, a.lr, a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        pix, seqs, idx = sample_batch(train, rng, a.images, a.qpi, with_idx=True, keep=keep)
        pix = shift_pictures(pix, train.first[idx], a.shift, rng)
        w_aux = a.aux if step < a.aux_steps else 0.0
        sup = attn_sup if w_aux > 0 else None
        loss, _, _ = batch_loss(model, pix, seqs, dev, groups=a.groups,
                                aux=(head, train.cells[idx], w_aux) if w_aux > 0 else None,
                                attn_sup=sup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        run_loss += float(loss) - batch_loss.last_aux  # log the answer-token loss alone
        run_n += 1
        if step % a.log_every == 0 or step == end:
            now = time.time()
            log(logf, {"step": step, "loss": run_loss / run_n, "aux": batch_loss.last_aux,
                       "lr": lr,
                       "s_per_step": (now - t_last) / run_n, "seqs": len(seqs)})
            run_loss, run_n, t_last = 0.0, 0, now
        if step % a.ckpt_every == 0 or step == end:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "head": head.state_dict(),
                        "config": cfg}, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
        if step % a.eval_every == 0 or step == a.steps:
            evaluate_all()
            t_last = time.time()
    if end < a.steps:
        print(f"stopped at step {end}", flush=True)
        return
    M.save_hf(model.cpu(), os.path.join(a.out, "hf"), tok_path)
    print("saved", os.path.join(a.out, "hf"), flush=True)


if __name__ == "__main__":
    main()
