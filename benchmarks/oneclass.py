"""One-class protocol on MNIST / Fashion-MNIST: for each class c, train on the training images of
class c only (as `hfr-edge train --normal-class c`), test on the whole test set with c normal.
Prints per-class image AUROC and the mean; writes JSON.

    python benchmarks/oneclass.py [--dataset mnist|fashion-mnist|both] [--classes 0,1,2] [--epochs N]
        [--image-size S] [--max-train N] [--score mean|max] [--level-weights 0,0,1]
        [--decoder-widths 128,64,32] [--bottleneck 16] [--tap16 early|late]

The defaults are the settings this task measured best for semantic one-class detection (the same as
`hfr-edge train DATA --normal-class C --image-size 64 --epochs 8 --decoder-widths 128,64,32
--bottleneck 16 --level-weights 0,0,1`, whose --score is `mean` for these formats). What moved
what is in docs/benchmarks.md.
"""

import argparse
import time

import numpy as np

from common import DATASETS, need, table, write_json

from hfr_edge.config import ModelConfig, TrainConfig  # noqa: E402
from hfr_edge.data import load_items, open_dataset  # noqa: E402
from hfr_edge.evaluate import score_items  # noqa: E402
from hfr_edge.metrics import auroc  # noqa: E402
from hfr_edge.train import fit, parse_triple, split_holdout  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--dataset", default="both")
ap.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
ap.add_argument("--epochs", type=int, default=8)
ap.add_argument("--image-size", type=int, default=64)
ap.add_argument("--max-train", type=int, default=1000, help="training images per class (evenly sampled)")
ap.add_argument("--max-test", type=int, default=10000)
ap.add_argument("--score", default="mean", help="image score from the map: mean | max")
ap.add_argument("--level-weights", default="0,0,1", help="weights of the stride 4, 8, 16 levels in the map")
ap.add_argument("--decoder-widths", default="128,64,32")
ap.add_argument("--bottleneck", type=int, default=16)
ap.add_argument("--tap16", default=ModelConfig.tap16, help="stride-16 level: early | late")
ap.add_argument("--tag", default="")
args = ap.parse_args()


def run_class(name: str, c: str) -> dict:
    import torch

    from hfr_edge.model import DeployModel

    ds = open_dataset(str(DATASETS / name), name, normal_class=c)
    items = ds.train[:: max(1, len(ds.train) // args.max_train)][: args.max_train]
    tr, ho = split_holdout(len(items), 0.1, 0)
    x, _, _, _ = load_items([items[i] for i in tr], args.image_size)
    xh, _, _, _ = load_items([items[i] for i in ho], args.image_size)
    t0 = time.time()
    mcfg = ModelConfig(image_size=args.image_size, score=args.score, bottleneck=args.bottleneck, tap16=args.tap16,
                       level_weights=parse_triple(args.level_weights, "--level-weights", float),
                       stats_level_weights=None, aligned_level_weights=None,  # the statistics at --level-weights
                       decoder_widths=parse_triple(args.decoder_widths, "--decoder-widths", int))
    model, stats, summary = fit(x, xh, mcfg, TrainConfig(epochs=args.epochs), progress=False)
    train_s = time.time() - t0
    module = DeployModel(model, stats).eval()

    def predict(b):
        with torch.inference_mode():
            m, s = module(torch.from_numpy(b))
        return m.numpy()[:, 0], s.numpy()

    test = ds.test[:: max(1, len(ds.test) // args.max_test)]
    r = score_items(predict, test, args.image_size, with_masks=False, keep_maps=False)
    return {"dataset": name, "class": ds.normal_class, "image_auroc": auroc(r.labels, r.scores),
            "train_images": len(tr), "epochs": args.epochs, "train_s": train_s, "test_images": len(r.labels)}


datasets = ["mnist", "fashion-mnist"] if args.dataset == "both" else [args.dataset]
rows = []
for name in datasets:
    need(DATASETS / name, name)
    for c in args.classes.split(","):
        rows.append(run_class(name, c))
        print(table(rows[-1:], [("dataset", "dataset", None), ("class", "class", None),
                                ("image_auroc", "AUROC", "{:.4f}"), ("train_s", "train s", "{:.0f}")]), flush=True)
    sub = [r["image_auroc"] for r in rows if r["dataset"] == name]
    rows.append({"dataset": name, "class": "mean", "image_auroc": float(np.mean(sub))})
cols = [("dataset", "dataset", None), ("class", "class", None), ("image_auroc", "image AUROC", "{:.4f}"),
        ("train_images", "train imgs", None), ("epochs", "epochs", None), ("train_s", "train s", "{:.0f}")]
print(table(rows, cols))
write_json(f"oneclass{args.tag}.json", {"rows": rows, "settings": vars(args)})
