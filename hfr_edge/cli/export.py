"""`hfr-edge export MODEL`: a checkpoint as ONE ONNX graph (fp32 or fp16)."""

from __future__ import annotations

import time
from typing import Optional

import typer
from typing_extensions import Annotated

from ..base import console
from .options import precision as pick_precision


def export_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Checkpoint written by `hfr-edge train`")],
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="ONNX file to write (default: model.onnx, fp16: model.fp16.onnx)")] = None,
    precision: Annotated[Optional[str], typer.Option(help="fp32 (default) | fp16; int8 comes from `hfr-edge calibrate`")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Same as --precision fp16")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Same as --precision int8 (refused: `hfr-edge calibrate` makes int8)")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer)")] = 17,
    batch: Annotated[str, typer.Option(help="'dynamic' or a fixed batch size")] = "dynamic",
) -> None:
    """Export a checkpoint as ONE ONNX graph: pre-processing, encoder, decoder, fusion tail, score."""
    from ..export.onnx_export import export_onnx

    precision = pick_precision(fp16, int8, precision) or "fp32"
    t0 = time.time()
    if output is None:
        output = "model.fp16.onnx" if precision == "fp16" else "model.onnx"
    out = export_onnx(model, output, precision=precision, opset=opset, batch=batch)
    size = out.stat().st_size / 2**20
    console.say(f"wrote {out} ({precision}, {size:.1f} MiB, opset {opset}, batch {batch}) and {out.name}.json "
                f"in {time.time() - t0:.1f} s")
