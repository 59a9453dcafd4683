"""`hfr-edge calibrate model.onnx --images DIR|VIDEO|GLOB`: the explicit INT8 (Q/DQ) graph."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from .defaults import DEFAULT_METHOD


def calibrate_command(
    model: Annotated[str, typer.Argument(help="fp32 graph from `hfr-edge export`")] = "model.onnx",
    images: Annotated[str, typer.Option("--images", help="Calibration frames: a folder (recursive), a video file or a glob")] = ...,
    n: Annotated[int, typer.Option("-n", help="Frames to use, sampled evenly")] = 200,
    method: Annotated[str, typer.Option(help="minmax | entropy | percentile")] = DEFAULT_METHOD,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="Default: <model>.int8.onnx")] = None,
    eval_data: Annotated[Optional[str], typer.Option("--eval", help="Labelled dataset: report fp32 vs int8 AUROC on its test set")] = None,
    fmt: Annotated[str, typer.Option("--format", help="--eval dataset format: auto|mvtec|folder|mnist|fashion-mnist|cifar10")] = "auto",
    normal_class: Annotated[Optional[str], typer.Option("--normal-class", help="--eval one-class protocol: the normal class")] = None,
    roi: Annotated[Optional[str], typer.Option("--roi", help="Region of interest x,y,w,h of the frames (default: the "
                                                             "graph's own)")] = None,
) -> None:
    """Calibrate an fp32 graph into an explicit INT8 (Q/DQ) graph for TensorRT, and report its accuracy."""
    from ..variants import calibrate_model

    calibrate_model(model, images, output, n=n, method=method, eval_data=eval_data, eval_format=fmt,
                    eval_normal_class=normal_class, roi=roi)
