"""Where a one-class set's lost image AUROC lies (issue 13: mnist-1, the one set where PatchCore
stays 0.0002 ahead): on the suite's trained decoders, how much of 1 - AUROC each test image carries
(for a normal image: the share of anomalies scored below it, over the normals; for an anomaly: the
share of normals above it, over the anomalies; either side sums to 1 - AUROC), the digits of the
anomalies that cost most, and whether fitting the statistics on every normal image the peers fit on
(training + held-out, 1,000) instead of the training 900 moves it.

    python benchmarks/suite.py --sets mnist-1 --seeds 0,1 --models DIR      # trains and keeps the decoders
    python benchmarks/oneclass_errors.py --sets mnist-1 --seeds 0,1 --models DIR [--sheet out.png]
"""

import argparse
import copy
from pathlib import Path

import numpy as np

from common import DATASETS, need, table, write_json

ap = argparse.ArgumentParser()
ap.add_argument("--sets", default="mnist-1")
ap.add_argument("--seeds", default="0,1")
ap.add_argument("--models", required=True, help="suite.py --models DIR: SET-defaults-sSEED.pt")
ap.add_argument("--top", type=int, default=8, help="images listed per side")
ap.add_argument("--sheet", help="PNG: the top normals (first row) and anomalies (second row) of the first set and seed")
ap.add_argument("--name", default="oneclass_errors.json", help="results file in benchmarks/results/")
args = ap.parse_args()
need(DATASETS / "mnist", "MNIST")


def scores_of(model, stats, x) -> np.ndarray:
    import torch

    from hfr_edge.model import DeployModel

    module, out = DeployModel(model, stats).eval(), []
    with torch.inference_mode():
        for i in range(0, len(x), 128):
            out.append(module(torch.from_numpy(x[i:i + 128]))[1].numpy())
    return np.concatenate(out)


def refit_on(model, x_fit, x_ref):
    """The model's statistics fitted on x_fit and its map normalised on x_ref, as training does."""
    import torch

    from hfr_edge.train import _encode_all, fit_statistics, reference_stats

    m, cpu = copy.deepcopy(model), torch.device("cpu")
    fit_statistics(m, _encode_all(m, x_fit, cpu)[0], x_ref, cpu, held_out=True)
    return m, reference_stats(m, m.cfg, x_ref, cpu)


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint
    from hfr_edge.config import NormStats
    from suite_data import load_set

    rows = []
    for name in args.sets.split(","):
        for seed in map(int, args.seeds.split(",")):
            path = Path(args.models) / f"{name}-defaults-s{seed}.pt"
            if not path.is_file():
                raise SystemExit(f"{path}: not found; train it with `python benchmarks/suite.py --sets {name} "
                                 f"--seeds {seed} --models {args.models}`")
            ckpt = load_checkpoint(path)
            model = model_from_checkpoint(ckpt, str(path))  # its statistics fitted on the training 900
            d = load_set(name, seed, size=model.cfg.image_size)
            y, defects = d.labels, np.array(d.defects)
            s = scores_of(model, NormStats.from_dict(ckpt["norm"]), d.x_test)
            neg, pos = s[y == 0], s[y == 1]
            normal_cost = np.array([(pos < v).sum() for v in neg]) / (len(neg) * len(pos))
            anomaly_cost = np.array([(neg > v).sum() for v in pos]) / (len(neg) * len(pos))
            top_n, top_a = np.argsort(-normal_cost)[:args.top], np.argsort(-anomaly_cost)[:args.top]
            m1000, st1000 = refit_on(model, np.concatenate([d.x_train, d.x_hold]), d.x_hold)
            rows.append({"set": name, "seed": seed, "auroc": float(roc_auc_score(y, s)), "lost": float(normal_cost.sum()),
                         "top2_normals": float(normal_cost[top_n[:2]].sum()),
                         "top_normals": [round(float(v), 6) for v in normal_cost[top_n]],
                         "top_anomalies": [[str(defects[y == 1][i]), round(float(anomaly_cost[i]), 6)] for i in top_a],
                         "auroc_stats_1000": float(roc_auc_score(y, scores_of(m1000, st1000, d.x_test)))})
            print(f"{name} seed {seed}: the top {args.top} anomalies' digits "
                  f"{' '.join(a for a, _ in rows[-1]['top_anomalies'])}")
            if args.sheet and len(rows) == 1:
                from PIL import Image

                idx = (np.where(y == 0)[0][top_n], np.where(y == 1)[0][top_a])
                sheet = np.concatenate([np.concatenate([d.x_test[i].transpose(1, 2, 0) for i in r], 1) for r in idx])
                Image.fromarray((sheet * 255).clip(0, 255).astype(np.uint8)).save(args.sheet)
    print(table(rows, [("set", "set", None), ("seed", "seed", None), ("auroc", "image AUROC", "{:.5f}"),
                       ("lost", "1 - AUROC", "{:.5f}"), ("top2_normals", "of it: top 2 normals", "{:.5f}"),
                       ("auroc_stats_1000", "statistics on 1,000", "{:.5f}")]))
    write_json(args.name, {"models": "suite.py --models (the one-class recipe)", "rows": rows})


if __name__ == "__main__":
    main()
