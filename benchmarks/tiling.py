"""Tiling on MVTec AD bottle: does a 2x2-tiled model find the small defects (broken_small,
contamination) that the same model settings at full-frame 256x256 miss? Trains both (as `hfr-edge
train`, with and without --tiles), evaluates each (as `hfr-edge eval`), pixel metrics judged at one
common resolution (--map-size, default 512: what 2x2 tiles of 256 resolve; the untiled map is
upsampled to it), also at the untiled model's own 256, and the untiled model cut into tiles at
evaluation only (the same weights, tiles it never saw). Prints a table, writes JSON.

    python benchmarks/tiling.py [--epochs 8] [--tiles 2x2] [--overlap 0.25] [--map-size 512] [--tag T] [--reuse]
"""

import argparse
import subprocess
import sys
import time

from common import DATASETS, RESULTS, need, table, write_json

DEFECTS = ("broken_small", "contamination")

ap = argparse.ArgumentParser()
ap.add_argument("--epochs", type=int, default=8, help="modest: the machine is shared (README figures use 30)")
ap.add_argument("--image-size", type=int, default=256)
ap.add_argument("--tiles", default="2x2")
ap.add_argument("--overlap", type=float, default=0.25)
ap.add_argument("--map-size", type=int, default=512, help="pixel metrics judged at this resolution for every row")
ap.add_argument("--tag", default="")
ap.add_argument("--reuse", action="store_true", help="keep checkpoints trained by an earlier run with this tag")
args = ap.parse_args()

data = need(DATASETS / "mvtec_ad" / "bottle", "MVTec AD bottle")
RESULTS.mkdir(parents=True, exist_ok=True)


def train(name: str, extra: list) -> tuple:
    ckpt = RESULTS / f"tiling_{name}{args.tag}.pt"
    if args.reuse and ckpt.is_file():
        return ckpt, None
    cmd = [sys.executable, "-m", "hfr_edge", "train", str(data), "-o", str(ckpt), "--epochs", str(args.epochs),
           "--image-size", str(args.image_size), *extra]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return ckpt, time.time() - t0


from hfr_edge.evaluate import evaluate  # noqa: E402

untiled, t_untiled = train("untiled", [])
tiled, t_tiled = train("tiled", ["--tiles", args.tiles, "--overlap", str(args.overlap)])
M = (args.map_size, args.map_size)
runs = [
    ("untiled, full frame", untiled, None, (args.image_size, args.image_size), t_untiled),
    ("untiled, full frame", untiled, None, M, t_untiled),
    (f"untiled weights, {args.tiles} tiles at eval", untiled, args.tiles, M, None),
    (f"tiled {args.tiles} (trained on tiles)", tiled, None, M, t_tiled),
]
rows, reports = [], {}
for label, ckpt, tiles, hw, train_s in runs:
    t0 = time.time()
    rep = evaluate(str(ckpt), str(data), provider="cpu", map_hw=hw, tiles=tiles)
    key = f"{label} @{hw[0]}"
    reports[key] = {k: rep.get(k) for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "per_defect", "view",
                                            "map_size", "ms_per_image")}
    reports[key]["train_s"] = train_s
    for name in ("all",) + DEFECTS:
        m = rep if name == "all" else rep["per_defect"][name]
        rows.append({"run": label, "map": f"{hw[0]}x{hw[1]}", "set": name, "image_auroc": m["image_auroc"],
                     "pixel_auroc": m["pixel_auroc"], "aupro": m["aupro"],
                     "ms": rep["ms_per_image"] if name == "all" else None})
    print(f"evaluated {key} in {time.time() - t0:.0f} s", file=sys.stderr)

print(table(rows, [("run", "run", None), ("map", "map", None), ("set", "defects", None),
                   ("image_auroc", "image AUROC", "{:.4f}"), ("pixel_auroc", "pixel AUROC", "{:.4f}"),
                   ("aupro", "AUPRO", "{:.4f}"), ("ms", "ms/image", "{:.1f}")]))
write_json(f"tiling{args.tag}.json", {"settings": vars(args), "train_s": {"untiled": t_untiled, "tiled": t_tiled},
                                      "rows": rows, "reports": reports})
