"""`hfr-edge bench [MODEL]`: latency percentiles and throughput of a model on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from ..base import console
from ..base.errors import HfrError
from .options import JSON_HELP, PROVIDER_HELP, alias, write_json


def bench_command(
    model: Annotated[Optional[str], typer.Argument(metavar="MODEL", help="model.onnx, model.engine or ckpt.pt; default: "
                                                                         "model.engine if TensorRT works here, else model.onnx")] = None,
    batch: Annotated[int, typer.Option("-b", "--batch", help="Images per inference")] = 1,
    iters: Annotated[int, typer.Option("--iters", help="Timed inferences")] = 200,
    iterations: Annotated[Optional[int], typer.Option("--iterations", "-n", hidden=True)] = None,
    warmup: Annotated[int, typer.Option(help="Untimed inferences first")] = 20,
    provider: Annotated[str, typer.Option(help=PROVIDER_HELP)] = "auto",
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="PATH", help=JSON_HELP)] = None,
) -> None:
    """Measure latency (p50/p90/p99) and throughput of a model on this machine."""
    from ..artifacts import bench
    from ..runtime.bench import format_report
    from ..runtime.runner import default_artifact

    iters = alias(iters, iterations)
    if iters < 1:
        raise HfrError(f"--iters {iters} must be at least 1")
    report = console.say if json_out == "-" else console.result  # stdout carries the JSON alone when asked
    if model is None:
        path, reason = default_artifact()
        report(console.show(reason))
    else:
        path = Path(model)
    rep = bench(path, batch=batch, iterations=iters, warmup=warmup, provider=provider)
    report(format_report(rep))
    if json_out:
        write_json(json_out, rep, to_stdout=True)
