"""`hfr-edge bench`: latency percentiles and throughput of one artifact on a fixed random input,
through the same Detector and runner `hfr-edge run` uses. torch-free: a ckpt.pt (the PyTorch
eager baseline) comes through the opener the stage level passes in."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from ..base.console import show
from ..base.errors import HfrError
from .detector import Detector
from .runner import Runner, open_runner


def _check_counts(batch: int, iterations: int, warmup: int) -> None:
    if batch < 1:
        raise HfrError(f"--batch {batch} must be at least 1")
    if iterations < 1:
        raise HfrError(f"--iterations {iterations} must be at least 1")
    if warmup < 0:
        raise HfrError(f"--warmup {warmup} must be 0 or more")


def _time(step: Callable[[], Dict[str, float]], iterations: int, warmup: int) -> Tuple[List[float], Dict[str, List[float]]]:
    """Wall-clock ms of each call of step() after `warmup` untimed ones, plus its own timings."""
    for _ in range(warmup):
        step()
    lat: List[float] = []
    parts: Dict[str, List[float]] = {}
    for _ in range(iterations):
        t0 = time.perf_counter()
        timings = step()
        lat.append((time.perf_counter() - t0) * 1e3)
        for k, v in timings.items():
            parts.setdefault(k, []).append(v)
    return lat, parts


def bench(path, batch: int = 1, iterations: int = 200, warmup: int = 20, provider: str = "auto",
          opener: Callable[..., Runner] = open_runner) -> dict:
    """Benchmark one artifact on a fixed random input, through the Detector `run` uses.

    `opener(path, provider=...)` opens it: the runtime's own for .onnx and .engine/.plan; the stage
    level passes one that also opens a ckpt.pt (PyTorch eager, the baseline)."""
    _check_counts(batch, iterations, warmup)
    path = Path(path)
    with opener(path, provider=provider) as runner:
        if runner.max_batch is not None and batch > runner.max_batch:
            raise HfrError(f"--batch {batch} exceeds {path.name}'s maximum batch {runner.max_batch}; "
                           f"use a smaller --batch or rebuild the engine with a larger batch profile")
        det = Detector(runner)
        s = det.size
        x = np.random.default_rng(0).random((batch, 3, s, s), dtype=np.float32)
        staged = runner.input_buffer(batch)
        if staged is not None:  # the pinned buffer, as Detector.prepare fills it
            staged[...] = x
            x = staged

        def step() -> Dict[str, float]:
            det.predict_batch(x)
            return runner.last_timings

        lat, parts = _time(step, iterations, warmup)
        info = {"backend": runner.backend, "precision": runner.meta.precision, "image_size": s}
    return _report(path, batch, iterations, warmup, lat, parts, info)


def _report(path: Path, batch: int, iterations: int, warmup: int, lat: List[float],
            parts: Dict[str, List[float]], info: dict) -> dict:
    a = np.asarray(lat, np.float64)
    mean = float(a.mean())
    rep = {"artifact": str(path), "batch": batch, "iterations": iterations, "warmup": warmup, **info,
           "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
           "p99_ms": float(np.percentile(a, 99)), "mean_ms": mean, "min_ms": float(a.min()), "max_ms": float(a.max()),
           "throughput_fps": batch * 1000.0 / mean if mean > 0 else float("inf")}
    for k, v in parts.items():  # "h2d", "compute", "d2h" where the backend measures them
        rep[f"{k}_ms"] = float(np.mean(v))
    return rep


def format_report(rep: dict) -> str:
    rows = [
        ("artifact", f"{show(rep['artifact'])} ({rep['precision']}, {rep['image_size']}x{rep['image_size']})"),
        ("backend", rep["backend"]),
        ("batch", str(rep["batch"])),
        ("iterations", f"{rep['iterations']} (after {rep['warmup']} warm-up)"),
        ("latency ms", "  ".join(f"{k} {rep[k + '_ms']:.3f}" for k in ("p50", "p90", "p99", "mean"))),
        ("throughput", f"{rep['throughput_fps']:.1f} images/s"),
    ]
    if "h2d_ms" in rep:  # backends that time their copies (TensorRT) get a second line
        split = [k for k in ("h2d", "compute", "d2h") if f"{k}_ms" in rep]
        rows.append(("mean split ms", "  ".join(f"{k} {rep[k + '_ms']:.3f}" for k in split)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
