"""`hfr-edge calibrate MODEL --images DIR|VIDEO|GLOB`: the explicit INT8 (Q/DQ) graph, and what it costs."""

from __future__ import annotations

from typing import Optional

import typer
from typing_extensions import Annotated

from ..calib.defaults import DEFAULT_METHOD, DEFAULT_TARGET
from .options import FORMAT_HELP, FRAMES_HELP, IMAGES_HELP, NORMAL_CLASS_HELP, ROI_HELP, TEST_HELP


def calibrate_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="fp32 graph from `hfr-edge export`")] = "model.onnx",
    images: Annotated[str, typer.Option("--images", help=IMAGES_HELP)] = ...,
    frames: Annotated[int, typer.Option("-n", "--frames", help=FRAMES_HELP)] = 200,
    method: Annotated[str, typer.Option(help="Activation ranges: minmax | entropy | percentile")] = DEFAULT_METHOD,
    target: Annotated[str, typer.Option(help="tensorrt: the Q/DQ graph `build` takes | cpu: for OpenVINO on a CPU "
                                              "(<model>.int8cpu.onnx; the report adds its speed against fp32)")] = DEFAULT_TARGET,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="int8 graph to write (default: <model>.int8.onnx, "
                                                                    "--target cpu: <model>.int8cpu.onnx)")] = None,
    eval_data: Annotated[Optional[str], typer.Option("--eval", help="Labelled dataset: report fp32 vs int8 AUROC on its test set")] = None,
    test: Annotated[Optional[str], typer.Option("--test", help=f"--eval: {TEST_HELP}")] = None,
    fmt: Annotated[str, typer.Option("--format", help=f"--eval: {FORMAT_HELP}")] = "auto",
    normal_class: Annotated[Optional[str], typer.Option("--normal-class", help=f"--eval: {NORMAL_CLASS_HELP}")] = None,
    roi: Annotated[Optional[str], typer.Option("--roi", help=ROI_HELP)] = None,
    refit: Annotated[str, typer.Option("--refit", metavar="auto|none|CKPT", help=(
        "CKPT, the checkpoint MODEL was exported from: every encoder layer int8 and the feature statistics "
        "refitted on the int8 graph's own features of the frames (give --images the training images); "
        "for a part, faster at fp32's accuracy (bottle: the cpu graph 1.9x -> 2.05x ONNX Runtime fp32, pixel "
        "AUROC drop <= 0.0001); on a texture about 10 % faster for up to 0.012 image AUROC. auto: that "
        "checkpoint, for a part's graph on the cpu target, where it lies beside MODEL and --images are its "
        "training images; none: the early layers stay float"))] = "auto",
) -> None:
    """Calibrate an fp32 graph into an explicit INT8 (Q/DQ) graph for TensorRT (or a CPU), and report its accuracy."""
    from ..variants import calibrate_model

    calibrate_model(model, images, output, n=frames, method=method, eval_data=eval_data, eval_format=fmt,
                    eval_normal_class=normal_class, eval_test=test, target=target, roi=roi, refit=refit)
