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


def int8_provider(target: str) -> str:
    """Where the int8 graph of `target` is judged: the CPU graph on OpenVINO, its runtime, where it is
    installed; otherwise (and the TensorRT graph, here) on ONNX Runtime's CPU provider."""
    import importlib.util  # noqa: PLC0415

    return "openvino" if target == "cpu" and importlib.util.find_spec("openvino") else "cpu"


def _predict(path: str, x: np.ndarray, provider: str = "cpu"):
    from .artifacts import open_artifact
    from .runtime.detector import Detector

    with open_artifact(path, provider=provider) as runner:
        return Detector(runner).predict_batch(x)


def compare_frames(fp32: str, int8: str, x: np.ndarray, provider8: str = "cpu") -> dict:
    """agreement() of two artifacts on pre-processed frames x float32 (N, 3, S, S); the fp32 one on
    ONNX Runtime's CPU provider (the reference), the int8 one on `provider8`."""
    m32, s32 = _predict(fp32, x)
    m8, s8 = _predict(int8, x, provider8)
    return agreement(s32, m32, s8, m8)


def speed_vs_fp32(fp32: str, int8: str, size: int, rounds: int = 6, slot_s: float = 0.3) -> dict:
    """Batch-1 latency (a fixed-batch graph's batch) of the int8 graph on OpenVINO against the fp32 graph on ONNX Runtime (the
    default CPU path), timed in turns in one run, with every core and with one thread each; ONNX
    Runtime without thread spinning, so neither steals CPU from the other between turns. On a CPU
    shared with other work the one-thread ratio is the steadier one: how the scheduler shares
    cores among multi-threaded processes moves the all-core figures by tens of percent."""
    from .runtime.bench import interleaved
    from .runtime.onnxrt import OrtRunner
    from .runtime.openvino import OvRunner

    runners = {"fp32": OrtRunner(fp32, provider="cpu", spinning=False), "int8": OvRunner(int8),
               "fp32_1thread": OrtRunner(fp32, provider="cpu", spinning=False, threads=1),
               "int8_1thread": OvRunner(int8, threads=1)}
    try:
        for r in runners.values():
            r.activate()
        batch = runners["fp32"].exact_batch or 1  # a graph exported with a fixed batch runs that many
        x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
        lat = interleaved({k: (lambda r=r: r.infer({"image": x})) for k, r in runners.items()},
                          rounds=rounds, slot_s=slot_s)
    finally:
        for r in runners.values():
            r.close()
    p50 = {k: float(np.median(v)) for k, v in lat.items()}
    return {"batch": batch, "rounds": rounds, "slot_ms": slot_s * 1e3,
            "backends": {"fp32": runners["fp32"].backend, "int8": runners["int8"].backend},
            **{f"{k}_p50_ms": v for k, v in p50.items()},
            "speedup": p50["fp32"] / p50["int8"], "speedup_1thread": p50["fp32_1thread"] / p50["int8_1thread"]}


def compare_on_dataset(fp32: str, int8: str, data: str, fmt: str = "auto", normal_class: Optional[str] = None,
                       test: Optional[str] = None, provider8: str = "cpu", roi: Optional[str] = None) -> dict:
    """Image/pixel metrics of both artifacts on a labelled test set (each through its view, `roi`
    replacing their ROI; fp32 on ONNX Runtime's CPU provider, int8 on `provider8`), their drops and
    their agreement."""
    from .data import open_dataset
    from .evaluate import open_view_scorer, score_view_items
    from .metrics import summarize

    ds = open_dataset(data, fmt, normal_class=normal_class, test_dir=test)
    if not ds.test:
        raise HfrError(f"--eval {data}: has no test images")
    out = {}
    runs = {}
    for name, path, provider in (("fp32", fp32, "cpu"), ("int8", int8, provider8)):
        with open_view_scorer(path, provider, roi) as (predict, size, _, _, view):
            r = score_view_items(predict, ds.test, view, size, with_masks=ds.has_masks)
        runs[name] = r
        m = summarize(r.labels, r.scores, r.defects, masks=r.masks, maps=r.maps if ds.has_masks else None)
        out[name] = {k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro", "f1_max")}
    out["agreement"] = agreement(runs["fp32"].scores, runs["fp32"].maps, runs["int8"].scores, runs["int8"].maps)
    for k in ("image_auroc", "pixel_auroc", "aupro"):
        a, b = out["fp32"][k], out["int8"][k]
        out[f"{k}_drop"] = None if a is None or b is None else a - b
    out["data"] = str(data)
    out["int8_provider"] = provider8
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
    if "speed" in rep:
        sp = rep["speed"]
        console.say(f"speed: int8 on {sp['backends']['int8']} {sp['speedup']:.2f}x the fp32 graph on "
                    f"{sp['backends']['fp32']} (batch {sp.get('batch', 1)}, p50 {sp['int8_p50_ms']:.1f} vs {sp['fp32_p50_ms']:.1f} ms); "
                    f"{sp['speedup_1thread']:.2f}x on one thread each ({sp['int8_1thread_p50_ms']:.1f} vs "
                    f"{sp['fp32_1thread_p50_ms']:.1f} ms); timed in turns", log)
    if "eval" in rep:
        e = rep["eval"]
        console.say(f"{'':<8}{'image AUROC':>12}{'pixel AUROC':>12}{'AUPRO':>8}", log)
        for k in ("fp32", "int8"):
            console.say(f"{k:<8}{f(e[k]['image_auroc']):>12}{f(e[k]['pixel_auroc']):>12}{f(e[k]['aupro']):>8}", log)
        console.say(f"{'drop':<8}{f(e['image_auroc_drop']):>12}{f(e['pixel_auroc_drop']):>12}{f(e['aupro_drop']):>8}"
                    f"   (int8 on {e.get('int8_provider', 'cpu')})", log)
        a = e["agreement"]
        console.say(f"spearman {f(a['spearman_score'])}  map rel. error {f(a['map_mean_rel_error'])}  "
                    f"verdict flips {100 * a['verdict_flips']:.1f}%", log)
