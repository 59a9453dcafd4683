"""Facts about an exported hfr-edge graph shared by export, fp16 and calibration (onnx only).

The fusion tail (residuals, upsampling, sum, Gaussian smoothing, score, normalisation) is every
node outside the `/model/` scope that the export wrapper gives the encoder and decoder; it stays
in float32 and is never quantized.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Set

from ..base.artifact import META_KEY, ArtifactMeta
from ..base.errors import HfrError

MODEL_SCOPE = "/model/"  # DeployModel.model: encoder + decoder

# Operators the graph may contain: all supported by TensorRT's ONNX parser (8.5 and newer).
ALLOWED_OPS = {
    "Conv", "ConvTranspose", "BatchNormalization", "Relu", "Clip", "Add", "Sub", "Mul", "Div", "Pad",
    "ReduceSum", "ReduceMax", "ReduceMean", "Sqrt", "Max", "Min", "Resize", "Constant", "Cast", "Identity", "Gemm", "MatMul",
    "QuantizeLinear", "DequantizeLinear", "Reshape", "Unsqueeze", "Squeeze", "Concat", "Sigmoid", "Neg",
    "Transpose",  # a Shuffle layer in TensorRT; the per-position statistics ("local") permute their features
    "AveragePool",  # 2-D, count_include_pad 0: a Pooling layer (`--stats-pool`)
    "TopK",  # score "top": a TopK layer, K a constant <= 1024 (TensorRT 8.5's limit; model.TOP_MAX)
    "ReduceMin",  # the nearest of several per-position Gaussians (a Reduce layer; onnx-tensorrt: FP32, FP16)
}


def load_onnx(path) -> "onnx.ModelProto":
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise HfrError(f"{p}: file not found; export one with `hfr-edge export ckpt.pt`")
    try:
        model = onnx.load(str(p))
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise HfrError(f"{p}: not a valid ONNX file ({type(exc).__name__}); re-export it with `hfr-edge export`") from None
    if not model.graph.node:
        raise HfrError(f"{p}: not a valid ONNX file (empty graph); re-export it with `hfr-edge export`")
    return model


def graph_meta(model, where: str) -> ArtifactMeta:
    """The hfr-edge metadata inside a graph's metadata_props, or HfrError for a foreign graph."""
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise HfrError(f"{where}: not an hfr-edge graph (no '{META_KEY}' metadata); export it with `hfr-edge export ckpt.pt`")
    try:
        d = json.loads(props[META_KEY])
    except json.JSONDecodeError:
        raise HfrError(f"{where}: its hfr-edge metadata is corrupt; re-export it") from None
    return ArtifactMeta.from_dict(d, where)


def set_graph_meta(model, meta: ArtifactMeta) -> None:
    import onnx

    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {META_KEY: json.dumps(meta.to_dict(), sort_keys=True)})


def tail_nodes(model) -> Set[str]:
    """Names of the fusion-tail nodes (everything after the decoder)."""
    return {n.name for n in model.graph.node if not n.name.startswith(MODEL_SCOPE)}
