"""`hfr-edge build [MODEL]`: ONNX graph -> TensorRT engine for THIS device."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from ..calib.defaults import DEFAULT_METHOD
from .options import FRAMES_HELP, alias
from .options import precision as pick_precision


def build_command(
    model: Annotated[Optional[str], typer.Argument(metavar="MODEL", help="ONNX graph to build (default: model.onnx here)")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Build in fp16 (converts an fp32 graph first); = --precision fp16")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Build in int8 (calibrates an fp32 graph first); = --precision int8")] = False,
    precision: Annotated[Optional[str], typer.Option(help="fp32 | fp16 | int8 (default: the graph's own)")] = None,
    images: Annotated[Optional[str], typer.Option("--images", help="Calibration frames for --int8 (default: calib/ beside "
                                                                  "the graph, else the training images)")] = None,
    calib: Annotated[Optional[str], typer.Option("--calib", hidden=True)] = None,
    frames: Annotated[int, typer.Option("-n", "--frames", help=FRAMES_HELP)] = 200,
    method: Annotated[str, typer.Option(help="Calibration method for activation ranges: minmax | entropy | percentile")] = DEFAULT_METHOD,
    batch: Annotated[str, typer.Option(help="Batch sizes MIN:OPT:MAX the engine accepts")] = "1:1:8",
    workspace: Annotated[str, typer.Option(help="Builder workspace memory limit, e.g. 512M, 2G")] = "2G",
    timing_cache: Annotated[Optional[str], typer.Option(help="Timing cache file to read and update (faster rebuilds)")] = None,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Engine to write (default: model.engine here)")] = None,
) -> None:
    """Build a TensorRT engine for THIS device (engines are specific to the GPU and TensorRT version)."""
    from ..build.pipeline import build_for_device

    build_for_device(model, pick_precision(fp16, int8, precision), alias(images, calib), frames, method, batch,
                     workspace, timing_cache, output)
