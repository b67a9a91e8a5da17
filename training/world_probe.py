"""Why the demo model does not name wider-world shapes (issue 13): the probes of
training/RESULTS-world.md, section "Why shapes are not learned". Data: a data.py directory D
(train.npz mixed first/wider world, test.npz, test_wide.npz, test_ood.npz; default
/tmp/world/data = run.sh's data-world3 with data_ood.py's split). CPU, one thread, minutes each.

  world_probe.py frozen MODEL          linear shape heads on MODEL's frozen vision features at
                                       the object's cell (vision or decoder?)
  world_probe.py sizes MODEL           the frozen head's accuracy by object size / aspect
  world_probe.py train MODEL|scratch P STEPS [MORE.npz...]
                                       tower (patch P) + head trained on wider-world objects
  world_probe.py shift MODEL|scratch16|scratch8 STEPS
                                       tower + head trained on first-world pictures moved by
                                       up to 8 px, scored on held-out moved 0 / 8 px
  world_probe.py moved MODEL [N]       the model's own answers (teacher forced) on the first
                                       N held-out pictures moved 0/4/8/16 px right
  world_probe.py span                  how many wider-world shapes reach beyond their cell
  world_probe.py pool MODEL|scratch|scratch8 STEPS OUT [--lr LR] [--resume PT]
                     [--first FIRST.npz [--first-share F] [--max-move PX]] [TRAIN.npz...]
                                       tower + shape/colour heads on each object's own patches
                                       (pooled by how much of each patch it covers), wider-world
                                       pictures in the 8 flips/turns of the square, and with
                                       --first a share F of first-world pictures, each moved by
                                       up to PX px; scored on the wide and second-renderer test
                                       splits and the held-out first world (unmoved, moved
                                       8 px); the tower to OUT
"""
import json, math, os, random, sys, time
import numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import data as D, model as M
torch.manual_seed(0)
torch.set_num_threads(1)
W = os.environ.get("WORLD_DATA", "/tmp/world/data")


def objs(path, wide_only=True):
    px, meta = D.load_split(path)
    I, C, S = [], [], []
    keep = []
    for i, m in enumerate(meta):
        if wide_only and "d" not in m["objects"][0]:
            continue
        keep.append(i)
    idx = {old: new for new, old in enumerate(keep)}
    for i in keep:
        for o in meta[i]["objects"]:
            I.append(idx[i]); C.append(o["row"] * 3 + o["col"]); S.append(D.SHAPES.index(o["shape"]))
    return (torch.from_numpy(px[keep]), torch.tensor(I), torch.tensor(C), torch.tensor(S),
            [len(meta[i]["objects"]) for i in keep])


def cells(vis):
    """(B, N, D) vision output -> (B, 9, D): mean over each 3x3 cell's patches."""
    b, n, d = vis.shape
    g = int(round(math.sqrt(n)))
    x = vis.view(b, g, g, d).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(x, 3).flatten(2).transpose(1, 2)


def feats(model, px, bs=100):
    out = {"vcell": [], "conn": [], "vmean": []}
    with torch.no_grad():
        for k in range(0, len(px), bs):
            x = M.to_pixels(px[k:k + bs])
            v = model.model.vision_model(x)
            out["vcell"].append(cells(v)); out["vmean"].append(v.mean(1, keepdim=True).expand(-1, 9, -1))
            out["conn"].append(model.model.connector(v))
    return {k: torch.cat(v) for k, v in out.items()}


def fit(Xtr, ytr, evals, steps=400):
    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-5
    head = torch.nn.Linear(Xtr.shape[1], 7)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=1e-4)
    for s in range(steps):
        loss = F.cross_entropy(head((Xtr - mu) / sd), ytr)
        opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad():
        acc = lambda X, y: (head((X - mu) / sd).argmax(1) == y).float().mean().item() * 100
        return acc(Xtr, ytr), {k: acc(X, y) for k, (X, y) in evals.items()}


def frozen(path):
    model = M.load_hf(path).eval()
    sets = {"wide_tr": objs(W + "/train.npz"), "first_tr": None,
            "wide": objs(W + "/test_wide.npz"), "ood": objs(W + "/test_ood.npz")}
    # first world (grid) objects: the in-distribution control
    px, meta = D.load_split(W + "/train.npz")
    first = [i for i, m in enumerate(meta) if "d" not in m["objects"][0]]
    px2, meta2 = D.load_split(W + "/test.npz")
    def fw(pxa, metaa, ids):
        I, C, S = [], [], []
        for n, i in enumerate(ids):
            for o in metaa[i]["objects"]:
                I.append(n); C.append(o["row"] * 3 + o["col"]); S.append(D.SHAPES.index(o["shape"]))
        return torch.from_numpy(pxa[ids]), torch.tensor(I), torch.tensor(C), torch.tensor(S), None
    sets["first_tr"] = fw(px, meta, first)
    sets["held"] = fw(px2, meta2, list(range(len(meta2))))
    F_ = {k: feats(model, v[0]) for k, v in sets.items()}
    for kind in ("vcell", "conn", "vmean"):
        def X(k):
            _, I, C, S, _ = sets[k]
            return F_[k][kind][I, C], S
        tr = X("wide_tr")
        a_tr, ev = fit(*tr, {k: X(k) for k in ("wide", "ood", "held")})
        b_tr, evf = fit(*X("first_tr"), {k: X(k) for k in ("held", "wide", "ood")})
        print(f"{kind}: trained on wide objects: train {a_tr:.1f} " +
              " ".join(f"{k} {v:.1f}" for k, v in ev.items()) +
              f" | trained on first world: train {b_tr:.1f} " +
              " ".join(f"{k} {v:.1f}" for k, v in evf.items()), flush=True)


def train(src, patch, steps, extra):
    if src == "scratch":
        cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints/world-float/config.json")))
        cfg["vision_config"]["patch_size"] = patch
        model = M.build_model(cfg)
    else:
        model = M.load_hf(src)
        assert patch == 16
    vis = model.model.vision_model.train()
    sets = [objs(W + "/train.npz")] + [objs(p) for p in extra]
    px = torch.cat([s[0] for s in sets]); off = np.cumsum([0] + [len(s[0]) for s in sets])
    I = torch.cat([s[1] + o for s, o in zip(sets, off)]); C = torch.cat([s[2] for s in sets])
    S = torch.cat([s[3] for s in sets])
    by_img = [[] for _ in range(len(px))]
    for n, i in enumerate(I.tolist()):
        by_img[i].append(n)
    head = torch.nn.Linear(256, 7)
    opt = torch.optim.AdamW(list(vis.parameters()) + list(head.parameters()), lr=3e-4, weight_decay=0.01)
    ev = {"wide": objs(W + "/test_wide.npz"), "ood": objs(W + "/test_ood.npz")}
    rng = np.random.default_rng(0)
    t0 = time.time()
    print(f"{src} patch {patch}: {len(px)} pictures, {len(S)} objects", flush=True)
    for s in range(steps + 1):
        if s % 50 == 0:
            vis.eval()
            with torch.no_grad():
                r = {}
                for k, (epx, eI, eC, eS, _) in ev.items():
                    c = cells(vis(M.to_pixels(epx)))
                    r[k] = (head(c[eI, eC]).argmax(1) == eS).float().mean().item() * 100
            vis.train()
            print(f"step {s} " + " ".join(f"{k} {v:.1f}" for k, v in r.items()) +
                  f" ({time.time() - t0:.0f} s)", flush=True)
        if s == steps:
            break
        b = rng.choice(len(px), 32, replace=False)
        ob = torch.tensor([n for i in b for n in by_img[i]])
        pos = {int(i): k for k, i in enumerate(b)}
        c = cells(vis(M.to_pixels(px[b])))
        lo = head(c[torch.tensor([pos[int(i)] for i in I[ob]]), C[ob]])
        lr = 3e-4 * min(1, (s + 1) / 20)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(lo, S[ob])
        opt.zero_grad(); loss.backward(); opt.step()


def shifted(px, s):
    """Numpy pictures (N, 96, 96, 3) moved s px right, as a tensor."""
    px = torch.from_numpy(px)
    return move(px, None, [], [(s, 0)] * len(px))[0] if s else px


def first_objs(path):
    px, meta = D.load_split(path)
    keep = [i for i, m in enumerate(meta) if "d" not in m["objects"][0]]
    I, C, S = [], [], []
    for n, i in enumerate(keep):
        for o in meta[i]["objects"]:
            I.append(n); C.append(o["row"] * 3 + o["col"]); S.append(D.SHAPES.index(o["shape"]))
    return px[keep], torch.tensor(I), torch.tensor(C), torch.tensor(S)


class P_cells(torch.nn.Module):
    def forward(self, v):
        return cells(v)


def train_shift(src, steps):
    """Tower + connector + linear head on the object's image token, first-world pictures moved
    by up to 8 px (as train.py --shift 8); scored on held-out moved by 0 and 8 px."""
    import train as T
    if src.startswith("scratch"):  # scratch8 / scratch16: a new tower, cell-pooled features
        cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "checkpoints/world-float/config.json")))
        cfg["vision_config"]["patch_size"] = int(src[7:])
        model = M.build_model(cfg)
        net = torch.nn.ModuleList([model.model.vision_model, P_cells()]).train()
    else:
        model = M.load_hf(src)
        net = torch.nn.ModuleList([model.model.vision_model, model.model.connector]).train()
    px, I, C, S = first_objs(W + "/train.npz")
    px = torch.from_numpy(px)
    hp, hI, hC, hS = first_objs(W + "/test.npz")
    hp = np.asarray(hp)
    by_img = [[] for _ in range(len(px))]
    for n, i in enumerate(I.tolist()):
        by_img[i].append(n)
    head = torch.nn.Linear(256, 7)
    opt = torch.optim.AdamW(list(net.parameters()) + list(head.parameters()), lr=3e-4, weight_decay=0.01)
    rng, prng = np.random.default_rng(0), random.Random(0)
    t0 = time.time()
    for s in range(steps + 1):
        if s % 50 == 0:
            net.eval()
            with torch.no_grad():
                r = {}
                for sh in (0, 8):
                    f = net[1](net[0](M.to_pixels(shifted(hp, sh))))
                    r[sh] = (head(f[hI, hC]).argmax(1) == hS).float().mean().item() * 100
            net.train()
            print(f"step {s} held-out moved 0 px {r[0]:.1f}, 8 px {r[8]:.1f} ({time.time() - t0:.0f} s)", flush=True)
        if s == steps:
            break
        b = rng.choice(len(px), 32, replace=False)
        x = T.shift_pictures(px[b], torch.ones(32, dtype=torch.bool), 8, prng)
        ob = torch.tensor([n for i in b for n in by_img[i]])
        pos = {int(i): k for k, i in enumerate(b)}
        f = net[1](net[0](M.to_pixels(x)))
        lo = head(f[torch.tensor([pos[int(i)] for i in I[ob]]), C[ob]])
        for g in opt.param_groups:
            g["lr"] = 3e-4 * min(1, (s + 1) / 20)
        loss = F.cross_entropy(lo, S[ob])
        opt.zero_grad(); loss.backward(); opt.step()


def view(path):
    """(view diameter px, aspect, objects in the picture, outlined) of each wider-world object."""
    px, meta = D.load_split(path)
    out = []
    for m in meta:
        if "d" not in m["objects"][0]:
            continue
        W_, H_, _ = D.sample_wide_scene(random.Random(m["seed"]))
        for o in m["objects"]:
            out.append((o["d"] * min(W_, H_) * 96 / max(W_, H_), max(W_, H_) / min(W_, H_),
                        len(m["objects"]), o.get("outline", False)))
    return np.array(out, dtype=np.float32)


def sizes(path):
    model = M.load_hf(path).eval()
    tr = objs(W + "/train.npz"); te = objs(W + "/test_wide.npz")
    ftr = feats(model, tr[0])["conn"][tr[1], tr[2]]; fte = feats(model, te[0])["conn"][te[1], te[2]]
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-5
    head = torch.nn.Linear(256, 7); opt = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=1e-4)
    for s in range(400):
        l = F.cross_entropy(head((ftr - mu) / sd), tr[3]); opt.zero_grad(); l.backward(); opt.step()
    with torch.no_grad():
        ok_tr = (head((ftr - mu) / sd).argmax(1) == tr[3]).numpy()
        ok_te = (head((fte - mu) / sd).argmax(1) == te[3]).numpy()
    vtr, vte = view(W + "/train.npz"), view(W + "/test_wide.npz")
    for name, v, ok in (("train", vtr, ok_tr), ("test_wide", vte, ok_te)):
        for lo, hi in ((0, 12), (12, 20), (20, 32), (32, 200)):
            sel = (v[:, 0] >= lo) & (v[:, 0] < hi)
            print(f"{name} view diameter {lo}-{hi} px: {sel.sum()} objects, probe {ok[sel].mean()*100:.1f}")
        for nm, sel in (("single object", v[:, 2] == 1), ("aspect<=1.1", v[:, 1] <= 1.1),
                        ("aspect>1.5", v[:, 1] > 1.5), ("outline", v[:, 3] > 0),
                        ("single, >=24 px, square, filled",
                         (v[:, 2] == 1) & (v[:, 0] >= 24) & (v[:, 1] <= 1.1) & (v[:, 3] == 0))):
            print(f"{name} {nm}: {sel.sum()} objects, probe {ok[sel].mean()*100:.1f}")


def moved(path, lim):
    import train as T
    from tokenizer import Tokenizer
    m = M.load_hf(path).eval()
    tok = Tokenizer.load(W + "/tokenizer.json")
    ds = T.Encoded(W + "/test.npz", tok, M.image_seq_len(m.config))
    orig = ds.pixels.numpy()
    for s in (0, 4, 8, 16):
        ds.pixels = shifted(orig, s)
        acc, _ = T.evaluate(m, ds, "cpu", limit=lim)
        print(f"held-out moved {s:2d} px: " + " ".join(f"{k} {v*100:.1f}" for k, v in acc.items()), flush=True)


def span():
    px, meta = D.load_split(W + "/train.npz")
    n = reach = big = extra = 0
    for m in meta:
        if "d" not in m["objects"][0]:
            continue
        W_, H_, _ = D.sample_wide_scene(random.Random(m["seed"]))
        for o in m["objects"]:
            r = o["d"] * min(W_, H_) / 2
            cols = min(2, int((o["cx"] + r) / W_ * 3)) - max(0, int((o["cx"] - r) / W_ * 3)) + 1
            rows = min(2, int((o["cy"] + r) / H_ * 3)) - max(0, int((o["cy"] - r) / H_ * 3)) + 1
            n += 1; reach += cols * rows > 1; big += cols * rows >= 4; extra += cols * rows - 1
    print(f"{n} wider-world objects: {reach/n*100:.1f} % reach into another cell, "
          f"{big/n*100:.1f} % into 4 or more; {extra/n:.2f} covered cells per object")


def geometry(meta, ood):
    """(W, H) of each picture's source, from its seed (data.py / data_ood.py draw them first)."""
    out = []
    for m in meta:
        rng = random.Random(m["seed"])
        if ood:
            import data_ood as O
            W_, H_, _ = O.scene(rng, rng.choice(O.LAYOUTS))
        else:
            W_, H_, _ = D.sample_wide_scene(rng)
        out.append((W_, H_))
    return out


def footprints(path, ood=False, first=False):
    """Pixels (N, 96, 96, 3), and per object: picture index, shape, colour, and its disc in the
    model's 96 px view (centre x, y, radii x, y). Wider-world and second-renderer objects from
    their metadata (the picture's size from its seed); first-world ones (first=True) at their
    cell's centre with data.py's radius (its jitter, under 4 px, is left out)."""
    px, meta = D.load_split(path)
    keep = [i for i, m in enumerate(meta) if ("d" not in m["objects"][0]) == first]
    geo = [(96, 96)] * len(keep) if first else geometry([meta[i] for i in keep], ood)
    I, S, C, G = [], [], [], []
    for n, (i, (W_, H_)) in enumerate(zip(keep, geo)):
        for o in meta[i]["objects"]:
            if first:
                r = 32 * D.RADIUS[o["size"]]
                G.append(((o["col"] + 0.5) * 32, (o["row"] + 0.5) * 32, r, r))
            else:
                r = o["d"] * min(W_, H_) / 2
                G.append((o["cx"] * 96 / W_, o["cy"] * 96 / H_, r * 96 / W_, r * 96 / H_))
            I.append(n); S.append(D.SHAPES.index(o["shape"])); C.append(D.COLOR_NAMES.index(o["color"]))
    return (px[keep], torch.tensor(I), torch.tensor(S), torch.tensor(C),
            torch.tensor(G, dtype=torch.float32))


def weights(geo, g=6):
    """Each object's weights over the g x g patches: the share of each patch its disc covers,
    normalised; a shape smaller than a patch weighs on the patch it is in."""
    yy, xx = np.mgrid[0:96, 0:96] + 0.5
    out = np.zeros((len(geo), g * g), dtype=np.float32)
    for k, (vx, vy, rx, ry) in enumerate(geo.tolist()):
        m = ((xx - vx) / rx) ** 2 + ((yy - vy) / ry) ** 2 <= 1
        w = m.reshape(g, 96 // g, g, 96 // g).mean((1, 3)).reshape(-1)
        if w.sum() < 1e-6:
            w[min(g - 1, max(0, int(vy * g / 96))) * g + min(g - 1, max(0, int(vx * g / 96)))] = 1
        out[k] = w / w.sum()
    return torch.from_numpy(out)


def move(px, geo, img_of, dxy):
    """Pictures moved by dxy[i] = (dx, dy) px, edge pixels repeated into the gap (as train.py
    --shift), and their objects' discs (geo, the object of picture img_of[k]) with them."""
    import train as T
    out = torch.stack([T.move_picture(p, dx, dy) for p, (dx, dy) in zip(px, dxy)])
    if geo is None:
        return out, None
    geo = geo.clone()
    geo[:, 0] += torch.tensor([dxy[i][0] for i in img_of], dtype=torch.float32)
    geo[:, 1] += torch.tensor([dxy[i][1] for i in img_of], dtype=torch.float32)
    return out, geo


def dihedral(px, wt, k, g=6):
    """Picture batch (B, 96, 96, 3) and patch weights (n, g*g) turned k % 4 quarter turns and,
    for k >= 4, mirrored: shape and colour names do not change."""
    w = wt.view(-1, g, g)
    px = torch.rot90(px, k % 4, (1, 2)); w = torch.rot90(w, k % 4, (1, 2))
    if k >= 4:
        px = torch.flip(px, (2,)); w = torch.flip(w, (2,))
    return px.contiguous(), w.reshape(-1, g * g)


def pool_train(src, steps, out, extra, lr=3e-4, resume=None, first=(), first_share=0.0,
               max_move=8):
    """Tower + heads on pooled object features; `extra` wider-world sets, `first` first-world
    sets (a `first_share` of each batch, every picture moved by up to `max_move` px)."""
    cfg = json.load(open(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      "checkpoints/world-float/config.json")))
    g = 6
    if src.startswith("scratch"):  # scratch / scratch8: a new tower, 16 or 8 px patches
        cfg["vision_config"]["patch_size"] = int(src[7:] or 16)
        g = 96 // cfg["vision_config"]["patch_size"]
        model = M.build_model(cfg)
    else:
        model = M.load_hf(src)
    vis = model.model.vision_model.train()
    head = torch.nn.Linear(256, 7 + 8)
    start = 0
    if resume:  # a tower and head this mode saved; the step count goes on from there
        st = torch.load(resume)
        vis.load_state_dict(st["vision"]); head.load_state_dict(st["head"]); start = st["step"]

    def pool(sets):
        px = torch.from_numpy(np.concatenate([s[0] for s in sets]))
        off = np.cumsum([0] + [len(s[0]) for s in sets])
        I = torch.cat([s[1] + o for s, o in zip(sets, off)])
        by_img = [[] for _ in range(len(px))]
        for n, i in enumerate(I.tolist()):
            by_img[i].append(n)
        return (px, I, *(torch.cat([s[k] for s in sets]) for k in (2, 3, 4)), by_img)

    pools = [pool([footprints(p) for p in [W + "/train.npz"] + extra])]
    if first:
        pools.append(pool([footprints(p, first=True) for p in first]))
    ev = {"wide": footprints(W + "/test_wide.npz"), "first": footprints(W + "/test.npz", first=True)}
    if os.path.exists(W + "/test_ood.npz"):  # data_ood.py's split (needs python3-cairo)
        ev["ood"] = footprints(W + "/test_ood.npz", True)
    fx, fI, fS, fC, fG = ev["first"]  # and the same moved 8 px right: off the learned phase
    mx, mg = move(torch.from_numpy(fx), fG, fI.tolist(), [(8, 0)] * len(fx))
    ev["first8"] = (mx.numpy(), fI, fS, fC, mg)
    ev = {k: (x, i, s, c, weights(geo, g)) for k, (x, i, s, c, geo) in ev.items()}
    opt = torch.optim.AdamW(list(vis.parameters()) + list(head.parameters()), lr=lr,
                            weight_decay=0.01)
    rng = np.random.default_rng(start)
    t0 = time.time()
    print(f"{src}: " + ", ".join(f"{len(p[0])} pictures / {len(p[2])} objects" for p in pools),
          flush=True)
    hit = seen = 0
    for s in range(start, steps + 1):
        if s % 100 == 0 or s == steps:
            vis.eval()
            r = []
            with torch.no_grad():
                for k, (epx, eI, eS, eC, eW) in ev.items():
                    f = vis(M.to_pixels(torch.from_numpy(epx)))
                    lo = head(torch.einsum("np,npd->nd", eW, f[eI]))
                    r.append(f"{k} shape {(lo[:, :7].argmax(1) == eS).float().mean() * 100:.1f} "
                             f"colour {(lo[:, 7:].argmax(1) == eC).float().mean() * 100:.1f}")
            vis.train()
            print(f"step {s} " + ", ".join(r) + f", train shape {hit / max(1, seen) * 100:.1f}"
                  f" ({time.time() - t0:.0f} s)", flush=True)
            hit = seen = 0
            torch.save({"vision": vis.state_dict(), "head": head.state_dict(), "step": s}, out)
        if s == steps:
            break
        nf = int(rng.binomial(32, first_share)) if first else 0
        xs, ws, ps, Ss, Cs = [], [], [], [], []
        for k, nb in ((0, 32 - nf), (len(pools) - 1, nf)):
            px, I, S, C, G, by_img = pools[k]
            if nb == 0:
                continue
            b = rng.choice(len(px), nb, replace=False)
            ob = torch.tensor([n for i in b for n in by_img[i]])
            pos = [int(np.nonzero(b == int(i))[0][0]) for i in I[ob]]
            x, geo = px[b], G[ob]
            if k > 0:  # first world: each picture moved, its objects with it
                dxy = [tuple(int(v) for v in rng.integers(-max_move, max_move + 1, 2)) for _ in b]
                x, geo = move(x, geo, pos, dxy)
            ps.append(torch.tensor(pos) + sum(len(v) for v in xs))
            xs.append(x); ws.append(weights(geo, g)); Ss.append(S[ob]); Cs.append(C[ob])
        x, w = dihedral(torch.cat(xs), torch.cat(ws), int(rng.integers(8)), g)
        f = vis(M.to_pixels(x))
        lo = head(torch.einsum("np,npd->nd", w, f[torch.cat(ps)]))
        for gr in opt.param_groups:
            gr["lr"] = lr * min(1, (s + 1 - start) / 50)
        S_, C_ = torch.cat(Ss), torch.cat(Cs)
        loss = F.cross_entropy(lo[:, :7], S_) + F.cross_entropy(lo[:, 7:], C_)
        opt.zero_grad(); loss.backward(); opt.step()
        hit += int((lo[:, :7].argmax(1) == S_).sum()); seen += len(S_)


if __name__ != "__main__":
    pass
elif sys.argv[1] == "shift":
    train_shift(sys.argv[2], int(sys.argv[3]))
elif sys.argv[1] == "sizes":
    sizes(sys.argv[2])
elif sys.argv[1] == "moved":
    moved(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 200)
elif sys.argv[1] == "span":
    span()
elif sys.argv[1] == "pool":
    import argparse
    ap = argparse.ArgumentParser(prog="world_probe.py pool")
    ap.add_argument("src"); ap.add_argument("steps", type=int); ap.add_argument("out")
    ap.add_argument("extra", nargs="*"); ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--resume", default=None, help="a checkpoint this mode wrote")
    ap.add_argument("--first", action="append", default=[],
                    help="a data.py split whose first-world pictures join the batches, moved")
    ap.add_argument("--first-share", type=float, default=0.33)
    ap.add_argument("--max-move", type=int, default=8)
    a = ap.parse_intermixed_args(sys.argv[2:])
    pool_train(a.src, a.steps, a.out, a.extra, a.lr, a.resume, a.first, a.first_share,
               a.max_move)
elif sys.argv[1] == "frozen":
    frozen(sys.argv[2])
else:
    train(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
