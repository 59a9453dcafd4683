"""The `triton` and `serve` commands: typer options mapped one to one onto RepoConfig / ServeConfig."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import typer

from ..base import console
from ..base.errors import HfrError
from ..runtime.runner import ENGINE_SUFFIXES, default_artifact
from ..runtime.tritonio import DEFAULT_MODEL_NAME


def _model(model: Optional[str]) -> str:
    if model is not None:
        return model
    path, why = default_artifact()
    console.say(f"hfr-edge: {why}")
    return str(path)


def _sizes(text: Optional[str]) -> Tuple[int, ...]:
    if not text:
        return ()
    try:
        sizes = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise HfrError(f"--preferred {text!r}: give batch sizes separated by commas, e.g. 4,8") from None
    return sizes


def triton_command(
    model: Optional[str] = typer.Argument(None, help="model.onnx or model.engine; default: model.engine or model.onnx here."),
    out: str = typer.Option(..., "--out", "-o", help="Model repository folder (created); the model goes in OUT/NAME/."),
    name: str = typer.Option(DEFAULT_MODEL_NAME, "--name", help="Model name on the server (its folder)."),
    version: int = typer.Option(1, "--version", help="Version folder; the config serves exactly this version."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="max_batch_size (default: the engine's profile maximum, 8 for a graph)."),
    preferred: Optional[str] = typer.Option(None, "--preferred", help="Preferred batch sizes, e.g. 4,8 (default: half the maximum, or the engine's opt, and the maximum)."),
    queue_delay_us: int = typer.Option(1000, "--queue-delay-us", help="Dynamic batching: longest wait to fill a batch, microseconds."),
    dynamic_batching: bool = typer.Option(True, "--dynamic-batching/--no-dynamic-batching", help="Batch concurrent requests on the server."),
    kind: str = typer.Option("gpu", "--kind", help="Instance group: gpu (KIND_GPU) or cpu (KIND_CPU)."),
    instances: int = typer.Option(1, "--instances", help="Model instances per GPU (or on the CPU)."),
    trt_accelerator: bool = typer.Option(True, "--trt/--no-trt", help="ONNX on GPU instances: TensorRT as onnxruntime's execution accelerator."),
) -> None:
    """Write a Triton model repository (config.pbtxt + the graph or engine) for NVIDIA's server containers."""
    from ..serve.repository import RepoConfig, describe, write_repository  # noqa: PLC0415

    path = _model(model)
    cfg = RepoConfig(name=name, version=version, max_batch=max_batch, preferred=_sizes(preferred),
                     queue_delay_us=queue_delay_us, dynamic_batching=dynamic_batching, kind=kind,
                     instances=instances, trt_accelerator=trt_accelerator)
    config = write_repository(path, out, cfg)
    console.result(describe(config, Path(path).suffix.lower() in ENGINE_SUFFIXES, kind == "gpu"))


def serve_command(
    model: Optional[str] = typer.Argument(None, help="model.onnx or model.engine; default: model.engine or model.onnx here."),
    name: str = typer.Option(DEFAULT_MODEL_NAME, "--name", help="Model name on the server."),
    address: str = typer.Option("0.0.0.0", "--address", help="Interface to listen on (127.0.0.1: this machine only)."),
    http_port: int = typer.Option(8000, "--http-port", help="HTTP (KServe v2) port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC (KServe v2) port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", help="Prometheus metrics port (/metrics)."),
    max_batch: int = typer.Option(8, "--max-batch", help="Largest batch the server forms."),
    queue_delay_us: int = typer.Option(1000, "--queue-delay-us", help="Dynamic batching: longest wait to fill a batch, microseconds."),
    dynamic_batching: bool = typer.Option(True, "--dynamic-batching/--no-dynamic-batching", help="Batch concurrent requests."),
    provider: str = typer.Option("auto", "--provider", help="ONNX Runtime provider: auto, tensorrt, cuda or cpu."),
) -> None:
    """Serve the detector on a Triton Inference Server (PyTriton) over HTTP and gRPC, until Ctrl-C."""
    from ..serve.server import ServeConfig, serve  # noqa: PLC0415

    cfg = ServeConfig(name=name, address=address, http_port=http_port, grpc_port=grpc_port,
                      metrics_port=metrics_port, max_batch=max_batch, queue_delay_us=queue_delay_us,
                      dynamic_batching=dynamic_batching, provider=provider)
    serve(_model(model), cfg)
