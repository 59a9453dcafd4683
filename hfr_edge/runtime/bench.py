"""`hfr-edge bench`: latency percentiles and throughput of one artifact on a fixed random input,
through the same Detector and runner `hfr-edge run` uses. torch-free: a ckpt.pt (the PyTorch
eager baseline) comes through the opener the stage level passes in."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..base.console import show
from ..base.errors import HfrError
from .detector import Detector
from .runner import Runner, open_runner
from .remote import is_server_url


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


def gflop_of(meta) -> Optional[float]:
    """GFLOP per image as export counted it into the metadata (None for an older artifact)."""
    v = meta.extra.get("gflop_per_image")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 else None


def bench(path, batch: int = 1, iterations: int = 200, warmup: int = 20, provider: str = "auto",
          opener: Callable[..., Runner] = open_runner, gflop: Optional[float] = None) -> dict:
    """Benchmark one artifact on a fixed random input, through the Detector `run` uses.

    `opener(path, provider=...)` opens it: the runtime's own for .onnx and .engine/.plan; the stage
    level passes one that also opens a ckpt.pt (PyTorch eager, the baseline). `gflop`: the cost of
    one image where the metadata lacks it (the stage level counts it from an older graph)."""
    _check_counts(batch, iterations, warmup)
    path = path if is_server_url(path) else Path(path)
    with opener(path, provider=provider) as runner:
        if runner.max_batch is not None and batch > runner.max_batch:
            raise HfrError(f"--batch {batch} exceeds {runner.path.name}'s maximum batch {runner.max_batch}; "
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
        info = {"backend": runner.backend, "precision": runner.meta.precision, "image_size": s,
                "gflop_per_image": gflop_of(runner.meta) or gflop}
    return _report(path, batch, iterations, warmup, lat, parts, info)


def interleaved(steps: Dict[str, Callable[[], object]], rounds: int = 5, slot_s: float = 0.3,
                warmup: int = 2) -> Dict[str, List[float]]:
    """ms of every call of each step, the steps taking turns of `slot_s` seconds, `rounds` times.
    A shared or throttling CPU drifts by tens of percent from minute to minute; in turns, every
    step sees the same drift, so ratios of their medians hold where absolute times do not."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    lat: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            end = time.perf_counter() + slot_s
            while True:
                t0 = time.perf_counter()
                step()
                t1 = time.perf_counter()
                lat[name].append((t1 - t0) * 1e3)
                if t1 >= end:
                    break
    return lat


def _report(path: Path, batch: int, iterations: int, warmup: int, lat: List[float],
            parts: Dict[str, List[float]], info: dict) -> dict:
    a = np.asarray(lat, np.float64)
    mean = float(a.mean())
    rep = {"artifact": str(path), "batch": batch, "iterations": iterations, "warmup": warmup, **info,
           "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
           "p99_ms": float(np.percentile(a, 99)), "mean_ms": mean, "min_ms": float(a.min()), "max_ms": float(a.max()),
           "throughput_fps": batch * 1000.0 / mean if mean > 0 else float("inf")}
    # achieved arithmetic rate: how close to the machine's peak the model runs (None: cost unknown)
    rep["gflops"] = rep["gflop_per_image"] * rep["throughput_fps"] if rep["gflop_per_image"] else None
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
    if rep.get("gflop_per_image"):
        rows.append(("cost", f"{rep['gflop_per_image']:.2f} GFLOP/image, {rep['gflops']:.1f} GFLOP/s achieved"))
    split = [k for k in ("h2d", "compute", "d2h", "server", "network") if f"{k}_ms" in rep]
    if len(split) > 1:  # backends that time their parts (TensorRT's copies, a server's share) get a second line
        rows.append(("mean split ms", "  ".join(f"{k} {rep[k + '_ms']:.3f}" for k in split)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
