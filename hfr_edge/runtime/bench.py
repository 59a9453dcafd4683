"""`hfr-edge bench`: latency percentiles and throughput of one artifact on a fixed random input,
through the same runner `hfr-edge run` uses (.onnx, .engine), or PyTorch eager for a ckpt.pt
baseline. torch is imported only for a checkpoint."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import typer

from ..errors import HfrError
from ..fsio import write_json_atomic
from .remote import is_server_url
from .runner import default_artifact, open_runner

CKPT_SUFFIXES = (".pt", ".pth", ".ckpt")


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


def _bench_runner(path: Path, batch: int, iterations: int, warmup: int, provider: str) -> dict:
    with open_runner(path, provider=provider) as runner:
        if runner.max_batch is not None and batch > runner.max_batch:
            raise HfrError(f"--batch {batch} exceeds {runner.path.name}'s maximum batch {runner.max_batch}; "
                           f"use a smaller --batch or rebuild the engine with a larger batch profile")
        s = runner.meta.image_size
        x = np.random.default_rng(0).random((batch, 3, s, s), dtype=np.float32)
        staged = runner.input_buffer(batch)
        if staged is not None:  # the pinned buffer, as Detector.predict fills it
            staged[...] = x
            x = staged
        feed = {runner.input_name: x}

        def step() -> Dict[str, float]:
            runner.infer(feed)
            return runner.last_timings

        lat, parts = _time(step, iterations, warmup)
        info = {"backend": runner.backend, "precision": runner.meta.precision, "image_size": s}
    return _report(path, batch, iterations, warmup, lat, parts, info)


def _bench_checkpoint(path: Path, batch: int, iterations: int, warmup: int, provider: str) -> dict:
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        raise HfrError(f"{path}: benchmarking a checkpoint needs PyTorch: pip install 'hfr-edge[train]'") from None
    from ..checkpoint import load_deploy_model  # noqa: PLC0415

    if provider == "tensorrt":
        raise HfrError(f"--provider tensorrt does not apply to a checkpoint; export and build {path.name} first")
    if provider == "cuda" and not torch.cuda.is_available():
        raise HfrError("--provider cuda: this PyTorch sees no CUDA device; use --provider cpu")
    device = "cuda" if provider in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    module, cfg, _ = load_deploy_model(path)
    module = module.to(device).eval()
    s = cfg.image_size
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, 3, s, s), generator=gen).to(device)

    def step() -> Dict[str, float]:
        with torch.inference_mode():
            module(x)
        if device == "cuda":
            torch.cuda.synchronize()
        return {}

    lat, parts = _time(step, iterations, warmup)
    info = {"backend": f"pytorch {torch.__version__} eager ({device})", "precision": "fp32", "image_size": s}
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


def bench(path, batch: int = 1, iterations: int = 200, warmup: int = 20, provider: str = "auto") -> dict:
    """Benchmark one artifact (.onnx, .engine/.plan, a ckpt.pt for the PyTorch eager baseline, or a server URL)."""
    _check_counts(batch, iterations, warmup)
    if is_server_url(path):  # a model on a Triton server: the same runner loop, over the network
        return _bench_runner(path, batch, iterations, warmup, provider)
    p = Path(path)
    if p.suffix.lower() in CKPT_SUFFIXES:
        if not p.is_file():
            raise HfrError(f"{p}: checkpoint not found")
        return _bench_checkpoint(p, batch, iterations, warmup, provider)
    return _bench_runner(p, batch, iterations, warmup, provider)


def _show(text: str) -> str:
    """Printable on any stdout: bytes of a non-UTF-8 file name become U+FFFD instead of an encode error."""
    return os.fsencode(text).decode("utf-8", "replace")


def format_report(rep: dict) -> str:
    rows = [
        ("artifact", f"{_show(rep['artifact'])} ({rep['precision']}, {rep['image_size']}x{rep['image_size']})"),
        ("backend", rep["backend"]),
        ("batch", str(rep["batch"])),
        ("iterations", f"{rep['iterations']} (after {rep['warmup']} warm-up)"),
        ("latency ms", "  ".join(f"{k} {rep[k + '_ms']:.3f}" for k in ("p50", "p90", "p99", "mean"))),
        ("throughput", f"{rep['throughput_fps']:.1f} images/s"),
    ]
    split = [k for k in ("h2d", "compute", "d2h", "server", "network") if f"{k}_ms" in rep]
    if len(split) > 1:  # backends that time their parts (TensorRT's copies, a server's share) get a second line
        rows.append(("mean split ms", "  ".join(f"{k} {rep[k + '_ms']:.3f}" for k in split)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def bench_command(
    artifact: Optional[str] = typer.Argument(None, metavar="MODEL", help="model.onnx, model.engine or ckpt.pt; default: "
                                                        "model.engine if TensorRT works here, else model.onnx"),
    batch: int = typer.Option(1, "--batch", "-b", help="images per inference"),
    iterations: int = typer.Option(200, "--iterations", "-n", help="timed inferences"),
    warmup: int = typer.Option(20, "--warmup", help="untimed inferences first"),
    provider: str = typer.Option("auto", "--provider", help="ONNX Runtime provider: auto|tensorrt|cuda|cpu"),
    json_out: Optional[str] = typer.Option(None, "--json", help="also write the report to this JSON file"),
    server: Optional[str] = typer.Option(None, "--server", help="bench the model on a Triton server instead: "
                                         "http://HOST:8000 or grpc://HOST:8001 (/NAME for another model name)"),
) -> None:
    """Measure latency (p50/p90/p99) and throughput of a model on this machine."""
    if server is not None:  # the URL goes to open_runner as the model (hfr_edge.runtime.remote)
        if artifact is not None:
            raise HfrError(f"give MODEL or --server, not both (the server's model is benchmarked at {server})")
        path = server
    elif artifact is None:
        path, reason = default_artifact()
        print(_show(reason))
    else:
        path = Path(artifact)
    rep = bench(path, batch=batch, iterations=iterations, warmup=warmup, provider=provider)
    print(format_report(rep))
    if json_out:
        write_json_atomic(json_out, rep)
        print(f"wrote {_show(json_out)}")
