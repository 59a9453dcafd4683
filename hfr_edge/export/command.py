"""`hfr-edge export ckpt.pt`: the checkpoint as one ONNX graph (fp32 or fp16)."""

from __future__ import annotations

import sys
import time
from typing import Optional

import typer
from typing_extensions import Annotated


def export_command(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint written by `hfr-edge train`")],
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="ONNX file to write (default: model.onnx, fp16: model.fp16.onnx)")] = None,
    precision: Annotated[str, typer.Option(help="fp32 | fp16 (int8: `hfr-edge calibrate`)")] = "fp32",
    opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer)")] = 17,
    batch: Annotated[str, typer.Option(help="'dynamic' or a fixed batch size")] = "dynamic",
) -> None:
    """Export a checkpoint as ONE ONNX graph: pre-processing, encoder, decoder, fusion tail, score."""
    from .onnx_export import export_onnx

    t0 = time.time()
    if output is None:
        output = "model.fp16.onnx" if precision == "fp16" else "model.onnx"
    out = export_onnx(checkpoint, output, precision=precision, opset=opset, batch=batch)
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({precision}, {size:.1f} MiB, opset {opset}, batch {batch}) and {out.name}.json "
          f"in {time.time() - t0:.1f} s", file=sys.stderr)
