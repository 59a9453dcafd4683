"""ONE function that opens any artifact as a runner: a checkpoint runs in PyTorch (imported only
then), a graph or an engine through the runtime. `eval`, `bench`, `calibrate` and `run` open
models here, so a ckpt.pt works wherever a model.onnx does."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .base.errors import HfrError
from .runtime import bench as runtime_bench
from .base.fsio import write_json_atomic
from .runtime.runner import Runner, default_artifact, open_runner

CKPT_SUFFIXES = (".pt", ".pth", ".ckpt")  # torch_runner's, repeated here so this module stays torch-free


def open_artifact(path, provider: str = "auto") -> Runner:
    """ckpt.pt -> TorchRunner; .onnx / .engine / .plan -> runtime.open_runner. Returned active."""
    if Path(path).suffix.lower() in CKPT_SUFFIXES:
        from .torch_runner import TorchRunner  # noqa: PLC0415 - torch only for a checkpoint

        return TorchRunner(path, provider=provider).activate()
    return open_runner(path, provider=provider)


def graph_gflop(path) -> Optional[float]:
    """GFLOP per image of a .onnx graph exported before export counted it, counted now where onnx is
    installed (the metadata's count wins; engines and checkpoints carry none to recount)."""
    import importlib.util  # noqa: PLC0415

    p = Path(path)
    if p.suffix.lower() != ".onnx" or not p.is_file() or importlib.util.find_spec("onnx") is None:
        return None
    from .base.artifact import load_meta  # noqa: PLC0415
    from .export.flops import count_gflop  # noqa: PLC0415 - onnx, only for an older graph
    from .export.graph import load_onnx  # noqa: PLC0415

    try:
        if runtime_bench.gflop_of(load_meta(p)) is not None:
            return None  # bench reads it from the metadata
        return count_gflop(load_onnx(p))
    except HfrError:
        return None  # opening it for the benchmark names what is wrong


def bench(path, batch: int = 1, iterations: int = 200, warmup: int = 20, provider: str = "auto") -> dict:
    """runtime.bench.bench for any artifact, a checkpoint included (PyTorch eager: the baseline)."""
    return runtime_bench.bench(path, batch=batch, iterations=iterations, warmup=warmup, provider=provider,
                               opener=open_artifact, gflop=graph_gflop(path))


def bench_command(
    artifact: Optional[str] = typer.Argument(None, metavar="MODEL", help="model.onnx, model.engine or ckpt.pt; default: "
                                                        "model.engine if TensorRT works here, else model.onnx"),
    batch: int = typer.Option(1, "--batch", "-b", help="images per inference"),
    iterations: int = typer.Option(200, "--iterations", "-n", help="timed inferences"),
    warmup: int = typer.Option(20, "--warmup", help="untimed inferences first"),
    provider: str = typer.Option("auto", "--provider", help="auto|tensorrt|cuda|cpu (ONNX Runtime) or openvino"),
    json_out: Optional[str] = typer.Option(None, "--json", help="also write the report to this JSON file"),
) -> None:
    """Measure latency (p50/p90/p99) and throughput of a model on this machine."""
    if artifact is None:
        path, reason = default_artifact()
        print(runtime_bench._show(reason))
    else:
        path = Path(artifact)
    rep = bench(path, batch=batch, iterations=iterations, warmup=warmup, provider=provider)
    print(runtime_bench.format_report(rep))
    if json_out:
        write_json_atomic(json_out, rep)
        print(f"wrote {runtime_bench._show(json_out)}")
