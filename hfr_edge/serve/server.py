"""`hfr-edge serve MODEL`: the detector on a real Triton Inference Server, started by PyTriton.

Our runner (hfr_edge.runtime.runner.open_runner: ONNX Runtime or TensorRT) is the bound inference
function; Triton does the rest: KServe v2 over HTTP and gRPC, dynamic batching, health and
readiness (/v2/health/live, /v2/health/ready), Prometheus metrics. The artifact's metadata is
published as model-config parameters, so `run --server URL` needs no local file. The first
Ctrl-C or SIGTERM stops the server cleanly (in-flight requests answered, ports released).
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..base.errors import HfrError, first_line
from ..runtime.runner import open_runner
from ..runtime.tritonio import DEFAULT_MODEL_NAME, parameters, tensor_dims
from .repository import NAME_RE

# Endpoints PyTriton guards with a token by default, less `statistics`: clients read their server
# latency from it (read-only). Loading/unloading models stays closed, as on a stock Triton.
GUARDED_ENDPOINTS = ["shared-memory", "model-repository", "trace", "logging"]
EXIT_TIMEOUT_S = 5  # Triton's wait for in-flight requests at stop (its default, 30 s, stalls a restart)


@dataclass(frozen=True)
class ServeConfig:
    name: str = DEFAULT_MODEL_NAME  # model name on the server
    address: str = "0.0.0.0"  # interface for all three endpoints (127.0.0.1: this machine only)
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8  # largest batch Triton hands the runner
    queue_delay_us: int = 1000  # dynamic batching: longest wait to fill a batch
    dynamic_batching: bool = True  # off: every request runs alone, as it came
    provider: str = "auto"  # ONNX Runtime provider of the runner


def _loader_finds(soname: str) -> Optional[Path]:
    """The file the dynamic loader gives a program that needs `soname` (LD_LIBRARY_PATH, then its cache)."""
    for d in filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":")):
        if (Path(d) / soname).is_file():
            return Path(d) / soname
    for exe in ("/sbin/ldconfig", "/usr/sbin/ldconfig"):
        try:
            out = subprocess.run([exe, "-p"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        for line in out.splitlines():
            name, _, path = line.strip().partition(" => ")
            if name.split(" ")[0] == soname and Path(path).is_file():
                return Path(path)
        break
    for d in ("/lib", "/usr/lib", "/lib64", "/usr/lib64"):
        if (Path(d) / soname).is_file():
            return Path(d) / soname
    return None


def python_problem() -> Optional[str]:
    """Why Triton's Python-backend stub cannot run this interpreter's packages, or None.

    PyTriton's stub is linked against the shared libpython3.X the system's loader finds. A Python
    built elsewhere (pyenv, a tarball) has its own stdlib of another patch release, which that
    library cannot run (the stub dies with "'_thread.RLock' object has no attribute ...")."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    soname = sysconfig.get_config_var("INSTSONAME") or f"libpython{ver}.so.1.0"
    theirs = _loader_finds(soname)
    fix = (f"make the environment from the system Python that owns it: /usr/bin/python{ver} -m venv .venv && "
           f".venv/bin/pip install 'hfr-edge[triton]'")
    if theirs is None:
        return (f"Triton's Python backend needs the shared library {soname}, which this system lacks; install it "
                f"(Debian/Ubuntu: apt-get install libpython{ver}) and {fix}")
    ours = Path(sysconfig.get_config_var("LIBDIR") or "/nonexistent") / soname
    if ours.is_file() and ours.resolve() == theirs.resolve():
        return None
    return (f"this Python ({sys.executable}, {platform.python_version()}) cannot host Triton's Python backend, which "
            f"loads {theirs}, another Python build; {fix}")


def _pytriton():
    try:
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: PLC0415
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig  # noqa: PLC0415
    except ImportError as exc:
        raise HfrError(f"`hfr-edge serve` needs PyTriton ({first_line(exc, 80)}): pip install 'hfr-edge[triton]'") from None
    return DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig, TritonSecurityConfig


def _check(cfg: ServeConfig) -> None:
    if not NAME_RE.match(cfg.name):
        raise HfrError(f"--name {cfg.name!r}: use letters, digits, '_', '.' or '-'")
    ports = {"--http-port": cfg.http_port, "--grpc-port": cfg.grpc_port, "--metrics-port": cfg.metrics_port}
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise HfrError(f"{flag} {port} must be a port number, 1..65535")
    if len(set(ports.values())) < 3:
        raise HfrError(f"--http-port, --grpc-port and --metrics-port must differ (got {', '.join(map(str, ports.values()))})")
    if cfg.max_batch < 1:
        raise HfrError(f"--max-batch {cfg.max_batch} must be at least 1")
    if cfg.queue_delay_us < 0:
        raise HfrError(f"--queue-delay-us {cfg.queue_delay_us} must be 0 or more")
    for flag, port in ports.items():  # Triton would only log it and PyTriton wait minutes: say it now
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton does: a just-stopped server's
            try:                                                     # TIME_WAIT connections must not count
                s.bind((cfg.address, port))
            except OSError as exc:
                raise HfrError(f"{flag} {port}: cannot listen on {cfg.address}:{port} ({exc.strerror}); choose "
                               f"another port or stop the program that holds it") from None


def _publish_parameters(triton, name: str, params: Dict[str, str]) -> None:
    """PyTriton's ModelConfig has no field for model-config parameters, but the config it sends to
    Triton carries its own backend parameters: add ours there, before the model loads."""
    try:
        model = next(m for m in triton._model_manager.models if m.model_name == name)  # noqa: SLF001
        model._get_triton_model_config().backend_parameters.update(params)  # noqa: SLF001
    except (AttributeError, StopIteration, TypeError):
        raise HfrError("this nvidia-pytriton no longer exposes its model config; install the tested "
                       "one: pip install 'nvidia-pytriton>=0.7,<0.8'") from None


def _infer_fn(runner, out_names):
    from pytriton.decorators import batch  # noqa: PLC0415

    @batch
    def infer(**inputs: np.ndarray):
        x = np.ascontiguousarray(inputs[runner.input_name], dtype=np.float32)
        out = runner.infer({runner.input_name: x})
        return {n: out[n].reshape(x.shape[0], -1) if n == "score" else out[n] for n in out_names}

    return infer


@contextlib.contextmanager
def _stop_event():
    """An event set by the first SIGINT/SIGTERM (main thread only)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def serve(model, cfg: ServeConfig = ServeConfig(), log=None, stop: Optional[threading.Event] = None) -> None:
    """Serve `model` until SIGINT/SIGTERM (or `stop` is set)."""
    log = log or sys.stderr
    _check(cfg)
    problem = python_problem()
    if problem:
        raise HfrError(problem)
    DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig, TritonSecurityConfig = _pytriton()
    with open_runner(model, provider=cfg.provider) as runner, _stop_event() as signalled:
        stop = stop or signalled
        (in_name, in_dims), outs = tensor_dims(runner.meta.image_size)
        max_batch = min(cfg.max_batch, runner.max_batch or cfg.max_batch)
        batcher = DynamicBatcher(max_queue_delay_microseconds=cfg.queue_delay_us) if cfg.dynamic_batching else None
        tcfg = TritonConfig(http_address=cfg.address, http_port=cfg.http_port, grpc_address=cfg.address,
                            grpc_port=cfg.grpc_port, metrics_address=cfg.address, metrics_port=cfg.metrics_port,
                            exit_timeout_secs=EXIT_TIMEOUT_S)
        triton = Triton(config=tcfg, security_config=TritonSecurityConfig(restricted_endpoints=GUARDED_ENDPOINTS))
        try:
            triton.bind(model_name=cfg.name, infer_func=_infer_fn(runner, [n for n, _ in outs]),
                        inputs=[Tensor(name=in_name, dtype=np.float32, shape=tuple(in_dims))],
                        outputs=[Tensor(name=n, dtype=np.float32, shape=tuple(d)) for n, d in outs],
                        config=ModelConfig(max_batch_size=max_batch, batcher=batcher), strict=True)
            _publish_parameters(triton, cfg.name, parameters(runner.meta))
            triton.run()
            host = "127.0.0.1" if cfg.address == "0.0.0.0" else cfg.address
            print(f"hfr-edge: serving {cfg.name} ({model}, {runner.backend}, {runner.meta.image_size}x"
                  f"{runner.meta.image_size}, max batch {max_batch}, dynamic batching "
                  f"{'on' if batcher else 'off'}) on http://{host}:{cfg.http_port} and grpc://{host}:{cfg.grpc_port}; "
                  f"metrics http://{host}:{cfg.metrics_port}/metrics; Ctrl-C stops", file=log, flush=True)
            while not stop.wait(0.5):
                if not triton.is_alive():
                    raise HfrError("the Triton server stopped by itself; see its log above", exit_code=1)
        finally:
            triton.stop()
    print("hfr-edge: server stopped", file=log, flush=True)
