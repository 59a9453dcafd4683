"""Squash or letterbox: how a region that is not square becomes the model input, measured as a user
runs it (`hfr-edge train DATA --aspect A --seed S`, then `hfr-edge eval`), on images of several
aspect ratios (the texture suite's crops: square, 4:3 and 3:4) and on one part through one region
of interest of one aspect ratio (MVTec AD bottle's 512 px frames: `bottle-roi` 3:2, `--roi
0,85,512,342`; `bottle-roi-16x9`, `--roi 0,112,512,288`).

    python benchmarks/aspect.py [--sets gravel,brick,grass,bottle-roi,bottle-roi-16x9] [--seeds 0]
                                [--aspects letterbox,squash]

Prints image / pixel AUROC / AUPRO per set, aspect and seed with what training read (alignment,
kind, Gaussians), and merges the rows into benchmarks/results/aspect.json (by set, aspect and seed).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATASETS, RESULTS, machine, table, write_json

ROIS = {"bottle-roi": "0,85,512,342", "bottle-roi-16x9": "0,112,512,288"}  # bottle's 512 px frames: middle bands
COLS = [("set", "set", None), ("aspect", "aspect", None), ("seed", "seed", None),
        ("image_auroc", "image AUROC", "{:.4f}"), ("pixel_auroc", "pixel AUROC", "{:.4f}"), ("aupro", "AUPRO", "{:.4f}"),
        ("alignment", "alignment", "{:.3g}"), ("kind", "read as", None), ("components", "Gaussians", None),
        ("train_s", "train s", "{:.0f}")]


def where(name: str):
    """(data folder, extra train/eval options) of a set, or None where its data is absent."""
    if name in ROIS:
        path = DATASETS / "mvtec_ad" / "bottle"
        return (path, ["--roi", ROIS[name]]) if path.is_dir() else None
    from textures import make_textures

    return make_textures()[name], []


def hfr(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "hfr_edge", *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"hfr-edge {' '.join(map(str, args[:2]))}: {r.stderr.strip().splitlines()[-1]}")
    return r


def one(name: str, aspect: str, seed: int, work: Path) -> dict:
    import torch

    data, extra = where(name)
    ckpt, out = work / f"{name}-{aspect}-s{seed}.pt", work / f"{name}-{aspect}-s{seed}.json"
    t0 = time.time()
    hfr("train", data, "-o", ckpt, "--aspect", aspect, "--seed", seed, *extra)
    train_s = time.time() - t0
    hfr("eval", ckpt, data, "--json", out)  # the checkpoint carries its view (ROI and aspect)
    res = json.loads(out.read_text())
    chosen = torch.load(ckpt, weights_only=True)["train"]["statistics"]
    return {"set": name, "aspect": aspect, "seed": seed, **{k: res[k] for k in ("image_auroc", "pixel_auroc", "aupro")},
            "alignment": chosen.get("alignment_ratio"), "kind": chosen.get("kind"),
            "components": chosen.get("stats_components"), "train_s": round(train_s, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="gravel,brick,grass," + ",".join(ROIS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--aspects", default="letterbox,squash")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hfr-aspect-") as tmp:
        for name in args.sets.split(","):
            if where(name) is None:
                print(f"skipped: {name} (its data is absent; set HFR_EDGE_DATASETS)", file=sys.stderr)
                continue
            for seed in (int(s) for s in args.seeds.split(",")):
                for aspect in args.aspects.split(","):
                    rows.append(one(name, aspect, seed, Path(tmp)))
                    print(table(rows[-1:], COLS), file=sys.stderr, flush=True)
    key = lambda r: (r["set"], r["aspect"], r["seed"])  # noqa: E731
    old = json.loads((RESULTS / "aspect.json").read_text())["rows"] if (RESULTS / "aspect.json").is_file() else []
    new = {key(r) for r in rows}
    print(table(rows, COLS))
    write_json("aspect.json", {"machine": machine(), "rois": ROIS, "rows": [r for r in old if key(r) not in new] + rows})


if __name__ == "__main__":
    main()
