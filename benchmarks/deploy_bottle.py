"""Deployment figures on MVTec bottle, from the checkpoint `accuracy_mvtec.py` trained
(benchmarks/results/bottle.pt, or --ckpt):

1. export parity (issue 3): max |diff| of anomaly_map and score, PyTorch vs ONNX Runtime fp32, over
   the whole test set; image / pixel AUROC of both; fp16 vs fp32.
2. calibration (issue 4): minmax, entropy, percentile, each calibrated on 100 train/good images
   and evaluated on test: AUROC drops, Spearman, map error, verdict flips.
3. runtime speed (issue 5): bench p50 of PyTorch eager vs ONNX Runtime fp32/fp16/int8 at batch 1;
   `hfr-edge run --headless` frames/s over a video of the test images vs bench throughput.

    python benchmarks/deploy_bottle.py [--ckpt PATH] [--skip calib,speed]
"""

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DATASETS, RESULTS, need, table, write_json

ap = argparse.ArgumentParser()
ap.add_argument("--ckpt", default=str(RESULTS / "bottle.pt"))
ap.add_argument("--skip", default="")
ap.add_argument("--iterations", type=int, default=100)
args = ap.parse_args()
skip = set(filter(None, args.skip.split(",")))
data = need(DATASETS / "mvtec_ad" / "bottle", "MVTec AD bottle")
ckpt = Path(args.ckpt)
if not ckpt.is_file():
    print(f"no checkpoint at {ckpt}: run benchmarks/accuracy_mvtec.py first", file=sys.stderr)
    sys.exit(1)


from hfr_edge.compare import agreement  # noqa: E402
from hfr_edge.data import open_dataset  # noqa: E402
from hfr_edge.evaluate import open_scorer, score_items  # noqa: E402
from hfr_edge.export.onnx_export import export_onnx  # noqa: E402
from hfr_edge.metrics import summarize  # noqa: E402
from hfr_edge.variants import calibrate_model  # noqa: E402

work = Path(tempfile.mkdtemp(prefix="hfr-deploy-"))
out = {}
ds = open_dataset(str(data))


def scored(path):
    with open_scorer(str(path), "cpu") as (predict, size, backend, precision):
        r = score_items(predict, ds.test, size, with_masks=True)
    m = summarize(r.labels, r.scores, r.defects, masks=r.masks, maps=r.maps)
    return r, m


# 1. export parity --------------------------------------------------------------------------
t0 = time.time()
fp32 = export_onnx(str(ckpt), str(work / "model.onnx"))
fp16 = export_onnx(str(ckpt), str(work / "model.fp16.onnx"), precision="fp16")
export_s = time.time() - t0
r_pt, m_pt = scored(ckpt)
r32, m32 = scored(fp32)
r16, m16 = scored(fp16)
rows = []
for name, r, m in (("pytorch", r_pt, m_pt), ("onnx fp32", r32, m32), ("onnx fp16", r16, m16)):
    rows.append({"artifact": name, "image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"],
                 "aupro": m["aupro"], "max_map_diff": float(np.abs(r.maps - r_pt.maps).max()),
                 "max_score_diff": float(np.abs(r.scores - r_pt.scores).max())})
print("export parity (max |diff| against PyTorch over the 83 test images)")
print(table(rows, [("artifact", "artifact", None), ("image_auroc", "image AUROC", "{:.4f}"),
                   ("pixel_auroc", "pixel AUROC", "{:.4f}"), ("aupro", "AUPRO", "{:.4f}"),
                   ("max_map_diff", "max|map diff|", "{:.2e}"), ("max_score_diff", "max|score diff|", "{:.2e}")]))
out["export"] = {"rows": rows, "export_seconds": export_s}

# 2. calibration methods ------------------------------------------------------------------------
if "calib" not in skip:
    crow = []
    for method in ("minmax", "entropy", "percentile"):
        t0 = time.time()
        q = calibrate_model(str(fp32), str(data / "train" / "good"), str(work / f"model.{method}.int8.onnx"), n=100,
                            method=method, report=False, log=io.StringIO())
        cal_s = time.time() - t0
        r8, m8 = scored(q)
        ag = agreement(r32.scores, r32.maps, r8.scores, r8.maps)
        crow.append({"method": method, "image_auroc": m8["image_auroc"], "pixel_auroc": m8["pixel_auroc"],
                     "aupro": m8["aupro"], "image_drop": m32["image_auroc"] - m8["image_auroc"],
                     "pixel_drop": m32["pixel_auroc"] - m8["pixel_auroc"], "spearman": ag["spearman_score"],
                     "map_rel_err": ag["map_mean_rel_error"], "flips": ag["verdict_flips"], "calib_s": cal_s})
    print("\nint8 calibration: 100 train/good frames, evaluated on test (drops against ONNX fp32)")
    print(table(crow, [("method", "method", None), ("image_auroc", "image AUROC", "{:.4f}"),
                       ("pixel_auroc", "pixel AUROC", "{:.4f}"), ("aupro", "AUPRO", "{:.4f}"),
                       ("image_drop", "img drop", "{:+.4f}"), ("pixel_drop", "pix drop", "{:+.4f}"),
                       ("spearman", "Spearman", "{:.4f}"), ("map_rel_err", "map rel err", "{:.4f}"),
                       ("flips", "flips", "{:.1%}"), ("calib_s", "calib s", "{:.0f}")]))
    out["calibration"] = crow

# 3. runtime speed ------------------------------------------------------------------------------
if "speed" not in skip:
    from hfr_edge.artifacts import bench

    arts = [("pytorch eager", ckpt), ("onnx fp32", fp32), ("onnx fp16", fp16)]
    if "calib" not in skip:
        arts.append(("onnx int8 (minmax)", work / "model.minmax.int8.onnx"))
    srow = []
    for name, p in arts:
        b = bench(str(p), batch=1, iterations=args.iterations, warmup=10, provider="cpu")
        srow.append({"artifact": name, "p50_ms": b["p50_ms"], "p90_ms": b["p90_ms"], "p99_ms": b["p99_ms"],
                     "throughput_fps": b["throughput_fps"]})
    # run --headless over a video of the test images, as a user would
    import cv2

    vid = work / "bottle_test.mp4"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"mp4v"), 10, (256, 256))
    for it in ds.test:
        w.write(cv2.resize(it.load(), (256, 256), interpolation=cv2.INTER_AREA)[:, :, ::-1])
    w.release()
    summ = work / "run_summary.json"
    fps_runs = []
    for _ in range(3):  # the video is short: repeat and keep the median
        subprocess.run([sys.executable, "-m", "hfr_edge", "run", str(fp32), "--source", str(vid), "--headless",
                        "--json", str(summ), "--provider", "cpu"], check=True, capture_output=True)
        fps_runs.append(json.loads(summ.read_text())["fps"])
    run_fps = float(np.median(fps_runs))
    b32 = srow[1]["throughput_fps"]
    print("\nlatency at batch 1 (CPU), and `hfr-edge run --headless` over an 83-frame 256x256 video")
    print(table(srow, [("artifact", "artifact", None), ("p50_ms", "p50 ms", "{:.2f}"), ("p90_ms", "p90 ms", "{:.2f}"),
                       ("p99_ms", "p99 ms", "{:.2f}"), ("throughput_fps", "images/s", "{:.1f}")]))
    ratio = run_fps / b32
    pt_ratio = srow[1]["p50_ms"] / srow[0]["p50_ms"]
    print(f"run --headless: {run_fps:.1f} frames/s = {ratio:.2f} x bench throughput (target >= 0.85); "
          f"ONNX fp32 p50 = {pt_ratio:.2f} x PyTorch p50 (target <= 0.3)")
    out["speed"] = {"rows": srow, "run_fps": run_fps, "run_vs_bench": ratio, "onnx_vs_pytorch_p50": pt_ratio}

write_json("deploy_bottle.json", out)
