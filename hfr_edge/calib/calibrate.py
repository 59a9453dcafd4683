"""`hfr-edge calibrate`: calibration frames -> explicit INT8 (Q/DQ) graph, then a report of what
int8 costs: fp32 vs int8 on held-out frames (rank correlation, map error, verdict flips) and,
with --eval DATA, image and pixel AUROC of both."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..base.artifact import ArtifactMeta, drop_stale_meta, load_meta, sidecar, write_meta
from ..base.errors import HfrError
from ..export.graph import graph_meta, load_onnx, set_graph_meta
from ..base.fsio import atomic_path, write_json_atomic
from ..base.images import preprocess
from .frames import collect_frames
from .qdq import METHODS, qdq_problems, quantize

from .defaults import DEFAULT_METHOD, int8_name
HOLDOUT_SHARE = 0.2  # of the calibration frames, kept out of calibration for the report


def _ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a), np.float64)
    r[order] = np.arange(len(a))
    # average ranks of ties
    vals, inv = np.unique(a, return_inverse=True)
    sums = np.bincount(inv, weights=r)
    cnt = np.bincount(inv)
    return (sums / cnt)[inv]


def spearman(a, b) -> Optional[float]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def agreement(s32, m32, s8, m8) -> dict:
    """How far int8 is from fp32 on the same frames."""
    s32, s8 = np.asarray(s32, np.float64), np.asarray(s8, np.float64)
    m32, m8 = np.asarray(m32, np.float64), np.asarray(m8, np.float64)
    return {"n_frames": int(len(s32)), "spearman_score": spearman(s32, s8),
            "map_mean_rel_error": float(np.abs(m8 - m32).mean() / max(np.abs(m32).mean(), 1e-12)),
            "score_mean_abs_diff": float(np.abs(s8 - s32).mean()),
            "verdict_flips": float(np.mean((s8 >= 0.5) != (s32 >= 0.5)))}


def _predict(path: str, x: np.ndarray):
    from ..runtime.detector import Detector
    from ..runtime.runner import open_runner

    with open_runner(path, provider="cpu") as r:
        return Detector(r).predict_batch(x)


def _eval_pair(fp32: str, int8: str, data: str, fmt: str = "auto", normal_class: Optional[str] = None) -> dict:
    from ..data import open_dataset
    from ..evaluate import open_scorer, score_items
    from ..metrics import summarize

    ds = open_dataset(data, fmt, normal_class=normal_class)
    if not ds.test:
        raise HfrError(f"--eval {data}: has no test images")
    out = {}
    runs = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        with open_scorer(path, "cpu") as (predict, size, _, _):
            r = score_items(predict, ds.test, size, with_masks=ds.has_masks)
        runs[name] = r
        m = summarize(r.labels, r.scores, r.defects, masks=r.masks, maps=r.maps if ds.has_masks else None)
        out[name] = {k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max")}
    out["agreement"] = agreement(runs["fp32"].scores, runs["fp32"].maps, runs["int8"].scores, runs["int8"].maps)
    for k in ("image_auroc", "pixel_auroc", "aupro"):
        a, b = out["fp32"][k], out["int8"][k]
        out[f"{k}_drop"] = None if a is None or b is None else a - b
    out["data"] = str(data)
    return out


def calibrate_model(onnx_path, images: str, out_path=None, n: int = 200, method: str = DEFAULT_METHOD,
                    eval_data: Optional[str] = None, report: bool = True, log=None, eval_format: str = "auto",
                    eval_normal_class: Optional[str] = None) -> Path:
    """Make `<stem>.int8.onnx` (+ JSON, + `<stem>.int8.calib.json` report). Returns its path."""
    log = log or (lambda m: print(m, file=sys.stderr))
    if method not in METHODS:
        raise HfrError(f"--method {method!r} must be one of {', '.join(METHODS)}")
    src = Path(onnx_path)
    model = load_onnx(src)
    meta = graph_meta(model, str(src))
    if sidecar(src).is_file():
        load_meta(src)  # a corrupt JSON beside the graph is an error here as in every other command
    if meta.precision != "fp32":
        raise HfrError(f"{src}: is a {meta.precision} graph; calibrate the fp32 graph from `hfr-edge export`")
    out = Path(out_path) if out_path else int8_name(src)
    if out.resolve() == src.resolve():
        raise HfrError(f"-o {out}: would overwrite the fp32 graph; choose another name")
    t0 = time.time()
    frames, names = collect_frames(images, n)
    k = 0 if eval_data or len(frames) < 5 else max(1, int(round(len(frames) * HOLDOUT_SHARE)))
    hold = list(range(len(frames)))[::max(1, len(frames) // k)][:k] if k else []
    held = set(hold)
    cal = [i for i in range(len(frames)) if i not in held]
    x_cal = preprocess([frames[i] for i in cal], meta.image_size)
    log(f"calibrating {src} on {len(cal)} frames from {images} ({method})")
    try:
        with tempfile.TemporaryDirectory(prefix="hfr-calib-") as td:
            tmp_q = os.path.join(td, "q.onnx")
            quantize(str(src), x_cal, tmp_q, method)
            q = load_onnx(tmp_q)
    except OSError as exc:  # a full disk or a file size limit while quantizing, in the temporary folder
        raise HfrError(f"calibration could not write its temporary graphs in {tempfile.gettempdir()} "
                       f"({exc.strerror or exc}); free space there or set TMPDIR to a folder with room", 1) from None
    problems = qdq_problems(q)
    if problems:
        raise HfrError(f"the Q/DQ graph breaks TensorRT's rules: {problems[0]} (+{len(problems) - 1} more); report this bug", 1)
    meta8 = ArtifactMeta(kind="onnx", precision="int8", image_size=meta.image_size, model=meta.model, norm=meta.norm,
                         extra={**meta.extra, "calibration": {"method": method, "frames": len(cal), "source": str(images),
                                                              "symmetric": True, "per_channel": True}})
    set_graph_meta(q, meta8)
    with atomic_path(out) as tmp:
        tmp.write_bytes(q.SerializeToString(deterministic=True))
        drop_stale_meta(out)  # last step before the rename
    write_meta(out, meta8)
    log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.time() - t0:.0f} s")
    if report:
        rep = {"model": str(src), "int8": str(out), "method": method, "calibration_frames": len(cal)}
        if hold:
            xh = preprocess([frames[i] for i in hold], meta.image_size)
            m32, s32 = _predict(str(src), xh)
            m8, s8 = _predict(str(out), xh)
            rep["holdout"] = agreement(s32, m32, s8, m8)
        if eval_data:
            rep["eval"] = _eval_pair(str(src), str(out), eval_data, eval_format, eval_normal_class)
        rpath = out.with_name(out.name[:-5] + ".calib.json") if out.name.endswith(".onnx") else Path(str(out) + ".calib.json")
        write_json_atomic(rpath, rep)
        print_calib_report(rep, log)
        log(f"wrote {rpath}")
    return out


def print_calib_report(rep: dict, log) -> None:
    def f(v):
        return "-" if v is None else f"{v:.4f}"

    if "holdout" in rep:
        h = rep["holdout"]
        log(f"held-out frames: {h['n_frames']}  spearman {f(h['spearman_score'])}  map rel. error "
            f"{f(h['map_mean_rel_error'])}  verdict flips {100 * h['verdict_flips']:.1f}%")
    if "eval" in rep:
        e = rep["eval"]
        log(f"{'':<8}{'image AUROC':>12}{'pixel AUROC':>12}{'AUPRO':>8}")
        for k in ("fp32", "int8"):
            log(f"{k:<8}{f(e[k]['image_auroc']):>12}{f(e[k]['pixel_auroc']):>12}{f(e[k]['aupro']):>8}")
        a = e["agreement"]
        log(f"spearman {f(a['spearman_score'])}  map rel. error {f(a['map_mean_rel_error'])}  "
            f"verdict flips {100 * a['verdict_flips']:.1f}%")
