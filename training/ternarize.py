"""Ternary and binary versions of the trained float model (docs/model-format.md).

  python3 ternarize.py --data DIR --float OUT/float/hf --out OUT/ternary --mode kmeans|absmean|binary
                       [--steps N] [--lr X]
  python3 ternarize.py --from HF_DIR --images DIR_OR_JSONL --out OUT [...]   (distill.py)

Which weights: every QLinear except lm_head, i.e. all linear layers of the vision encoder,
the connector and the decoder. The patch embedding (a Conv2d), token and position embeddings,
norms, biases and lm_head stay float.

Quantizers (per output row unless noted; the scale is rounded to an f16 value, so a GGUF block's
f16 scale reproduces it exactly):
  kmeans   the paper's symmetric three-centroid k-means: m = mean|w|; repeat
           m <- mean(|w_i| : |w_i| > m/2) until it stops changing; t = sign(w)*[|w| > m/2]
  absmean  BitNet b1.58, per tensor: s = mean|W|, t = round(clip(W/s, -1, 1))
  binary   t = sign(w) (0 -> +1), s = mean|w|

Fine-tuning is quantization-aware with a straight-through estimator: the latent float weights
are trained, every forward pass uses Q(W) = t*s, and the gradient of Q is taken as identity.
The scale is recomputed from the latent weights by the same rule at every step (not learned),
so the exported weights are exactly Q(latent) with no second rounding.

Writes OUT/log.jsonl (loss by step; val accuracy), OUT/hf/ (weights = t*s exactly, saved as f16,
which holds t*s exactly because s is an f16 value) and OUT/eval.json (post-training
quantization accuracy before fine-tuning, and after).
"""

import argparse
import json
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M  # noqa: E402
import train as TR  # noqa: E402
from tokenizer import Tokenizer  # noqa: E402


def f16(x):
    return x.to(torch.float16).to(torch.float32)


def kmeans_row_scale(w, rounds=30):
    """Per-row k-means scale m (see module doc), iterated to a fixed point."""
    a = w.abs()
    m = a.mean(1, keepdim=True)
    for _ in range(rounds):
        sel = (a > m / 2).to(a.dtype)
        nm = (a * sel).sum(1, keepdim=True) / sel.sum(1, keepdim=True).clamp_min(1)
        if torch.equal(nm, m):
            break
        m = nm
    return m


def q_kmeans(w):
    m = kmeans_row_scale(w)
    t = torch.sign(w) * (w.abs() > m / 2).to(w.dtype)
    return t, f16(m)


def q_absmean(w):
    s = w.abs().mean().clamp_min(1e-8)
    t = torch.round(torch.clamp(w / s, -1, 1))
    return t, f16(s).expand(w.shape[0], 1)


def q_binary(w):
    t = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
    return t, f16(w.abs().mean(1, keepdim=True))


QUANT = {"kmeans": q_kmeans, "absmean": q_absmean, "binary": q_binary}


def ste(fn):
    def q(w):
        with torch.no_grad():
            t, s = fn(w)
            wq = t * s
        return w + (wq - w).detach()
    return q


def quant_layers(model):
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, M.QLinear) and n != "lm_head"]


def set_quant(model, mode):
    for _, m in quant_layers(model):
        m.quant = None if mode is None else ste(QUANT[mode])


def export_weights(model, mode):
    """A plain float model whose quantized layers hold t*s exactly; plus a per-layer summary."""
    out = M.Idefics3(model.config)
    sd = {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    stats = {}
    for n, m in quant_layers(model):
        t, s = QUANT[mode](m.weight.detach().cpu().float())
        sd[n + ".weight"] = t * s
        stats[n] = {"zeros": float((t == 0).float().mean()),
                    "scale_mean": float(s.mean())}
    out.load_state_dict(sd)
    return out, stats


@torch.no_grad()
def quant_error(model, mode):
    """Relative quantization error ||W - Q(W)|| / ||W|| over all quantized layers' latent
    weights (what the fine-tuning moves; k-means vs absmean in the figures)."""
    num = den = 0.0
    for _, m in quant_layers(model):
        w = m.weight.detach().float()
        t, s = QUANT[mode](w)
        num += float(((w - t * s) ** 2).sum())
        den += float((w ** 2).sum())
    return (num / max(den, 1e-30)) ** 0.5


def check_exact(model, mode):
    """Every quantized row is {-s, 0, +s} with s an f16 value (what TQ2_0/Q1_0 store)."""
    for n, m in quant_layers(model):
        w = m.weight.detach()
        s = w.abs().amax(1, keepdim=True)
        assert torch.equal(f16(s), s), n
        ok = (w == 0) | (w == s) | (w == -s)
        assert bool(ok.all()), n
        if mode == "binary":
            assert bool((w != 0).all()), n


def main():
    if "--from" in sys.argv[1:]:  # anyone's HF checkpoint: k-means + self-distillation
        import distill
        return distill.main(sys.argv[1:])
    ap = argparse.ArgumentParser(epilog="ternarize.py --from HF_DIR --images DIR_OR_JSONL --out "
                                        "OUT: a Hugging Face checkpoint, no labels (distill.py; "
                                        "its options: ternarize.py --from x --help)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--float", required=True, help="HF directory of the float model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--mode", choices=list(QUANT), default="kmeans")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--qpi", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-limit", type=int, default=300)
    # 1 thread: on a busy 2-core box, 2 OpenMP threads were 6-10x slower than 1 (barrier
    # waits when a thread is descheduled). Measured 02:40 UTC, load average ~9.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--feat-kd", type=float, default=0.0, metavar="W",
                    help="pull the quantized image features towards the float model's: W times "
                         "their relative squared error is added to the loss (0: off)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    dev = TR.device_pick()
    os.makedirs(a.out, exist_ok=True)
    logf = os.path.join(a.out, "log.jsonl")
    if os.path.exists(logf):
        os.remove(logf)
    tok_path = os.path.join(a.float, "tokenizer.json")
    tok = Tokenizer.load(tok_path)
    model = M.load_hf(a.float).to(dev)
    n_img = M.image_seq_len(model.config)
    train = TR.Encoded(os.path.join(a.data, "train.npz"), tok, n_img)
    val = TR.Encoded(os.path.join(a.data, "val.npz"), tok, n_img)
    test = TR.Encoded(os.path.join(a.data, "test.npz"), tok, n_img)
    result = {"mode": a.mode, "steps": a.steps, "feat_kd": a.feat_kd}

    teacher = None
    if a.feat_kd > 0:  # the float model, frozen; only its tower runs
        teacher = (M.load_hf(a.float).to(dev).eval(), a.feat_kd)
        for p in teacher[0].parameters():
            p.requires_grad_(False)
    set_quant(model, a.mode)
    acc, vl = TR.evaluate(model, test, dev)
    result["ptq_test"] = acc
    result["ptq_test_loss"] = vl
    TR.log(logf, {"step": 0, "ptq_test_acc": acc, "test_loss": vl,
                  "qerr": quant_error(model, a.mode)})

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.0},
                             {"params": other, "weight_decay": 0.0}], lr=a.lr,
                            betas=(0.9, 0.98))
    rng = random.Random(a.seed)
    model.train()
    run, kd, rn, tl = 0.0, 0.0, 0, time.time()
    for step in range(1, a.steps + 1):
        lr = TR.lr_at(step - 1, a.steps, a.lr, a.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        pix, seqs = TR.sample_batch(train, rng, a.images, a.qpi)
        loss, _, _ = TR.batch_loss(model, pix, seqs, dev, groups=3, feat_teacher=teacher)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run += float(loss) - TR.batch_loss.last_aux  # the answers' loss alone, as absmean's
        kd += TR.batch_loss.last_aux
        rn += 1
        if step % a.log_every == 0 or step == a.steps:
            now = time.time()
            TR.log(logf, {"step": step, "loss": run / rn, "lr": lr, "s_per_step": (now - tl) / rn,
                          "qerr": quant_error(model, a.mode), "feat_kd_loss": kd / rn})
            run, kd, rn, tl = 0.0, 0.0, 0, now
        if step % a.eval_every == 0 and step != a.steps:
            acc, vl = TR.evaluate(model, val, dev, limit=a.eval_limit)
            TR.log(logf, {"step": step, "val_loss": vl, "val_acc": acc})
            tl = time.time()

    model = model.cpu()
    q, stats = export_weights(model, a.mode)
    q = q.half().float()  # what the f16 file holds (t*s is exact in f16; the rest rounds)
    check_exact(q, a.mode)
    acc, vl = TR.evaluate(q, test, torch.device("cpu"))
    result["qat_test"] = acc
    result["qat_test_loss"] = vl
    result["layers"] = stats
    TR.log(logf, {"step": a.steps, "qat_test_acc": acc, "test_loss": vl})
    if a.mode != "absmean":
        M.save_hf(q, os.path.join(a.out, "hf"), tok_path, dtype=torch.float16,
                  extra_config={"quantization": {"method": a.mode, "per": "row",
                                                 "excluded": "embeddings, norms, biases, "
                                                             "patch embedding, lm_head"}})
        torch.save(model.state_dict(), os.path.join(a.out, "latent.pt"))
    with open(os.path.join(a.out, "eval.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
