"""What int8 costs: an fp32 graph and its int8 graph compared on the same frames (rank correlation
of the scores, map error, verdict flips) and, on a labelled dataset, their image and pixel
metrics side by side. Beside evaluation, whose scoring it reuses; `calibrate` writes its report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, TextIO

import numpy as np

from .base import console
from .base.contract import THRESHOLD
from .base.errors import HfrError
from .metrics import spearman


def agreement(s32, m32, s8, m8) -> dict:
    """How far int8 is from fp32 on the same frames: scores (N,) and maps (N, S, S) of each."""
    s32, s8 = np.asarray(s32, np.float64), np.asarray(s8, np.float64)
    m32, m8 = np.asarray(m32, np.float64), np.asarray(m8, np.float64)
    return {"n_frames": int(len(s32)), "spearman_score": spearman(s32, s8),
            "map_mean_rel_error": float(np.abs(m8 - m32).mean() / max(np.abs(m32).mean(), 1e-12)),
            "score_mean_abs_diff": float(np.abs(s8 - s32).mean()),
            "verdict_flips": float(np.mean((s8 >= THRESHOLD) != (s32 >= THRESHOLD)))}


def _predict(path: str, x: np.ndarray):
    from .artifacts import open_artifact
    from .runtime.detector import Detector

    with open_artifact(path, provider="cpu") as runner:
        return Detector(runner).predict_batch(x)


def compare_frames(fp32: str, int8: str, x: np.ndarray) -> dict:
    """agreement() of two artifacts on pre-processed frames x float32 (N, 3, S, S)."""
    m32, s32 = _predict(fp32, x)
    m8, s8 = _predict(int8, x)
    return agreement(s32, m32, s8, m8)


def compare_on_dataset(fp32: str, int8: str, data: str, fmt: str = "auto", normal_class: Optional[str] = None,
                       test: Optional[str] = None, roi: Optional[str] = None) -> dict:
    """Image/pixel metrics of both artifacts on a labelled test set (each through its view, `roi`
    replacing their ROI), their drops and their agreement."""
    from .data import open_dataset
    from .evaluate import open_view_scorer, score_view_items
    from .metrics import summarize

    ds = open_dataset(data, fmt, normal_class=normal_class, test_dir=test)
    if not ds.test:
        raise HfrError(f"--eval {data}: has no test images")
    out = {}
    runs = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        with open_view_scorer(path, "cpu", roi) as (predict, size, _, _, view):
            r = score_view_items(predict, ds.test, view, size, with_masks=ds.has_masks)
        runs[name] = r
        m = summarize(r.labels, r.scores, r.defects, masks=r.masks, maps=r.maps if ds.has_masks else None)
        out[name] = {k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max")}
    out["agreement"] = agreement(runs["fp32"].scores, runs["fp32"].maps, runs["int8"].scores, runs["int8"].maps)
    for k in ("image_auroc", "pixel_auroc", "aupro"):
        a, b = out["fp32"][k], out["int8"][k]
        out[f"{k}_drop"] = None if a is None or b is None else a - b
    out["data"] = str(data)
    return out


def report_path(int8_path) -> Path:
    """model.int8.onnx -> model.int8.calib.json, beside it."""
    p = Path(int8_path)
    return p.with_name(p.name[:-5] + ".calib.json") if p.name.endswith(".onnx") else Path(str(p) + ".calib.json")


def print_comparison(rep: dict, log: Optional[TextIO] = None) -> None:
    def f(v):
        return "-" if v is None else f"{v:.4f}"

    if "holdout" in rep:
        h = rep["holdout"]
        console.say(f"held-out frames: {h['n_frames']}  spearman {f(h['spearman_score'])}  map rel. error "
                    f"{f(h['map_mean_rel_error'])}  verdict flips {100 * h['verdict_flips']:.1f}%", log)
    if "eval" in rep:
        e = rep["eval"]
        console.say(f"{'':<8}{'image AUROC':>12}{'pixel AUROC':>12}{'AUPRO':>8}", log)
        for k in ("fp32", "int8"):
            console.say(f"{k:<8}{f(e[k]['image_auroc']):>12}{f(e[k]['pixel_auroc']):>12}{f(e[k]['aupro']):>8}", log)
        a = e["agreement"]
        console.say(f"spearman {f(a['spearman_score'])}  map rel. error {f(a['map_mean_rel_error'])}  "
                    f"verdict flips {100 * a['verdict_flips']:.1f}%", log)
