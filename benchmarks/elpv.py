"""ELPV solar cells (grayscale electroluminescence, image-level labels): a harder check that the
product's defaults generalise beyond MVTec bottle. `pip install elpv-dataset` (offline wheel).

Protocol: normal = defect probability 0, anomalous = probability >= 2/3 (the uncertain 1/3 cells
are left out); train on --train normal cells (evenly sampled), test on the other normals and all
anomalous cells; image AUROC of the checkpoint with the product's defaults (overridable).

    python benchmarks/elpv.py [--train 400] [--epochs N] [--image-size S] [--level-weights a,b,c]
        [--decoder-convs N] [--tap16 early|late] [--seed N]
"""

import argparse
import time

import numpy as np

from common import table, write_json

ap = argparse.ArgumentParser()
ap.add_argument("--train", type=int, default=400)
ap.add_argument("--epochs", type=int, default=None)
ap.add_argument("--image-size", type=int, default=None)
ap.add_argument("--level-weights", default=None)
ap.add_argument("--decoder-convs", type=int, default=None)
ap.add_argument("--tap16", default=None, help="early | late (default: the product's)")
ap.add_argument("--seed", type=int, default=0, help="decoder initialisation and batch order")
ap.add_argument("--tag", default="")
ap.add_argument("--sweep", default="1,1,1;0.25,1,1;0,1,1",
                help="level weightings to compare on the same trained decoder (';'-separated; "
                     "w4,w8,w16@sigma also sets the smoothing)")
args = ap.parse_args()

try:
    from elpv_dataset.utils import load_dataset
except ImportError:
    print("skipped: pip install elpv-dataset")
    raise SystemExit(0)

import torch  # noqa: E402

from hfr_edge.config import ModelConfig, TrainConfig  # noqa: E402
from hfr_edge.metrics import auroc  # noqa: E402
from hfr_edge.model import AnomalyMap, DeployModel  # noqa: E402
from hfr_edge.base.images import preprocess  # noqa: E402
from hfr_edge.train import fit, parse_triple  # noqa: E402

images, probs, types = load_dataset()
normal = np.where(probs == 0)[0]
anom = np.where(probs >= 2 / 3)[0]
step = max(1, len(normal) // args.train)
tr = normal[::step][: args.train]
test_norm = np.setdiff1d(normal, tr)
hold = test_norm[::10][:40]  # held-out normals for the normalisation statistics
test_norm = np.setdiff1d(test_norm, hold)
mkw = {}
if args.image_size:
    mkw["image_size"] = args.image_size
if args.level_weights:
    mkw["level_weights"] = mkw["stats_level_weights"] = parse_triple(args.level_weights, "--level-weights", float)
    mkw["aligned_level_weights"] = None  # the weights asked for, whatever the alignment
if args.decoder_convs is not None:
    mkw["decoder_convs"] = args.decoder_convs
if args.tap16:
    mkw["tap16"] = args.tap16
mcfg = ModelConfig(**mkw)
tcfg = TrainConfig(seed=args.seed, **({"epochs": args.epochs} if args.epochs else {}))
S = mcfg.image_size


def parse_sweep(item: str):
    w, _, sigma = item.partition("@")
    return parse_triple(w, "--sweep", float), float(sigma) if sigma else mcfg.sigma


sweeps = [parse_sweep(w) for w in args.sweep.split(";") if w]  # parsed before the minutes of training
x = preprocess([images[i] for i in tr], S)
xh = preprocess([images[i] for i in hold], S)
t0 = time.time()
model, stats, summary = fit(x, xh, mcfg, tcfg, progress=False)
train_s = time.time() - t0

module = DeployModel(model, stats).eval()
test = np.concatenate([test_norm, anom])
labels = np.r_[np.zeros(len(test_norm), int), np.ones(len(anom), int)]
maps_by_w = {w: AnomalyMap(S, w[1], w[0]) for w in sweeps}
scores, swept = [], {w: [] for w in sweeps}
with torch.inference_mode():
    for i in range(0, len(test), 32):
        x = torch.from_numpy(preprocess([images[j] for j in test[i:i + 32]], S))
        _, s = module(x)
        scores.append(s.numpy())
        enc, dec = model(x)
        for w, am in maps_by_w.items():
            swept[w].append(am(enc, dec)[1].numpy())
scores = np.concatenate(scores)
sweep_rows = [{"level_weights": list(w), "sigma": sg, "image_auroc": auroc(labels, np.concatenate(v))}
              for (w, sg), v in swept.items()]
print(table(sweep_rows, [("level_weights", "level weights", None), ("sigma", "sigma", None),
                         ("image_auroc", "image AUROC", "{:.4f}")]))
row = {"image_auroc": auroc(labels, scores), "train_images": len(tr), "test_normal": len(test_norm),
       "test_anomalous": len(anom), "epochs": tcfg.epochs, "image_size": S, "train_s": train_s,
       "level_weights": list(mcfg.level_weights), "decoder_convs": mcfg.decoder_convs, "tap16": mcfg.tap16,
       "flagged_normal": float(np.mean(scores[labels == 0] >= 0.5)),
       "flagged_anomalous": float(np.mean(scores[labels == 1] >= 0.5))}
print(table([row], [("image_auroc", "image AUROC", "{:.4f}"), ("train_images", "train", None),
                    ("test_normal", "test good", None), ("test_anomalous", "test defect", None),
                    ("epochs", "epochs", None), ("image_size", "size", None), ("train_s", "train s", "{:.0f}")]))
write_json(f"elpv{args.tag}.json", {"result": row, "level_weight_sweep": sweep_rows, "settings": vars(args)})
