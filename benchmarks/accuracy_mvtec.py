"""MVTec AD accuracy with the product's defaults: train (as `hfr-edge train`), evaluate the
checkpoint (as `hfr-edge eval`), print a table, write JSON. Default: the bottle category.

    python benchmarks/accuracy_mvtec.py [--category bottle] [--epochs N] [--image-size S] [--tap16 early|late]
        [--tag T]
Targets (issue 2): image AUROC >= 0.999, pixel AUROC >= 0.991, AUPRO >= 0.971, training <= 10 min.
"""

import argparse
import subprocess
import sys
import time

from common import DATASETS, RESULTS, need, table, write_json

ap = argparse.ArgumentParser()
ap.add_argument("--category", default="bottle")
ap.add_argument("--epochs", type=int, default=None, help="default: the product's")
ap.add_argument("--image-size", type=int, default=None)
ap.add_argument("--tap16", default=None, help="early | late (default: the product's)")
ap.add_argument("--tag", default="", help="suffix of the result files")
args = ap.parse_args()

data = need(DATASETS / "mvtec_ad" / args.category, f"MVTec AD {args.category}")
RESULTS.mkdir(parents=True, exist_ok=True)
ckpt = RESULTS / f"{args.category}{args.tag}.pt"
cmd = [sys.executable, "-m", "hfr_edge", "train", str(data), "-o", str(ckpt)]
if args.epochs:
    cmd += ["--epochs", str(args.epochs)]
if args.image_size:
    cmd += ["--image-size", str(args.image_size)]
if args.tap16:
    cmd += ["--tap16", args.tap16]
t0 = time.time()
subprocess.run(cmd, check=True)
train_s = time.time() - t0
report = RESULTS / f"{args.category}{args.tag}.eval.json"
subprocess.run([sys.executable, "-m", "hfr_edge", "eval", str(ckpt), str(data), "--json", str(report)], check=True)

import json  # noqa: E402

rep = json.loads(report.read_text())
import torch  # noqa: E402

train = torch.load(ckpt, weights_only=True)["train"]
row = {"category": args.category, "image_auroc": rep["image_auroc"], "pixel_auroc": rep["pixel_auroc"],
       "aupro": rep["aupro"], "f1_max": rep["f1_max"], "epochs": train["epochs"], "train_s": train_s,
       "ms_per_image": rep["ms_per_image"]}
rows = [row] + [{"category": f"  {k}", **v} for k, v in sorted(rep["per_defect"].items())]
print(table(rows, [("category", "category", None), ("image_auroc", "image AUROC", "{:.4f}"),
                   ("pixel_auroc", "pixel AUROC", "{:.4f}"), ("aupro", "AUPRO", "{:.4f}"),
                   ("f1_max", "F1-max", "{:.4f}"), ("epochs", "epochs", None),
                   ("train_s", "train s (wall, incl. loading)", "{:.0f}")]))
targets = {"image_auroc": 0.999, "pixel_auroc": 0.991, "aupro": 0.971}
ok = {k: rep[k] is not None and rep[k] >= v for k, v in targets.items()}
ok["train_10min"] = train_s <= 600
print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in ok.items()))
write_json(f"accuracy_{args.category}{args.tag}.json", {"result": row, "per_defect": rep["per_defect"], "targets_met": ok,
                                              "train_summary": {k: train[k] for k in ("epochs", "final_loss", "train_seconds", "encode_seconds")}})
