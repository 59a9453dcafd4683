"""What fusing the normal features' statistics with the residual does, on one trained decoder per set:
the residual alone (as trained: `rawrec`; each level scaled to 1 on held-out normals: `rec`), the
per-level Gaussian distance alone with a shared mean (`g0`) or a mean per position (`g1`), and their
sums with weights 0.5 / 1 / 2 (`_lw`: the distance weighted by the map's level weights too, as the
product does). One decoder, many maps: the differences are the fusion's, not training noise.

    python benchmarks/fusion_sweep.py SET [--epochs N] [--seed S]
    SET: bottle | elpv | tex-brick | tex-grass | tex-gravel | mnist-C | fashion-mnist-C

The texture sets come from benchmarks/textures.py (generated on first use). Writes
benchmarks/results/fusion_<SET>_s<seed>.json; prints one line per variant.
"""
import argparse, time, os
import numpy as np, torch, torch.nn.functional as F

from common import DATASETS, RESULTS, write_json
from hfr_edge.config import ModelConfig, TrainConfig
from hfr_edge.data import load_items, open_dataset
from hfr_edge.train import fit, split_holdout
from hfr_edge.model import cosine_residual, blur_matrix
from hfr_edge.metrics import auroc, pixel_metrics
from hfr_edge.checkpoint import save_checkpoint, load_checkpoint

ap = argparse.ArgumentParser()
ap.add_argument("set"); ap.add_argument("--epochs", type=int, default=30); ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--size", type=int, default=0); ap.add_argument("--tag", default="")
ap.add_argument("--cfg", default="")  # k=v,k=v ModelConfig overrides
args = ap.parse_args()
DS = str(DATASETS)
name = args.set
one_class = name.startswith(("mnist", "fashion"))
S = args.size or (64 if one_class else 256)
def load_set():
    if name == "bottle":
        ds = open_dataset(f"{DS}/mvtec_ad/bottle", "mvtec")
    elif name.startswith("tex-"):
        from textures import DEFAULT_OUT, make_textures
        ds = open_dataset(str(make_textures(DEFAULT_OUT)[name[4:]]), "mvtec")
    elif one_class:
        d, c = name.rsplit("-", 1)
        ds = open_dataset(f"{DS}/{d}", d, normal_class=c)
    elif name == "elpv":
        from elpv_dataset.utils import load_dataset
        from hfr_edge.base.images import preprocess
        images, probs, _ = load_dataset()
        normal = np.where(probs == 0)[0]; anom = np.where(probs >= 2 / 3)[0]
        step = max(1, len(normal) // 300); tr = normal[::step][:300]
        tn = np.setdiff1d(normal, tr); hold = tn[::10][:40]; tn = np.setdiff1d(tn, hold)
        test = np.concatenate([tn, anom])
        x = preprocess([images[i] for i in tr], S); xh = preprocess([images[i] for i in hold], S)
        xt = preprocess([images[i] for i in test], S)
        lab = np.r_[np.zeros(len(tn), int), np.ones(len(anom), int)]
        return x, xh, xt, lab, None
    items = ds.train
    if one_class:
        items = items[:: max(1, len(items) // 1000)][:1000]
    tr, ho = split_holdout(len(items), 0.1, 0)
    x, _, _, _ = load_items([items[i] for i in tr], S)
    xh, _, _, _ = load_items([items[i] for i in ho], S)
    test = ds.test[::5] if one_class else ds.test
    xt, m, kept, _ = load_items(test, S, with_masks=ds.has_masks)
    lab = np.array([it.label for it in kept])
    return x, xh, xt, lab, m
x, xh, xt, lab, masks = load_set()
print(name, x.shape, xh.shape, xt.shape, flush=True)
kw = {}
if one_class:
    kw = dict(score="mean", bottleneck=16, level_weights=(0, 0, 1), stats_level_weights=None,
              aligned_level_weights=None, decoder_widths=(128, 64, 32))
for kv in filter(None, args.cfg.split(",")):
    k, v = kv.split("=")
    kw[k] = type(getattr(ModelConfig, k))(v) if not isinstance(getattr(ModelConfig, k), tuple) else tuple(float(t) for t in v.split("/"))
mcfg = ModelConfig(image_size=S, **kw)
epochs = 8 if one_class else args.epochs
ck = str(RESULTS / f"fusion_{name}{args.tag}_s{args.seed}_e{epochs}.pt")  # reused when present (gitignored)
t0 = time.time()
if os.path.exists(ck):
    from hfr_edge.checkpoint import model_from_checkpoint
    model = model_from_checkpoint(load_checkpoint(ck))
else:
    model, stats, summ = fit(x, xh, mcfg, TrainConfig(epochs=epochs, seed=args.seed), progress=False)
    save_checkpoint(ck, model, stats, summ)
    print(f"trained {time.time()-t0:.0f}s loss {summ['final_loss']:.3f}", flush=True)
model.eval()
def feats(xx, bs=32):
    E, D = [[], [], []], [[], [], []]
    with torch.inference_mode():
        for i in range(0, len(xx), bs):
            e, d = model(torch.from_numpy(xx[i:i+bs]))
            for l in range(3):
                E[l].append(e[l]); D[l].append(d[l])
    return [torch.cat(v) for v in E], [torch.cat(v) for v in D]
Etr, Dtr = feats(x); Eh, Dh = feats(xh); Et, Dt = feats(xt)
def fit_gauss(Fl, pos_mean):
    N, C, h, w = Fl.shape
    mu = Fl.mean(0, keepdim=True) if pos_mean else Fl.mean((0, 2, 3), keepdim=True)
    R = (Fl - mu).permute(0, 2, 3, 1).reshape(-1, C).double()
    cov = R.T @ R / len(R)
    cov += 0.01 * torch.eye(C, dtype=torch.float64) * cov.diagonal().mean()
    L = torch.linalg.cholesky(torch.linalg.inv(cov))  # inv = L L^T
    return mu, L.T.float()  # z = L^T (f - mu)
def maha(Fl, g):
    mu, W = g
    z = torch.einsum("kc,nchw->nkhw", W, Fl - mu)
    return (z * z).mean(1, keepdim=True)
terms = {}
for pm in (0, 1):
    G = [fit_gauss(Etr[l], pm) for l in range(3)]
    terms[f"g{pm}"] = ([maha(Eh[l], G[l]) for l in range(3)], [maha(Et[l], G[l]) for l in range(3)])
terms["rawrec"] = ([cosine_residual(Eh[l], Dh[l]) for l in range(3)], [cosine_residual(Et[l], Dt[l]) for l in range(3)])
terms["rec"] = ([cosine_residual(Eh[l], Dh[l]) for l in range(3)], [cosine_residual(Et[l], Dt[l]) for l in range(3)])
B = blur_matrix(S, 4.0)
def combine(spec, which):  # spec: list of (term, level, weight); each term-level divided by its holdout mean
    out = None
    for t, l, w in spec:
        h, te = terms[t]
        src = h if which == 0 else te
        m = src[l] / (h[l].mean() if not t.startswith("raw") else 1.0)
        m = F.interpolate(m, size=(S, S), mode="bilinear", align_corners=False) * w
        out = m if out is None else out + m
    out = B @ out @ B.T
    return out
def evaluate(spec):
    m = combine(spec, 1)
    sc = (m.mean((1, 2, 3)) if one_class else m.amax((1, 2, 3))).numpy()
    r = {"img": auroc(lab, sc)}
    if masks is not None:
        p, a = pixel_metrics(masks, m[:, 0].numpy())
        r.update(pix=p, pro=a)
    return r
lw = [0.25, 1, 1] if not one_class else [0, 0, 1]
variants = {
    "rawrec": [("rawrec", l, lw[l]) for l in range(3)],
    "rec": [("rec", l, lw[l]) for l in range(3)],
    "g0": [("g0", l, 1) for l in range(3)],
    "g1": [("g1", l, 1) for l in range(3)],
    "g0_lw": [("g0", l, lw[l]) for l in range(3)],
    "g1_lw": [("g1", l, lw[l]) for l in range(3)],
}
for g in ("g0", "g1"):
    for lam in (0.5, 1, 2):
        variants[f"rec+{lam}{g}"] = variants["rec"] + [(g, l, lam * lw2) for l, lw2 in enumerate([1, 1, 1])]
        variants[f"rec+{lam}{g}_lw"] = variants["rec"] + [(g, l, lam * lw[l]) for l in range(3)]
res = {}
for k, spec in variants.items():
    res[k] = evaluate(spec)
    print(f"{name:14s} {k:16s} " + " ".join(f"{a}={b:.4f}" for a, b in res[k].items()), flush=True)
write_json(f"fusion_{name}{args.tag}_s{args.seed}.json", {"set": name, "epochs": epochs, "seed": args.seed,
                                                         "variants": res})
