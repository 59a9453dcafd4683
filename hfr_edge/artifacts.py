"""ONE function that opens any artifact as a runner: a checkpoint runs in PyTorch (imported only
then), a graph or an engine through the runtime. `eval`, `bench`, `calibrate` and `run` open
models here, so a ckpt.pt works wherever a model.onnx does."""

from __future__ import annotations

from pathlib import Path

from .runtime import bench as runtime_bench
from .runtime.runner import Runner, open_runner

CKPT_SUFFIXES = (".pt", ".pth", ".ckpt")  # a PyTorch checkpoint, as `hfr-edge train` writes it


def open_artifact(path, provider: str = "auto") -> Runner:
    """ckpt.pt -> TorchRunner; .onnx / .engine / .plan -> runtime.open_runner. Returned active."""
    if Path(path).suffix.lower() in CKPT_SUFFIXES:
        from .torch_runner import TorchRunner  # noqa: PLC0415 - torch only for a checkpoint

        return TorchRunner(path, provider=provider).activate()
    return open_runner(path, provider=provider)


def bench(path, batch: int = 1, iterations: int = 200, warmup: int = 20, provider: str = "auto") -> dict:
    """runtime.bench.bench for any artifact, a checkpoint included (PyTorch eager: the baseline)."""
    return runtime_bench.bench(path, batch=batch, iterations=iterations, warmup=warmup, provider=provider,
                               opener=open_artifact)
