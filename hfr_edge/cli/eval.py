"""`hfr-edge eval MODEL DATA`: image AUROC, pixel AUROC, AUPRO, F1-max of any artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from ..base import console
from ..base.errors import HfrError
from .options import (FORMAT_HELP, JSON_HELP, NORMAL_CLASS_HELP, PROVIDER_HELP, ROI_HELP, TEST_HELP, TILES_HELP, alias,
                      write_json)


def eval_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="ckpt.pt, model.onnx (any precision) or model.engine")],
    data: Annotated[str, typer.Argument(help="Dataset folder (see `hfr-edge train --help`)")],
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="PATH", help=JSON_HELP)] = None,
    report: Annotated[Optional[str], typer.Option("--report", hidden=True)] = None,
    figures: Annotated[Optional[str], typer.Option("--figures", help="Write PNGs of best/worst cases and the ROC curve here")] = None,
    fmt: Annotated[str, typer.Option("--format", help=FORMAT_HELP)] = "auto",
    normal_class: Annotated[Optional[str], typer.Option("--normal-class", help=NORMAL_CLASS_HELP)] = None,
    test: Annotated[Optional[str], typer.Option("--test", help=TEST_HELP)] = None,
    provider: Annotated[str, typer.Option(help=PROVIDER_HELP)] = "auto",
    roi: Annotated[Optional[str], typer.Option("--roi", help=ROI_HELP)] = None,
    tiles: Annotated[Optional[str], typer.Option("--tiles", help=TILES_HELP)] = None,
) -> None:
    """Evaluate an artifact: image AUROC, pixel AUROC, AUPRO, F1-max, per defect type."""
    from ..evaluate import evaluate, format_report

    json_out = alias(json_out, report)
    if figures and Path(figures).exists() and not Path(figures).is_dir():
        raise HfrError(f"--figures {figures}: is a file; give a folder for the PNGs")
    if figures:
        try:
            Path(figures).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HfrError(f"--figures {figures}: cannot create the folder ({exc.strerror}); choose another path") from None
    if json_out and json_out != "-" and Path(json_out).is_dir():
        raise HfrError(f"--json {json_out}: is a folder; give a file name such as {Path(json_out) / 'report.json'}")
    rep = evaluate(model, data, fmt, normal_class, test, provider, figures, roi=roi, tiles=tiles)
    console.say(f"{rep['artifact']} on {rep['data']} ({rep['backend']}, {rep['precision']}, "
                f"{rep['n_images']} images, {rep['ms_per_image']} ms/image)")
    console.say(format_report(rep))
    if json_out:
        write_json(json_out, rep)
