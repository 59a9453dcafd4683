"""The ONNX Runtime backend of the runner interface: one InferenceSession on the best provider
(TensorRT -> CUDA -> CPU for "auto"), the graph's I/O checked against the artifact metadata."""

from __future__ import annotations

import os
from typing import Dict, List

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

    def _activate(self) -> None:
        ort = ort_module()
        names = choose_providers(self.provider, ort.get_available_providers())
        providers = [(n, {"device_id": self.device}) if n != PROVIDERS["cpu"] else n for n in names]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if not self.spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.intra_op_num_threads = self.threads or physical_cores()
        try:
            sess = ort.InferenceSession(model_source(self.path), so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind11 types
            first = first_line(exc, 160)
            raise HfrError(f"{self.path}: not a valid ONNX file for onnxruntime {ort.__version__} ({first}); "
                           f"re-export it with `hfr-edge export`") from None
        self._check_graph(sess)
        self._sess = sess
        self.backend = f"onnxruntime/{sess.get_providers()[0]}"

    def _check_graph(self, sess) -> None:
        ins = sess.get_inputs()
        self._check_graph_io([i.name for i in ins], ins[0].shape if len(ins) == 1 else [],
                             {o.name for o in sess.get_outputs()})

    def _infer(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        try:
            values = self._sess.run(list(self.output_names), {self.input_name: x})
        except Exception as exc:  # noqa: BLE001
            first = first_line(exc, 160)
            raise HfrError(f"{self.path}: onnxruntime failed to run the graph ({first})", exit_code=1) from None
        return dict(zip(self.output_names, values))

    def _deactivate(self) -> None:
        self._sess = None
