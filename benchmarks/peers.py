"""The peers of issue 13: anomalib's PaDiM and PatchCore (1 % coreset) on the SAME EfficientNet-Lite0
ImageNet weights as hfr-edge, the same images and resolution (suite_data.py) and the same metrics
code (hfr_edge.metrics); fit time and ONNX Runtime p50 latency (batch 1, fp32) beside the accuracy.

    python benchmarks/peers.py [--sets bottle,elpv,...] [--seeds 0,1] [--methods padim,patchcore]
        [--textures DIR] [--reinstall]

anomalib runs in its own virtual environment, benchmarks/.peers-venv (created on first use by
peers_venv.py, about two minutes from PyPI), through peers_worker.py; this driver prepares the data
and scores what the worker returns. Rows go into benchmarks/results/suite.json (replacing the same
set/method/seed); the ONNX files of seed 0 stay in benchmarks/results/peers_onnx/ for suite.py's
interleaved latency. The seed drives PaDiM's random channel choice and PatchCore's coreset start
and random projection. Fit times are wall clock on a shared machine: noisy.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import RESULTS, merge_suite, p50_ms, table
from peers_venv import VENV, ensure, python as venv_python
from suite_data import SETS, check_names, load_set, score

WORKER = Path(__file__).resolve().parent / "peers_worker.py"
ONNX_DIR = RESULTS / "peers_onnx"
METHODS = ("padim", "patchcore")
COLS = [("set", "set", None), ("method", "method", None), ("seed", "seed", None),
        ("image_auroc", "image AUROC", "{:.4f}"), ("pixel_auroc", "pixel AUROC", "{:.4f}"),
        ("aupro", "AUPRO", "{:.4f}"), ("train_s", "fit s", "{:.1f}"), ("p50_ms", "p50 ms", "{:.1f}")]


def onnx_path(set_name: str, method: str, seed: int) -> Path:
    return ONNX_DIR / f"{set_name}-{method}-s{seed}.onnx"


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.round(x * 255.0).astype(np.uint8)  # the loaders' floats are uint8 / 255: exact


def slim(path: Path) -> None:
    """onnxslim, as hfr-edge's export applies it, so both graphs get the same simplification."""
    import onnx
    import onnxslim

    model = onnxslim.slim(onnx.load(str(path)))
    onnx.save(model, str(path))


def run_set(name: str, seeds, methods, textures, python: Path, tmp: Path) -> list:
    t0 = time.time()
    d = load_set(name, 0, textures=textures)
    data = tmp / "data.npz"
    np.savez(data, x_fit=to_uint8(np.concatenate([d.x_train, d.x_hold])), x_test=to_uint8(d.x_test),
             maps=int(d.masks is not None))
    print(f"{name}: {len(d.x_train) + len(d.x_hold)} fit / {len(d.x_test)} test images at {d.size} px "
          f"({time.time() - t0:.0f} s to load)", file=sys.stderr, flush=True)
    subprocess.run([str(python), str(WORKER), "run", str(data), ",".join(methods), ",".join(map(str, seeds)), str(tmp)],
                   check=True, env={**os.environ, "TQDM_DISABLE": "1"})  # no coreset progress bar
    rows = []
    for seed in seeds:
        for method in methods:
            r = np.load(tmp / f"{method}-s{seed}.npz")
            onnx_file = tmp / f"{method}-s{seed}.onnx"
            info = json.loads(str(r["info"]))
            row = {"set": name, "method": method, "seed": seed,
                   **score(d, r["scores"], r["maps"] if d.masks is not None else None),
                   "train_s": info["fit_s"]}
            slim(onnx_file)
            row["p50_ms"] = p50_ms({"m": onnx_file})["m"]
            row["fit_images"], row["image_size"] = info["fit_images"], info["image_size"]
            row["onnx_rel_diff"], row["coreset"] = info["onnx_rel_diff"], info["memory"]
            if seed == seeds[0]:
                ONNX_DIR.mkdir(parents=True, exist_ok=True)
                onnx_file.replace(onnx_path(name, method, seed))
            else:
                onnx_file.unlink()
            rows.append(row)
            print(table([row], COLS), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--textures", default=None, help="texture suite folder (default: textures.py's cache)")
    ap.add_argument("--reinstall", action="store_true", help="rebuild benchmarks/.peers-venv")
    args = ap.parse_args()
    sets = check_names(args.sets.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    if set(methods) - set(METHODS):
        raise SystemExit(f"--methods: choose from {', '.join(METHODS)}")
    t0 = time.time()
    check = ensure(args.reinstall)
    python = venv_python()
    print(f"peers venv {VENV} ready ({time.time() - t0:.0f} s)", file=sys.stderr)
    settings = {"peers": {"anomalib": "2.7.0", "backbone": "timm tf_efficientnet_lite0 with hfr-edge's weights",
                          "lite0_max_abs_diff": check["max_abs_diff"],
                          "padim": "layers blocks.1,2,4 (strides 4/8/16), 100 random channels",
                          "patchcore": "layers blocks.2,4 (strides 8/16), coreset 1 %, 9 neighbours",
                          "fit_images": "hfr-edge's training split plus its held-out normals"}}
    all_rows = []
    with tempfile.TemporaryDirectory(prefix="hfr-peers-") as tmp:
        for name in sets:
            rows = run_set(name, seeds, methods, args.textures, python, Path(tmp))
            merge_suite(rows, settings)  # after every set: a long run keeps what it finished
            all_rows += rows
    print(table(all_rows, COLS))


if __name__ == "__main__":
    main()
