"""A lead for mnist-1 (issue 13), measured and not taken: PatchCore's nearest neighbour beside the
one-class recipe. For each test image, each position of the stride-16 level (a 4 x 4 grid at 64 px)
is compared with the training images' features at the same position; the distance to the nearest
one, the maximum (or mean) over positions, is a score alone or added to the recipe's image score
(both standardised on the held-out normals). A second lead (fourteenth session), measured the same
way: one image-level Gaussian of the deepest features averaged over positions (320 channels; the
statistics' own FeatureGaussian, kind "shared", on a 1 x 1 grid: a full covariance shrunk by 0.01, or
by channels / images where that is more), its squared Mahalanobis distance over the channel count as
a score, alone or added to the recipe's (weights GLOBAL_WEIGHTS). Image AUROC per set and seed, PatchCore's row from benchmarks/results/suite.json
beside it. Writes benchmarks/results/oneclass_knn.json.

    python benchmarks/oneclass_knn.py [--sets mnist-0,...,fashion-mnist-2] [--seeds 0,1] [--models DIR]

--models DIR: the one-class decoders `benchmarks/suite.py --models DIR` saved (`SET-defaults-sS.pt`),
else each is trained here with the suite's one-class settings (8-11 s a set on a 2-core CPU).
"""

import argparse
import json
from pathlib import Path

from common import SUITE_JSON, table, write_json
from suite import ONECLASS
from suite_data import SIZE_ONECLASS, check_names, load_set

ap = argparse.ArgumentParser()
ap.add_argument("--sets", default="mnist-0,mnist-1,mnist-2,fashion-mnist-0,fashion-mnist-1,fashion-mnist-2")
ap.add_argument("--seeds", default="0,1")
ap.add_argument("--models", help="folder of saved one-class decoders (suite.py --models)")
ap.add_argument("--name", default="oneclass_knn.json", help="results file in benchmarks/results/")
args = ap.parse_args()
WEIGHTS = (0.5, 1.0)
GLOBAL_WEIGHTS = (0.1, 0.25, 0.5)


def model_for(name: str, seed: int, d):
    from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from hfr_edge.config import ModelConfig, NormStats, TrainConfig
    from hfr_edge.train import fit

    kept = Path(args.models) / f"{name}-defaults-s{seed}.pt" if args.models else None
    if kept is not None and kept.is_file():
        ck = load_checkpoint(kept)
        return model_from_checkpoint(ck, str(kept)), NormStats.from_dict(ck["norm"])
    cfg = ModelConfig(**{"image_size": SIZE_ONECLASS, "score": "mean", **ONECLASS["model"]})
    model, stats, summary = fit(d.x_train, d.x_hold, cfg, TrainConfig(**ONECLASS["train"], seed=seed), progress=False)
    if kept is not None:
        save_checkpoint(kept, model, stats, summary)
    return model, stats


def nearest(q, bank, chunk: int = 500):
    """q (P, M, C), bank (P, N, C) -> (P, M): each query's distance to its position's nearest."""
    import torch

    return torch.cat([torch.cdist(q[:, i:i + chunk], bank).min(-1).values for i in range(0, q.shape[1], chunk)], 1)


def one(name: str, seed: int) -> dict:
    import torch

    from hfr_edge.metrics import auroc
    from hfr_edge.model import DeployModel, FeatureGaussian

    d = load_set(name, seed, size=SIZE_ONECLASS)
    model, stats = model_for(name, seed, d)
    deploy = DeployModel(model, stats).eval()

    def run(x, f):
        with torch.inference_mode():
            return torch.cat([f(torch.from_numpy(x[i:i + 256])) for i in range(0, len(x), 256)])

    recipe, recipe_h = (run(x, lambda b: deploy(b)[1]).numpy() for x in (d.x_test, d.x_hold))
    level = lambda b: model.encode(b)[0][2]  # noqa: E731 - the stride-16 level
    ftr, fte, fho = (run(x, level) for x in (d.x_train, d.x_test, d.x_hold))
    pos = lambda f: f.permute(2, 3, 0, 1).reshape(f.shape[2] * f.shape[3], f.shape[0], f.shape[1])  # noqa: E731
    bank = pos(ftr)
    dte, dho = nearest(pos(fte), bank), nearest(pos(fho), bank)
    z = lambda v, ref: (v - ref.mean()) / ref.std()  # noqa: E731
    row = {"set": name, "seed": seed, "recipe": auroc(d.labels, recipe)}
    for agg in ("max", "mean"):
        s = (dte.max(0).values if agg == "max" else dte.mean(0)).numpy()
        sh = (dho.max(0).values if agg == "max" else dho.mean(0)).numpy()
        row[f"nn_{agg}"] = auroc(d.labels, s)
        for w in WEIGHTS:
            row[f"recipe_nn_{agg}_{w:g}"] = auroc(d.labels, z(recipe, recipe_h) + w * z(s, sh))
    pooled = lambda b: model.encode(b)[1].mean((2, 3), keepdim=True)  # noqa: E731 - the deepest level, averaged
    gtr = run(d.x_train, pooled)
    g = FeatureGaussian([gtr.shape[1]], [(1, 1)], "shared")  # the statistics' own fit, on a 1 x 1 grid
    g.fit([gtr])
    gte, gho = (run(x, lambda b: g([pooled(b)])[0].flatten()).numpy() for x in (d.x_test, d.x_hold))
    row["global"] = auroc(d.labels, gte)
    for w in GLOBAL_WEIGHTS:
        row[f"recipe_global_{w:g}"] = auroc(d.labels, z(recipe, recipe_h) + w * z(gte, gho))
    return row


def main() -> None:
    names = check_names(args.sets.split(","))
    rows = [one(n, int(s)) for n in names for s in args.seeds.split(",")]
    suite = json.loads(SUITE_JSON.read_text()) if SUITE_JSON.is_file() else {}
    pc = {(r["set"], r["seed"]): r["image_auroc"] for r in suite.get("rows", []) if r.get("method") == "patchcore"}
    for r in rows:
        r["patchcore"] = pc.get((r["set"], r["seed"]))
    keys = ["recipe", "nn_max", *(f"recipe_nn_max_{w:g}" for w in WEIGHTS), "recipe_nn_mean_1", "global",
            *(f"recipe_global_{w:g}" for w in GLOBAL_WEIGHTS), "patchcore"]
    print(table(rows, [("set", "set", None), ("seed", "seed", None), *((k, k.replace("_", " "), "{:.4f}") for k in keys)]))
    write_json(args.name, {"models": args.models, "rows": rows})


if __name__ == "__main__":
    main()
