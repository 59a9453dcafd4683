"""fp32 graph -> explicit INT8 (Q/DQ) graph that TensorRT 8.5 to 11 builds as written.

ONNX Runtime static quantization in QDQ format with TensorRT's rules: symmetric
int8 (zero point 0) activations and weights, per-channel weights, only Conv / ConvTranspose /
Gemm / MatMul quantized (on their inputs, as TensorRT's own toolkits do), bias left in float,
the fusion tail and the outputs excluded, no Q/DQ in front of Resize. ORT's pre-processing pass
(shape inference, optimisation) runs first.
"""

from __future__ import annotations

import logging
import contextlib
import io
import os
import shutil
import tempfile
from typing import List

import numpy as np

from ..base import console
from ..base.contract import INPUT_NAME
from ..base.errors import HfrError
from ..export.graph import MODEL_SCOPE

QUANT_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]
METHODS = ("minmax", "entropy", "percentile")
PERCENTILE = 99.999  # of |activation|, for --method percentile


class _Reader:
    """CalibrationDataReader over float32 images (N, 3, S, S), a few images per call."""

    def __init__(self, x: np.ndarray, batch: int = 4):
        # equal batches only: ORT's histogram calibrators fail on a ragged last batch (e.g. 5 = 4 + 1)
        batch = max(b for b in range(1, batch + 1) if len(x) % b == 0) if len(x) else 1
        self.x, self.batch, self.i = x, batch, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        b = self.x[self.i:self.i + self.batch]
        self.i += self.batch
        return {INPUT_NAME: np.ascontiguousarray(b)}

    def rewind(self):
        self.i = 0


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    """Collect a logger's records instead of printing them; yields the list (empty: no error)."""
    records: List[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.ERROR:
                records.append(record)

    handler, propagate = _Keep(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def quantize(fp32_model_path: str, x: np.ndarray, out_path: str, method: str) -> None:
    """Write the Q/DQ graph of `fp32_model_path` calibrated on x to out_path (not atomic: a temp)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in METHODS:
        raise HfrError(f"--method {method!r} must be one of {', '.join(METHODS)}")
    calib = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
             "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory(prefix="hfr-calib-") as td:
        pre, src = os.path.join(td, "pre.onnx"), os.path.join(td, "fp32.onnx")
        shutil.copyfile(fp32_model_path, src)  # ONNX Runtime cannot open a non-UTF-8 file name
        with _quiet(logging.getLogger("onnxruntime.quantization.shape_inference")) as failed:
            quant_pre_process(src, pre, skip_symbolic_shape=True)
        if failed:  # ORT logs a traceback and goes on without its optimisation: say it in one line
            console.warn("ONNX Runtime's graph optimisation before calibration failed; calibrating the "
                         "graph as exported")
        model = onnx.load(pre)
        exclude = [n.name for n in model.graph.node if not n.name.startswith(MODEL_SCOPE)]
        extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                 "OpTypesToExcludeOutputQuantization": QUANT_OPS, "CalibPercentile": PERCENTILE,
                 "CalibTensorRangeSymmetric": True}
        q_path = os.path.join(td, "q.onnx")
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram calibrators print progress
            quantize_static(pre, q_path, _Reader(x), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            op_types_to_quantize=QUANT_OPS, nodes_to_exclude=exclude, calibrate_method=calib,
                            extra_options=extra)
        q = onnx.load(q_path)
        _float_tail_inputs(q)
        _drop_dangling(q)
        onnx.save(q, out_path)


def _float_tail_inputs(model) -> None:
    """ORT gives every consumer of a quantized tensor the dequantized copy, also fusion-tail nodes
    it was told to exclude (an encoder level feeds both the next conv and the residual) and
    residual Adds. Give every consumer that is not a quantized op the original float tensor:
    Q/DQ then feeds only Conv / ConvTranspose / Gemm / MatMul."""
    producers = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type in QUANT_OPS + ["QuantizeLinear", "DequantizeLinear"]:
            continue
        for k, name in enumerate(n.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[k] = q.input[0]


def _drop_dangling(model) -> None:
    """Remove Q/DQ nodes nobody consumes any more."""
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            model.graph.node.remove(n)


def qdq_problems(model) -> List[str]:
    """Everything in a Q/DQ graph that breaks TensorRT's rules (empty list = fine)."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    producers = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    problems = []
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        problems.append("no Q/DQ node at all")
    for n in qdq:
        if len(n.input) > 2 and n.input[2]:
            zp = n.input[2]
            arr = numpy_helper.to_array(inits[zp]) if zp in inits else (
                numpy_helper.to_array(consts[zp].attribute[0].t) if zp in consts else None)
            if arr is None or np.any(arr != 0):
                problems.append(f"{n.name}: zero point is not 0")
            elif arr.dtype != np.int8:
                problems.append(f"{n.name}: zero point type {arr.dtype} is not int8")
        if any(o in outputs for o in n.output):
            problems.append(f"{n.name}: Q/DQ on graph output {n.output[0]}")
        for c in consumers.get(n.output[0], []):
            if c.op_type == "Resize":
                problems.append(f"{n.name}: Q/DQ in front of Resize {c.name}")
            if not c.name.startswith(MODEL_SCOPE) and c.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                problems.append(f"{n.name}: Q/DQ feeds fusion-tail node {c.name}")
        if n.op_type == "DequantizeLinear":
            for c in consumers.get(n.output[0], []):
                if c.op_type not in QUANT_OPS + ["QuantizeLinear", "DequantizeLinear"]:
                    problems.append(f"{n.name}: quantized input of {c.op_type} {c.name} (only {', '.join(QUANT_OPS)})")
    for n in g.node:
        if not n.name.startswith(MODEL_SCOPE) and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            for i in n.input:
                p = producers.get(i)
                if p is not None and p.op_type == "DequantizeLinear":
                    problems.append(f"fusion-tail node {n.name} takes a dequantized input")
    return sorted(set(problems))
