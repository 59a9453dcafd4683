"""The ONNX Runtime backend of the runner interface: one InferenceSession on the best provider
(TensorRT -> CUDA -> CPU for "auto"), the graph's I/O checked against the artifact metadata.

The TensorRT provider gets the precision flags the graph needs (a Q/DQ graph fails to build without
trt_int8_enable, an fp16 graph without trt_fp16_enable), an engine and timing cache beside the model
in a folder keyed by the graph's bytes, TensorRT, ONNX Runtime and the GPU (so the second start
takes seconds, and nothing stale is ever reused), and a batch profile 1..8. A provider that fails is
reported as what it is; with --provider auto the next one is used, after one warning line.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..base.errors import HfrError, first_line
from ..base.fsio import path_or_bytes as model_source  # ONNX Runtime cannot open a non-UTF-8 name
from .runner import Runner

PROVIDERS = {  # --provider value -> ONNX Runtime execution provider, in "auto" order
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
GPU_HINT = ("install onnxruntime-gpu (on a Jetson, NVIDIA's build for JetPack from its Jetson index), "
            "or use --provider auto")
TRT_MAX_BATCH = 8  # the TensorRT provider's batch profile 1..8, as `hfr-edge build`'s default
GRAPH_ERRORS = ("InvalidProtobuf", "NoSuchFile", "InvalidGraph")  # onnxruntime's exception types naming the graph


def physical_cores(cpuinfo: str = "/proc/cpuinfo") -> int:
    """Physical cores this process may use: distinct (physical id, core id) pairs of /proc/cpuinfo,
    at most the CPUs in its affinity mask; the logical count where cpuinfo lists no cores (ARM)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cores, phys = set(), "0"
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "physical id":
                    phys = value.strip()
                elif key.strip() == "core id":
                    cores.add((phys, value.strip()))
    except OSError:
        pass
    return max(1, min(len(cores), logical) if cores else logical)


def ort_module():
    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError:
        raise HfrError("onnxruntime is not importable: pip install onnxruntime (onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def choose_providers(provider: str, available: List[str]) -> List[str]:
    """Providers to ask for, best first, CPU last as ONNX Runtime's own fallback."""
    if provider == "auto":
        return [p for p in PROVIDERS.values() if p in available] or list(available)
    if provider not in PROVIDERS:
        raise HfrError(f"--provider {provider!r} must be one of: auto, {', '.join(PROVIDERS)}, openvino")
    want = PROVIDERS[provider]
    if want not in available:
        raise HfrError(f"--provider {provider}: {want} is not available in this onnxruntime "
                       f"(available: {', '.join(available)}); {GPU_HINT}")
    return [want] + ([PROVIDERS["cpu"]] if want != PROVIDERS["cpu"] and PROVIDERS["cpu"] in available else [])


def trt_cache_dir(path: Path, ort_version: str) -> Path:
    """<model>.trt-cache/<key> beside the model (or under ~/.cache/hfr-edge where that folder is read-only);
    key: the graph's sha256, TensorRT, ONNX Runtime and the GPU, since ONNX Runtime names its cached
    engines after the model's path and structure, not its weights."""
    from .trtinfo import gpu_info, trt_lib_version  # noqa: PLC0415

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    cc = (gpu_info() or {}).get("compute_capability") or "unknown"
    key = f"{h.hexdigest()[:16]}-trt{trt_lib_version() or 'unknown'}-ort{ort_version}-sm{cc.replace('.', '')}"
    parent = path.resolve().parent
    base = parent / f"{path.name}.trt-cache" if os.access(parent, os.W_OK) else (
        Path.home() / ".cache" / "hfr-edge" / f"{path.name}.trt-cache")
    return base / key


def provider_options(name: str, meta, path: Path, device: int, ort_version: str) -> Optional[dict]:
    """The options ONNX Runtime gets for provider `name` on this graph (None for the CPU)."""
    if name == PROVIDERS["cpu"]:
        return None
    if name != PROVIDERS["tensorrt"]:
        return {"device_id": device}
    cache = trt_cache_dir(path, ort_version)
    opts = {"device_id": device, "trt_fp16_enable": meta.precision == "fp16", "trt_int8_enable": meta.precision == "int8",
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache), "trt_timing_cache_enable": True}
    if meta.extra.get("batch", "dynamic") == "dynamic":  # one engine for batches 1..8, built once
        s = meta.image_size
        opts.update(trt_profile_min_shapes=f"image:1x3x{s}x{s}", trt_profile_opt_shapes=f"image:1x3x{s}x{s}",
                    trt_profile_max_shapes=f"image:{TRT_MAX_BATCH}x3x{s}x{s}")
    return opts


class OrtRunner(Runner):
    """spinning=False: idle intra-op threads sleep instead of spinning, so runners timed in turns
    (a benchmark) or beside other work do not steal CPU from each other. threads: intra-op threads,
    default one per physical core, the count ONNX Runtime picks itself, but set explicitly: left at
    0, ONNX Runtime also pins each thread to a core, and on a CPU shared with other processes a
    pinned thread waits for its core (fp32 graph, 2 cores at load 12: 97 ms pinned, 41 ms not)."""

    def __init__(self, path, provider: str = "auto", device: int = 0, meta=None, spinning: bool = True,
                 threads: int = 0):
        super().__init__(path, meta)
        self.provider = provider
        self.device = device
        self.spinning, self.threads = spinning, threads
        self._sess = None
        self._names: List[str] = []

    def _activate(self) -> None:
        ort = ort_module()
        names = choose_providers(self.provider, ort.get_available_providers())
        sess = self._open(ort, names)
        self._check_graph(sess)
        self._sess = sess

    def _open(self, ort, names: List[str]):
        """An InferenceSession on names[0] (then ONNX Runtime's own CPU fallback for unsupported nodes);
        a failing GPU provider is skipped with one warning line under --provider auto."""
        while True:
            providers = []
            for n in names:
                opts = provider_options(n, self.meta, self.path, self.device, ort.__version__)
                if opts and n == PROVIDERS["tensorrt"]:
                    Path(opts["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
                providers.append((n, opts) if opts else n)
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            if not self.spinning:  # timed in turns or beside other work: idle threads sleep
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # explicit: left at 0, ONNX Runtime also pins its threads to cores (2.3x slower on a shared VM)
            so.intra_op_num_threads = self.threads or physical_cores()
            try:
                sess = ort.InferenceSession(model_source(self.path), so, providers=providers)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind11 types
                names = self._next_providers(ort, names, exc)
                continue
            if hasattr(sess, "disable_fallback"):
                sess.disable_fallback()  # its run-time fallback prints a banner to stdout; ours warns once
            self._names = names
            used = sess.get_providers()[0]
            self.backend = f"onnxruntime/{used}"
            if used == PROVIDERS["tensorrt"] and self.meta.extra.get("batch", "dynamic") == "dynamic":
                self.max_batch = TRT_MAX_BATCH
            return sess

    def _next_providers(self, ort, names: List[str], exc: BaseException, doing: str = "opening the graph") -> List[str]:
        """After names[0] failed: the providers to try next, or HfrError saying what failed."""
        first = first_line(exc, 160)
        gpu = names[0] != PROVIDERS["cpu"]
        opened = doing != "opening the graph"  # then the graph itself is known to load
        if not gpu or type(exc).__name__ in GRAPH_ERRORS or not (opened or self._opens_on_cpu(ort)):
            raise HfrError(f"{self.path}: not a valid ONNX file for onnxruntime {ort.__version__} ({first}); "
                           f"re-export it with `hfr-edge export`") from None
        if self.provider != "auto" or len(names) < 2:
            raise HfrError(f"{self.path}: ONNX Runtime's {names[0]} failed while {doing} ({first}); the graph "
                           f"itself is fine (it runs on the CPU): check the GPU libraries with `hfr-edge doctor`, "
                           f"or use --provider {'cuda' if names[0] == PROVIDERS['tensorrt'] else 'cpu'}", exit_code=1)
        print(f"warning: {names[0]} failed on {self.path.name} ({first}); using {names[1]} instead", file=sys.stderr)
        return names[1:]

    def _opens_on_cpu(self, ort) -> bool:
        try:
            ort.InferenceSession(model_source(self.path), providers=[PROVIDERS["cpu"]])
        except Exception:  # noqa: BLE001
            return False
        return True

    def _check_graph(self, sess) -> None:
        ins = sess.get_inputs()
        self._check_graph_io([i.name for i in ins], ins[0].shape if len(ins) == 1 else [],
                             {o.name for o in sess.get_outputs()})

    def _infer(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        try:
            values = self._sess.run(list(self.output_names), {self.input_name: x})
        except Exception as exc:  # noqa: BLE001
            if type(exc).__name__ != "EPFail" or self._names[0] == PROVIDERS["cpu"]:
                first = first_line(exc, 160)
                raise HfrError(f"{self.path}: onnxruntime failed to run the graph ({first})", exit_code=1) from None
            # a GPU provider failed at run time (e.g. TensorRT building its engine for a new shape)
            ort = ort_module()
            self._sess = self._open(ort, self._next_providers(ort, self._names, exc, "running the graph"))
            return self._infer(x)
        return dict(zip(self.output_names, values))

    def _deactivate(self) -> None:
        self._sess = None
