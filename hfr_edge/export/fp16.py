"""fp32 graph -> fp16 graph: float16 weights and activations in the encoder and decoder, float32
input and outputs, the fusion tail (residuals onwards) in float32.

A small explicit pass rather than onnxconverter-common's converter: that converter's cast clean-up
fails on graphs whose outputs come from blocked (float32) nodes, which is exactly this graph's
shape. The pass is: float16 initializers/constants for encoder+decoder nodes, one Cast to float16
after the input, a Cast to float32 on every edge from the encoder/decoder into the tail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

from ..base.artifact import ArtifactMeta, drop_stale_meta, write_meta
from ..base.errors import HfrError
from ..base.fsio import atomic_path
from .graph import MODEL_SCOPE, graph_meta, load_onnx, set_graph_meta


def _half_graph(model):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    inner = [n for n in g.node if n.name.startswith(MODEL_SCOPE)]
    inner_names = {n.name for n in inner}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    # 1. float16 weights for encoder/decoder nodes; one the exporter shares with the tail (a constant such
    # as 0, folded into one initializer: ReLU6's bound and the memory's clamp) gets a float16 copy for them
    for init in list(g.initializer):
        users = consumers.get(init.name, [])
        inner_users = [u for u in users if u.name in inner_names]
        if init.data_type != TensorProto.FLOAT or not inner_users:
            continue
        arr = numpy_helper.to_array(init).astype(np.float16)
        if len(inner_users) == len(users):
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
            continue
        half = init.name + "_fp16"
        g.initializer.append(numpy_helper.from_array(arr, half))
        for u in inner_users:
            u.input[:] = [half if i == init.name else i for i in u.input]
    for n in inner:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
    # 2. the input enters the encoder as float16
    new_nodes = []
    for inp in g.input:
        half = inp.name + "_fp16"
        new_nodes.append(helper.make_node("Cast", [inp.name], [half], to=TensorProto.FLOAT16, name=f"{MODEL_SCOPE}input_cast"))
        for u in consumers.get(inp.name, []):
            if u.name in inner_names:
                u.input[:] = [half if i == inp.name else i for i in u.input]
    # 3. every encoder/decoder output that feeds the tail goes back to float32
    produced = {o for n in inner for o in n.output}
    for tensor in sorted(produced):
        tail_users = [u for u in consumers.get(tensor, []) if u.name not in inner_names]
        if not tail_users:
            continue
        full = tensor + "_fp32"
        new_nodes.append(helper.make_node("Cast", [tensor], [full], to=TensorProto.FLOAT, name=f"/tail_cast{tensor}"))
        for u in tail_users:
            u.input[:] = [full if i == tensor else i for i in u.input]
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(new_nodes[:1] + nodes + new_nodes[1:])
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(_toposort(model), strict_mode=True)


def _toposort(model):
    g = model.graph
    avail = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                ordered.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise HfrError("fp16 conversion produced a graph with a cycle; report this as a bug", 1)
        pending = rest
    del g.node[:]
    g.node.extend(ordered)
    return model


def to_fp16(model, meta: ArtifactMeta) -> Tuple[object, ArtifactMeta]:
    if meta.precision != "fp32":
        raise HfrError(f"fp16 conversion needs an fp32 graph; this one is {meta.precision}")
    fp16 = _half_graph(model)
    meta16 = ArtifactMeta(kind="onnx", precision="fp16", image_size=meta.image_size, model=meta.model,
                          norm=meta.norm, extra=dict(meta.extra))
    set_graph_meta(fp16, meta16)
    return fp16, meta16


def convert_fp16(onnx_in, onnx_out) -> Path:
    """The same conversion `export --precision fp16` does, for `build --fp16` on an fp32 graph."""
    model = load_onnx(onnx_in)
    meta = graph_meta(model, str(onnx_in))
    fp16, meta16 = to_fp16(model, meta)
    with atomic_path(onnx_out) as tmp:
        tmp.write_bytes(fp16.SerializeToString(deterministic=True))
        drop_stale_meta(onnx_out)  # last step before the rename
    write_meta(onnx_out, meta16)
    return Path(onnx_out)
