"""`hfr-edge demo`: the whole toolchain on a synthetic dataset, in one command."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from ..base import console
from ..base.errors import HfrError


def demo_command(
    out: Annotated[str, typer.Option("--out", help="Folder for everything the demo writes")] = "demo_out",
    quick: Annotated[bool, typer.Option("--quick", help="A shortened run (seconds, not accuracy), for tests")] = False,
    epochs: Annotated[Optional[int], typer.Option(help="Training epochs (default 15; --quick: 2)")] = None,
) -> None:
    """Run the whole toolchain on a synthetic dataset and write OUT/report.html + OUT/summary.json."""
    from ..demo import QUICK, DemoConfig, demo, fmt_number

    cfg = QUICK if quick else DemoConfig()
    if epochs is not None:
        if epochs < 1:
            raise HfrError(f"--epochs {epochs} must be at least 1")
        cfg = DemoConfig(**{**asdict(cfg), "epochs": epochs})
    s = demo(out or "demo_out", quick=quick, cfg=cfg)
    console.say(f"image AUROC {fmt_number(s['image_auroc'])}; wrote {Path(s['out']) / 'report.html'} and summary.json "
                f"in {s['total_seconds']:.0f} s")
