"""fp32 graph -> explicit INT8 (Q/DQ) graph, for TensorRT 8.5 to 11 (the default) or for a CPU
through OpenVINO (`--target cpu`).

ONNX Runtime static quantization in QDQ format. Both targets: symmetric int8 weights (per channel),
only Conv / ConvTranspose / Gemm / MatMul quantized (on their inputs, as TensorRT's own toolkits
do), bias left in float, the fusion tail and the outputs excluded, no Q/DQ in front of Resize, the
encoder's layers at half the input resolution left in float (`early_layers`). ORT's pre-processing
pass (shape inference, optimisation) runs first.
- tensorrt: symmetric int8 activations (zero point 0), TensorRT's rule; ConvTranspose weights per
  tensor (TensorRT has no per-output-channel deconvolution weights: NVIDIA/TensorRT issues 1694,
  2380; ONNX Runtime >= 1.18 writes them per channel on axis 1); both inputs of the encoder's
  residual Adds quantized (NVIDIA's placement for residual blocks, so the Add fuses into an int8
  kernel instead of running in float between int8 layers).
- cpu: unsigned asymmetric (uint8) activations. OpenVINO's CPU plugin (oneDNN) runs
  ConvTranspose in int8 only with uint8 activations: with int8 ones 2 of the 3 decoder
  up-convolutions fell back to fp32 (its per-layer profile; the Q/DQ graph then ran 1.3x slower).
  Q/DQ on the residual Adds too (NNCF's placement) changed neither speed nor accuracy here: the
  plugin fuses those Adds into the int8 convolution before them, so they are left out.
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
from ..base.images import fill_batch
from ..export.graph import MODEL_SCOPE

QUANT_OPS = ["Conv", "ConvTranspose", "Gemm", "MatMul"]  # weighted ops: their inputs are quantized
RESIDUAL_OP = "Add"  # a residual Add of the encoder: both inputs quantized
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INT8_MAX = 127  # symmetric int8: [-127, 127], as ONNX Runtime and TensorRT use it
METHODS = ("minmax", "entropy", "percentile")
PERCENTILE = 99.999  # of |activation|, for --method percentile
STATS_SCOPE = "/amap/gauss"  # the feature statistics' nodes (AnomalyMap.gauss)


class _Reader:
    """CalibrationDataReader over float32 images (N, 3, S, S), a few images per call."""

    def __init__(self, x: np.ndarray, batch: int = 4, fixed: int = 0):
        if fixed:  # a graph exported with a fixed batch takes exactly that many: the ragged rest is left out
            x = x[:len(x) // fixed * fixed] if len(x) >= fixed else fill_batch(x, fixed)
            batch = fixed
        else:  # equal batches only: ORT's histogram calibrators fail on a ragged last batch (e.g. 5 = 4 + 1)
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


TARGET_OPTIONS = {  # target -> (activation type, symmetric activations)
    "tensorrt": ("QInt8", True),
    "cpu": ("QUInt8", False),
}


def early_layers(model) -> List[str]:
    """The encoder nodes that run at half the input's resolution or finer (EfficientNet-Lite0: the stem,
    block 0 and block 1's expansion; a ResNet: conv1): kept in float in the Q/DQ graph. Their int8
    rounding reaches every level (the stride-4 one within three blocks) and was bottle's whole int8
    loss: an 8-epoch model's pixel AUROC dropped by 0.009 (cpu target, OpenVINO) and 0.011 (TensorRT
    graph) with them in int8, by -0.0003 and 0.0005 in float; quantizing the decoder cost nothing, and
    keeping the tapped blocks in float did not help (benchmarks/int8_early.py for a 30-epoch model).
    They are about 6 % of the encoder's multiply-adds and 2 % of OpenVINO's int8 time."""
    import onnx

    g = onnx.shape_inference.infer_shapes(model).graph  # also where ORT's pre-processing failed
    dims = lambda vi: [d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    size = dims(g.input[0])[-1]
    shapes = {vi.name: dims(vi) for vi in list(g.value_info) + list(g.output)}
    return sorted(n.name for n in g.node if n.name.startswith(MODEL_SCOPE) and "/decoder/" not in n.name
                  and any(len(shapes.get(o, [])) == 4 and shapes[o][-1] * 2 >= size for o in n.output))


def quantize(fp32_model_path: str, x: np.ndarray, out_path: str, method: str, target: str = "tensorrt",
             early_float: bool = True) -> None:
    """Write the Q/DQ graph of `fp32_model_path` calibrated on x to out_path (not atomic: a temp);
    `early_float` False quantizes the early layers too (for statistics refitted on the int8 graph)."""
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
        keep = early_layers(model) if early_float else []
        if target == "tensorrt":
            exclude = [n.name for n in model.graph.node if not n.name.startswith(MODEL_SCOPE)
                       or (n.op_type == RESIDUAL_OP and not _is_residual_add(n, model.graph))]
            ops = QUANT_OPS + [RESIDUAL_OP]
        else:
            exclude = [n.name for n in model.graph.node if not n.name.startswith(MODEL_SCOPE)]
            ops = list(QUANT_OPS)
        exclude = sorted(set(exclude) | set(keep))
        act_type, symmetric = TARGET_OPTIONS[target]
        extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True, "QuantizeBias": False,
                 "OpTypesToExcludeOutputQuantization": ops, "CalibPercentile": PERCENTILE,
                 "CalibTensorRangeSymmetric": symmetric}
        q_path = os.path.join(td, "q.onnx")
        with contextlib.redirect_stdout(io.StringIO()):  # ORT's histogram calibrators print progress
            quantize_static(pre, q_path, _Reader(x, fixed=fixed_batch(model)), quant_format=QuantFormat.QDQ,
                            activation_type=getattr(QuantType, act_type), weight_type=QuantType.QInt8, per_channel=True,
                            op_types_to_quantize=ops, nodes_to_exclude=exclude, calibrate_method=calib,
                            extra_options=extra)
        q = onnx.load(q_path)
        if target == "tensorrt":  # OpenVINO takes per-channel deconvolution weights; TensorRT does not
            _per_tensor_deconv_weights(q, model)
        _float_tail_inputs(q, keep_adds=target == "tensorrt", keep=set(keep))
        _drop_dangling(q)
        onnx.save(q, out_path)


def fixed_batch(model) -> int:
    """The batch the graph's input was exported with (`export --batch N`), 0 where it is dynamic."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else 0


def stats_inputs(model) -> List[str]:
    """The encoder features the statistics read: the tensors that enter the graph's /amap/gauss nodes
    from outside them (one per level the statistics weigh)."""
    made = {o: n.name for n in model.graph.node for o in n.output}
    return sorted({i for n in model.graph.node if n.name.startswith(STATS_SCOPE) for i in n.input
                   if i in made and not made[i].startswith(STATS_SCOPE)})


def _is_residual_add(node, graph) -> bool:
    """An Add of two computed tensors (a skip connection), not of a constant."""
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return len(node.input) == 2 and not any(i in consts for i in node.input)


def _per_tensor_deconv_weights(q, fp32) -> None:
    """Re-quantize every ConvTranspose weight with one symmetric scale for the whole tensor, from the
    float weights of the graph that was calibrated (ONNX Runtime has no per-op per-channel switch)."""
    from onnx import numpy_helper

    g = q.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    float_w = {n.name: n.input[1] for n in fp32.graph.node if n.op_type == "ConvTranspose"}
    fp32_inits = {i.name: i for i in fp32.graph.initializer}
    for n in g.node:
        dq = producers.get(n.input[1]) if n.op_type == "ConvTranspose" else None
        if dq is None or dq.op_type != "DequantizeLinear" or float_w.get(n.name) not in fp32_inits:
            continue
        w = numpy_helper.to_array(fp32_inits[float_w[n.name]]).astype(np.float64)
        scale = max(float(np.abs(w).max()), 1e-12) / INT8_MAX
        qw = np.clip(np.round(w / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
        for name, arr in ((dq.input[0], qw), (dq.input[1], np.array(scale, np.float32)),
                          (dq.input[2], np.array(0, np.int8))):
            inits[name].CopyFrom(numpy_helper.from_array(arr, name))
        kept = [a for a in dq.attribute if a.name != "axis"]
        del dq.attribute[:]
        dq.attribute.extend(kept)


def _float_tail_inputs(model, keep_adds: bool = True, keep=frozenset()) -> None:
    """ORT gives every consumer of a quantized tensor the dequantized copy, also fusion-tail nodes
    it was told to exclude (an encoder level feeds both the next conv and the residual). Give every
    consumer that is not a quantized op the original float tensor: Q/DQ then feeds only the model's
    Conv / ConvTranspose / Gemm / MatMul and the encoder's residual Adds (a weighted op of the fusion
    tail, such as the statistics' projection reading an encoder level, takes the float tensor too)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        quantized = n.op_type in QUANT_OPS and n.name.startswith(MODEL_SCOPE)
        if n.name not in keep and (quantized or n.op_type in QDQ_OPS or (keep_adds and _quantized_add(n))):
            continue
        for k, name in enumerate(n.input):
            dq = producers.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producers.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[k] = q.input[0]


def _quantized_add(node) -> bool:
    return node.op_type == RESIDUAL_OP and node.name.startswith(MODEL_SCOPE)


def _drop_dangling(model) -> None:
    """Remove Q/DQ nodes nobody consumes any more."""
    while True:
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node if n.op_type in QDQ_OPS
                and not any(o in used for o in n.output)]
        if not dead:
            return
        for n in dead:
            model.graph.node.remove(n)


def qdq_problems(model, target: str = "tensorrt") -> List[str]:
    """Everything in a Q/DQ graph that breaks the target's rules (empty list = fine): for both,
    Q/DQ only in front of the quantized ops, never on outputs, Resize or the fusion tail; for
    TensorRT also zero points of 0 (symmetric int8)."""
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

    def const(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return numpy_helper.to_array(consts[name].attribute[0].t) if name in consts else None

    def dequantized(name) -> bool:
        p = producers.get(name)
        return p is not None and p.op_type == "DequantizeLinear"

    problems = []
    qdq = [n for n in g.node if n.op_type in QDQ_OPS]
    if not qdq:
        problems.append("no Q/DQ node at all")
    for n in qdq:
        if target == "tensorrt" and len(n.input) > 2 and n.input[2]:
            arr = const(n.input[2])
            if arr is None or np.any(arr != 0):
                problems.append(f"{n.name}: zero point is not 0")
            elif arr.dtype != np.int8:
                problems.append(f"{n.name}: zero point type {arr.dtype} is not int8")
        if any(o in outputs for o in n.output):
            problems.append(f"{n.name}: Q/DQ on graph output {n.output[0]}")
        for c in consumers.get(n.output[0], []):
            if c.op_type == "Resize":
                problems.append(f"{n.name}: Q/DQ in front of Resize {c.name}")
            if not c.name.startswith(MODEL_SCOPE) and c.op_type not in QDQ_OPS:
                problems.append(f"{n.name}: Q/DQ feeds fusion-tail node {c.name}")
        if n.op_type == "DequantizeLinear":
            for c in consumers.get(n.output[0], []):
                if c.op_type not in QUANT_OPS + list(QDQ_OPS) and not (target == "tensorrt" and _quantized_add(c)):
                    problems.append(f"{n.name}: quantized input of {c.op_type} {c.name} "
                                    f"(only {', '.join(QUANT_OPS)} and residual Adds)")
    for n in g.node:
        if not n.name.startswith(MODEL_SCOPE) and n.op_type not in QDQ_OPS:
            if any(dequantized(i) for i in n.input):
                problems.append(f"fusion-tail node {n.name} takes a dequantized input")
        if target == "tensorrt" and n.op_type == "ConvTranspose" and len(n.input) > 1 and dequantized(n.input[1]):
            scale = const(producers[n.input[1]].input[1])
            if scale is None or scale.size != 1:
                problems.append(f"{n.name}: ConvTranspose weight quantized per channel; TensorRT supports "
                                f"per-tensor deconvolution weights only (re-run `hfr-edge calibrate`)")
        if target == "tensorrt" and _quantized_add(n) and sum(dequantized(i) for i in n.input) == 1:
            problems.append(f"{n.name}: residual Add with one quantized input (quantize both, or neither)")
    return sorted(set(problems))
