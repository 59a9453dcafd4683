"""The cost of one image, counted from a graph: multiply-accumulates of every Conv, ConvTranspose,
MatMul and Gemm (x2 = FLOP), with shapes from ONNX shape inference at batch 1. Everything else
(activations, Resize, reductions) is memory traffic, not arithmetic, and is left out.

Counted once at export and stored in the metadata (`gflop_per_image`), which fp16 conversion,
calibration and `build` copy: so `bench` reports it for a graph and for a TensorRT engine alike
without onnx in the runtime (a Jetson at the line has none)."""

from __future__ import annotations

import copy
from math import prod
from pathlib import Path
from typing import Dict, List, Optional

MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _shapes(model) -> Dict[str, List[int]]:
    """Every tensor's shape with the batch fixed to 1 (unknown dims as 0)."""
    import onnx

    m = copy.deepcopy(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1  # the dynamic batch
    m = onnx.shape_inference.infer_shapes(m)
    shapes = {i.name: list(i.dims) for i in m.graph.initializer}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
    for n in m.graph.node:  # Constant nodes carry their shape in the attribute
        if n.op_type == "Constant" and n.attribute and n.attribute[0].HasField("t"):
            shapes[n.output[0]] = list(n.attribute[0].t.dims)
    return shapes


def _attr(node, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def _macs(node, shapes: Dict[str, List[int]]) -> int:
    def shape(i: int) -> List[int]:
        return shapes.get(node.input[i], []) if len(node.input) > i else []

    x, w, y = shape(0), shape(1), shapes.get(node.output[0], [])
    if node.op_type == "Conv":  # each output element: (Cin / groups) * kh * kw
        return prod(y) * prod(w[1:]) if y and w else 0
    if node.op_type == "ConvTranspose":  # each input element scatters into Cout / groups * kh * kw
        return prod(x) * prod(w[1:]) if x and w else 0
    if node.op_type == "MatMul":  # each output element: K, the shared dimension
        return prod(y) * x[-1] if y and x else 0
    if node.op_type == "Gemm":
        k = x[0] if _attr(node, "transA", 0) else (x[-1] if x else 0)
        return prod(y) * k if y else 0
    return 0


def count_gflop(model) -> float:
    """GFLOP (2 x multiply-accumulates) of one image through `model` (an onnx ModelProto)."""
    shapes = _shapes(model)
    return 2 * sum(_macs(n, shapes) for n in model.graph.node if n.op_type in MAC_OPS) / 1e9


def graph_gflop(path) -> Optional[float]:
    """count_gflop of a .onnx graph whose metadata lacks the count (exported before export counted
    it), else None: the metadata's count wins, and engines or checkpoints carry no graph to count."""
    from ..base.artifact import load_meta
    from ..base.errors import HfrError
    from .graph import load_onnx

    p = Path(path)
    if p.suffix.lower() != ".onnx" or not p.is_file():
        return None
    try:
        if "gflop_per_image" in load_meta(p).extra:
            return None
        return count_gflop(load_onnx(p))
    except HfrError:
        return None  # opening it for the benchmark names what is wrong
