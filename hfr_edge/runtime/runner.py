"""ONE runner interface over ONNX Runtime and TensorRT (Polygraphy-style).

    with open_runner("model.onnx") as r:
        out = r.infer({"image": x})      # x: float32 (N, 3, S, S) RGB in [0, 1]
        out["anomaly_map"], out["score"]  # (N, 1, S, S), (N,) normalised, 0.5 = threshold
    (the names and the threshold: base/contract.py)

Input names, dtypes and shapes are checked here once, so each backend is a few short methods.
Backends are imported lazily: this module never imports torch, onnx or tensorrt.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from ..base.artifact import ArtifactMeta, load_meta
from ..base.contract import INPUT_NAME, MAP_NAME, OUTPUT_NAMES, SCORE_NAME
from ..base.errors import HfrError
from ..base.images import fill_batch

PROVIDER_CHOICES = ("auto", "tensorrt", "cuda", "cpu", "openvino")
ENGINE_SUFFIXES = (".engine", ".plan")


class Runner:
    """Base class: subclasses implement _activate(), _infer(x) -> outputs, _deactivate().

    open_runner() returns a runner already active; `with` (or close()) frees what it holds.
    """

    input_name = INPUT_NAME
    output_names = OUTPUT_NAMES

    def __init__(self, path, meta: Optional[ArtifactMeta] = None):
        self.path = Path(path)
        self.meta = meta if meta is not None else load_meta(self.path)
        self.backend = "unknown"  # set by the subclass on activation, e.g. "tensorrt 10.3.0"
        self.max_batch: Optional[int] = None  # engine profile max; None for a dynamic ONNX batch
        self.exact_batch: Optional[int] = None  # an ONNX graph exported with a fixed batch takes just that many
        self.last_timings: Dict[str, float] = {}  # ms of the last infer
        self.dropped = 0  # frames a remote runner could not get scored (its server was away)
        self.is_active = False

    # -- lifetime -------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def close(self) -> None:
        if self.is_active:
            self.is_active = False
            self._deactivate()

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inference ------------------------------------------------------------------------
    def input_buffer(self, n: int) -> Optional[np.ndarray]:
        """A preallocated (pinned) float32 (n, 3, S, S) buffer to pre-process into, or None."""
        return None

    def infer(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        x = self._check_feed(feed)
        self.activate()
        n = x.shape[0]
        if self.exact_batch:  # filled up with the last image; its outputs dropped
            x = fill_batch(x, self.exact_batch)
        self.last_timings = {}
        t0 = time.perf_counter()
        out = self._infer(x)
        if not self.last_timings:
            self.last_timings = {"compute": (time.perf_counter() - t0) * 1e3}
        if x.shape[0] != n:
            out = {k: v[:n] for k, v in out.items()}
        return self._check_outputs(out, n)

    def _check_feed(self, feed) -> np.ndarray:
        if not isinstance(feed, dict) or list(feed) != [self.input_name]:
            names = list(feed) if isinstance(feed, dict) else type(feed).__name__
            raise HfrError(f"{self.path.name}: feed {names} must hold exactly one input named '{self.input_name}'")
        x = feed[self.input_name]
        s = self.meta.image_size
        want = f"float32 (N, 3, {s}, {s})"
        if not isinstance(x, np.ndarray):
            raise HfrError(f"input '{self.input_name}': a {type(x).__name__}, expected a numpy array {want}")
        if x.dtype != np.float32:
            raise HfrError(f"input '{self.input_name}': dtype {x.dtype}, expected {want}")
        if x.ndim != 4 or x.shape[1:] != (3, s, s) or x.shape[0] < 1:
            raise HfrError(f"input '{self.input_name}': shape {x.shape}, expected {want} with N >= 1")
        if self.max_batch is not None and x.shape[0] > self.max_batch:
            raise HfrError(f"input '{self.input_name}': batch {x.shape[0]} exceeds {self.path.name}'s maximum "
                           f"batch {self.max_batch}; split it or rebuild the engine with a larger batch profile")
        if not x.flags.c_contiguous:
            raise HfrError(f"input '{self.input_name}': array is not C-contiguous; pass np.ascontiguousarray(x)")
        return x

    def _check_graph_io(self, inputs, input_shape, outputs) -> None:
        """A graph's I/O against the contract and the metadata, for every backend that reads .onnx:
        input names, output names, the input's shape (a dim that is not an int > 0 is dynamic)."""
        s = self.meta.image_size
        if list(inputs) != [self.input_name] or not set(self.output_names) <= set(outputs):
            raise HfrError(f"{self.path}: graph I/O {list(inputs)} -> {sorted(outputs)} is not the hfr-edge "
                           f"contract (image -> anomaly_map, score); re-export it with `hfr-edge export`")
        shape = list(input_shape)
        if len(shape) != 4 or shape[1:] != [3, s, s]:
            raise HfrError(f"{self.path}: input 'image' has shape {shape}, but its metadata says "
                           f"(N, 3, {s}, {s}); re-export it")
        if isinstance(shape[0], int) and shape[0] > 0:  # `export --batch N`: exactly N per run
            self.max_batch = self.exact_batch = shape[0]

    def _check_outputs(self, out: Dict[str, np.ndarray], n: int) -> Dict[str, np.ndarray]:
        s = self.meta.image_size
        want = {MAP_NAME: (n, 1, s, s), SCORE_NAME: (n,)}
        for name, shape in want.items():
            got = out.get(name)
            if got is None or got.shape != shape:
                raise HfrError(f"{self.path}: output '{name}' has shape {None if got is None else got.shape}, "
                               f"expected {shape}; re-export the model (its graph breaks the hfr-edge contract)")
            if got.dtype != np.float32:
                out[name] = got.astype(np.float32)
        return out

    # -- backend hooks --------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError


def open_runner(path, provider: str = "auto", device: int = 0) -> Runner:
    """.onnx -> OrtRunner (provider tensorrt|cuda|cpu) or OvRunner (openvino); .engine/.plan -> TrtRunner.
    "auto" for a graph: ONNX Runtime, except an int8 graph on a machine where ONNX Runtime has no
    GPU provider and OpenVINO is installed (see auto_picks_openvino). An http:// or grpc://
    URL -> RemoteRunner (the model on a Triton server). Returned active."""
    from .remote import is_server_url, open_remote  # noqa: PLC0415 - tritonclient itself loads on use

    if is_server_url(path):
        return open_remote(path, provider)
    p = Path(path)
    if provider not in PROVIDER_CHOICES:
        raise HfrError(f"--provider {provider!r} must be one of: {', '.join(PROVIDER_CHOICES)}")
    if not p.is_file():
        raise HfrError(f"{p}: {'is a folder, not a model' if p.is_dir() else 'file not found'}")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        meta = load_meta(p)
        if provider == "openvino" or (provider == "auto" and auto_picks_openvino(meta.precision)):
            from .openvino import OvRunner  # noqa: PLC0415

            runner: Runner = OvRunner(p, meta=meta)
        else:
            from .onnxrt import OrtRunner  # noqa: PLC0415

            runner = OrtRunner(p, provider=provider, device=device, meta=meta)
    elif suffix in ENGINE_SUFFIXES:
        if provider not in ("auto", "tensorrt"):
            raise HfrError(f"--provider {provider} applies to .onnx graphs; {p.name} is a TensorRT engine "
                           f"(give model.onnx to run it with ONNX Runtime)")
        from .tensorrt import TrtRunner  # noqa: PLC0415

        runner = TrtRunner(p, device=device)
    else:
        raise HfrError(f"{p}: unknown artifact type {suffix or '(no suffix)'!r}; give a .onnx graph or a "
                       f".engine/.plan TensorRT engine")
    return runner.activate()


def auto_picks_openvino(precision: str = "int8") -> bool:
    """True when `auto` runs a graph of `precision` on OpenVINO: an int8 graph, OpenVINO installed,
    and no GPU provider in ONNX Runtime. Measured on a 2-core CPU (benchmarks/speed.py): OpenVINO
    runs a Q/DQ graph in int8 kernels, about 2x ONNX Runtime's fp32 graph on one thread, while
    ONNX Runtime's own int8 kernels are slower than its fp32 ones; an fp32 graph runs no faster on
    OpenVINO in float32 (and slower on a busy CPU), so fp32 and fp16 graphs stay on ONNX Runtime."""
    import importlib.util  # noqa: PLC0415

    if precision != "int8" or importlib.util.find_spec("openvino") is None:
        return False
    from .onnxrt import PROVIDERS, ort_module  # noqa: PLC0415

    gpu = {PROVIDERS["tensorrt"], PROVIDERS["cuda"]}
    return not gpu & set(ort_module().get_available_providers())


def tensorrt_usable() -> Tuple[bool, str]:
    """(True, "TensorRT 10.3.0 on Orin") when an engine can run here, else (False, why not)."""
    try:
        from .trtinfo import gpu_info, trt_version  # noqa: PLC0415
    except ImportError:
        return False, "no TensorRT support in this hfr-edge"
    version = trt_version()
    if version is None:
        return False, "no TensorRT here"
    from .cuda import binding_available  # noqa: PLC0415

    if binding_available() is None:
        return False, "no CUDA binding (pycuda or cuda-python) here"
    gpu = gpu_info()
    if not gpu:
        return False, "no GPU here"
    return True, f"TensorRT {version} on {gpu.get('name', 'the GPU')}"


def default_artifact(folder=".") -> Tuple[Path, str]:
    """The artifact `run`/`bench`/`eval` use when MODEL is omitted, and a sentence saying why."""
    folder = Path(folder)
    engine, onnx = folder / "model.engine", folder / "model.onnx"
    if engine.is_file():
        usable, why = tensorrt_usable()
        if usable:
            return engine, f"using {engine} ({why})"
        if onnx.is_file():
            return onnx, f"using {onnx} ({why}, so not {engine.name})"
        raise HfrError(f"{engine} needs TensorRT, but there is {why}; give {onnx.name} instead "
                       f"(export it with `hfr-edge export ckpt.pt`) or run on the device the engine was built for")
    if onnx.is_file():
        usable, why = tensorrt_usable()
        if usable:
            return onnx, f"using {onnx} (no {engine.name}; build one with `hfr-edge build {onnx}` for TensorRT speed)"
        return onnx, f"using {onnx} ({why})"
    raise HfrError(f"no model.engine or model.onnx in {folder.resolve()}; run `hfr-edge export ckpt.pt` first "
                   f"(or name the model to use)")
