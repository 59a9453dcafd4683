"""Checkpoint -> ONE ONNX graph: pre-processing (mean/std), encoder, decoder, fusion tail, score and
normalisation. TorchScript-based exporter (static spatial shapes, dynamic batch), then onnxslim
(constant folding, simplification), checker and shape inference; written atomically."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Union

from ..base import console
from ..base.artifact import ArtifactMeta, drop_stale_meta, write_meta
from ..base.contract import INPUT_NAME, OUTPUT_NAMES, TRT8_MAX_OPSET
from ..base.errors import HfrError
from ..base.fsio import atomic_path
from .flops import count_gflop
from ..base.view import CARRIED_KEYS
from .graph import ALLOWED_OPS, set_graph_meta

MIN_OPSET = 17  # LayerNormalization-era opsets; ReduceMax with axes input from 18 is handled by the exporter


def _trace_to_proto(module, size: int, opset: int, batch: Union[str, int]):
    import onnx
    import torch

    n = 1 if batch == "dynamic" else int(batch)
    dummy = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    dyn = {name: {0: "N"} for name in (INPUT_NAME,) + OUTPUT_NAMES} if batch == "dynamic" else None
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (dummy,), buf, dynamo=False, input_names=[INPUT_NAME],
                              output_names=list(OUTPUT_NAMES), dynamic_axes=dyn, opset_version=opset,
                              do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - the exporter raises many types for an unsupported opset
            msg = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
            raise HfrError(f"export failed at opset {opset}: {msg}; use --opset {MIN_OPSET} or newer") from None
    return onnx.load_from_string(buf.getvalue())


def _simplify(model):
    import onnxslim

    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # noqa: BLE001 - a failed simplification keeps the exporter's graph
        console.warn(f"onnxslim could not simplify the graph ({type(exc).__name__}); keeping it as exported")
        return model
    return slim if slim is not None else model


def check_graph(model, where: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise HfrError(f"{where}: the exported graph fails onnx.checker ({str(exc).splitlines()[0][:100]})", 1) from None
    bad = sorted({n.op_type for n in model.graph.node} - ALLOWED_OPS)
    if bad:
        raise HfrError(f"{where}: the graph uses operators outside the TensorRT allow-list: {', '.join(bad)}", 1)


def export_onnx(ckpt: str, output: str = "model.onnx", precision: str = "fp32", opset: int = 17,
                batch: Union[str, int] = "dynamic") -> Path:
    """Export a checkpoint; precision fp16 converts the fp32 graph (see fp16.py)."""
    import onnx

    from ..checkpoint import deploy_model, load_checkpoint

    if precision not in ("fp32", "fp16"):
        raise HfrError(f"--precision {precision!r} must be fp32 or fp16 (int8 comes from `hfr-edge calibrate`)")
    if opset < MIN_OPSET:
        raise HfrError(f"--opset {opset} is too old for this graph; use {MIN_OPSET} or newer")
    if opset > TRT8_MAX_OPSET:
        console.say(f"note: opset {opset} graphs need TensorRT 9 or newer: TensorRT 8.5 (JetPack 5) reads opset <= "
                    f"{TRT8_MAX_OPSET}, so `hfr-edge build` refuses this graph there; export with --opset "
                    f"{TRT8_MAX_OPSET} for a JetPack 5 device")
    if batch != "dynamic" and (not str(batch).isdigit() or int(batch) < 1):
        raise HfrError(f"--batch {batch!r} must be 'dynamic' or a positive integer")
    out = Path(output)
    if out.is_dir():
        raise HfrError(f"-o {out}: is a folder; give a file name such as {out / 'model.onnx'}")
    loaded = load_checkpoint(ckpt)
    module, cfg, stats = deploy_model(loaded, str(ckpt))
    proto = _simplify(_trace_to_proto(module, cfg.image_size, opset, batch))
    train = loaded.get("train", {})
    meta = ArtifactMeta(kind="onnx", precision="fp32", image_size=cfg.image_size, model=cfg.to_dict(),
                        norm=stats.to_dict(),
                        extra={**{k: loaded[k] for k in CARRIED_KEYS if k in loaded},
                               "opset": opset, "batch": batch, "source": {"checkpoint": Path(ckpt).name},
                               "train": {k: train.get(k) for k in ("data", "format", "normal_class", "epochs", "seed")},
                               "gflop_per_image": round(count_gflop(proto), 4)})
    set_graph_meta(proto, meta)
    proto.producer_name, proto.producer_version = "hfr-edge", ""
    check_graph(proto, str(out))
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    if precision == "fp16":
        from .fp16 import to_fp16

        proto, meta = to_fp16(proto, meta)
    data = proto.SerializeToString(deterministic=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        drop_stale_meta(out)  # last step before the rename
    write_meta(out, meta)
    return out
