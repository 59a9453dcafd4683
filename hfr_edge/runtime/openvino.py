"""The OpenVINO backend of the runner interface: reads the .onnx graph directly (no IR conversion)
and compiles it for the CPU; one image runs on one request using every core, a batch is split over
the throughput plan's streams. What GPU-less industrial PCs (Intel CPUs) already use; its CPU
plugin runs the quantized convolutions of a Q/DQ graph as int8 kernels (`calibrate --target cpu`)."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..base.errors import HfrError, first_line
from ..base.fsio import path_or_bytes
from ..base.lazy import require
from .runner import Runner

HINTS = ("auto", "latency", "throughput")
INSTALL_HINT = "pip install openvino (or hfr-edge[openvino]), or use --provider cpu for ONNX Runtime"


_CORE = None


def ov_module():
    return require("openvino", "openvino", INSTALL_HINT)


def ov_core():
    """The process's one OpenVINO Core, kept until exit. Each Core's CPU plugin installs its own
    signal alternate stack on the calling thread and, when the Core is destroyed, restores the one it
    found and unmaps its own; Cores destroyed out of creation order (two runners freed by the garbage
    collector) leave the main thread's alternate stack pointing at unmapped memory, and the next
    Ctrl-C or SIGTERM then kills the process with a segmentation fault. One Core is one plugin."""
    global _CORE
    if _CORE is None:
        _CORE = ov_module().Core()
    return _CORE


def openvino_info() -> Optional[Tuple[str, List[str]]]:
    """(version, ["CPU (its name)", ...]) when OpenVINO is installed here, else None; for `doctor`."""
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("openvino") is None:
        return None
    ov = ov_module()
    core = ov_core()
    return ov.get_version(), [f"{d} ({core.get_property(d, 'FULL_DEVICE_NAME')})" for d in core.available_devices]


def _dims(partial_shape) -> list:
    """An OpenVINO partial shape as a list: ints where static, "N" where dynamic."""
    return [d.get_length() if d.is_static else "N" for d in partial_shape]


class OvRunner(Runner):
    """device: an OpenVINO device name ("CPU"). hint: "latency" (one request, every core on one
    image), "throughput" (the batch split over OpenVINO's streams, one request each, in flight
    together), or "auto" (the default): latency for a single image, throughput for a batch, each
    plan compiled on first use. Inference runs in float32 wherever the graph is not quantized:
    OpenVINO's CPU default on bfloat16-capable CPUs would otherwise move the map by about 0.01."""

    def __init__(self, path, device: str = "CPU", hint: str = "auto", threads: int = 0, meta=None):
        super().__init__(path, meta)
        if hint not in HINTS:
            raise HfrError(f"OpenVINO hint {hint!r} must be one of {', '.join(HINTS)}")
        self.device, self.hint, self.threads = device, hint, threads
        self._core = self._model = None
        self._plans: Dict[str, tuple] = {}  # "latency"/"throughput" -> (compiled model, its requests)

    def _activate(self) -> None:
        ov = ov_module()
        core = ov_core()
        try:
            model = core.read_model(path_or_bytes(self.path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise HfrError(f"{self.path}: not a valid ONNX file for OpenVINO {ov.get_version()} "
                           f"({first_line(exc, 160)}); re-export it with `hfr-edge export`") from None
        ins, outs = model.inputs, model.outputs
        self._check_graph_io([i.get_any_name() for i in ins], _dims(ins[0].get_partial_shape()) if len(ins) == 1 else [],
                             {n for o in outs for n in o.get_names()})
        self._core, self._model = core, model
        self._plan("throughput" if self.hint == "throughput" else "latency")  # compile errors show at open
        self.backend = f"openvino {ov.get_version().split('-')[0]}/{self.device}"

    def _plan(self, hint: str) -> tuple:
        if hint not in self._plans:
            config = {"PERFORMANCE_HINT": hint.upper(), "INFERENCE_PRECISION_HINT": "f32"}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = self.threads
            try:
                compiled = self._core.compile_model(self._model, self.device, config)
            except Exception as exc:  # noqa: BLE001
                raise HfrError(f"{self.path}: OpenVINO cannot compile it for {self.device} ({first_line(exc, 160)}); "
                               f"use --provider cpu for ONNX Runtime", exit_code=1) from None
            n = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS") if hint == "throughput" else 1
            self._plans[hint] = (compiled, [compiled.create_infer_request() for _ in range(max(1, n))])
        return self._plans[hint]

    def _infer(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        # auto: a batch over the throughput streams; one image, or a fixed-batch graph (one request), on every core
        hint = self.hint if self.hint != "auto" else ("latency" if len(x) == 1 or self.exact_batch else "throughput")
        compiled, requests = self._plan(hint)
        # views, C-contiguous along the batch; a graph of a fixed batch runs whole on one request
        chunks = [x] if self.exact_batch else np.array_split(x, min(len(requests), len(x)))
        try:
            for req, chunk in zip(requests, chunks):
                req.start_async({0: chunk}, share_inputs=True)
            for req in requests[:len(chunks)]:
                req.wait()
            parts = [{name: req.get_tensor(compiled.output(name)).data.copy() for name in self.output_names}
                     for req in requests[:len(chunks)]]
        except Exception as exc:  # noqa: BLE001
            raise HfrError(f"{self.path}: OpenVINO failed to run the graph ({first_line(exc, 160)})", exit_code=1) from None
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _deactivate(self) -> None:
        self._plans = {}
        self._core = self._model = None
