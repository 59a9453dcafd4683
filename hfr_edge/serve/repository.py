"""`hfr-edge triton MODEL -o repo/`: a Triton model repository for the NGC server containers.

    repo/hfr_edge/config.pbtxt      backend, I/O, batching, instances, metadata parameters
    repo/hfr_edge/1/model.onnx      onnxruntime backend (TensorRT accelerator on GPU instances)
    repo/hfr_edge/1/model.plan      or: tensorrt backend, for an engine built for the server's GPU

config.pbtxt is written as text (no tritonclient needed here); the tests parse it with Triton's own
model-config protobuf.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from ..base.artifact import ArtifactMeta, load_meta
from ..base.errors import HfrError
from ..base.fsio import atomic_path, write_bytes_atomic
from ..runtime.runner import ENGINE_SUFFIXES
from ..runtime.tritonio import TRITON_DTYPE, parameters, tensor_dims

KINDS = ("gpu", "cpu")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")  # what Triton accepts as a model (folder) name
TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}  # ORT's TensorRT accelerator, by graph
TRT_WORKSPACE = 1 << 30


@dataclass(frozen=True)
class RepoConfig:
    name: str = "hfr_edge"  # model name = folder name in the repository
    version: int = 1  # version folder; the config serves exactly this one
    max_batch: Optional[int] = None  # None: the engine's profile maximum, 8 for an ONNX graph
    preferred: Tuple[int, ...] = ()  # preferred batch sizes; () picks (max/2 or engine opt, max)
    queue_delay_us: int = 1000  # longest wait to fill a batch
    dynamic_batching: bool = True
    kind: str = "gpu"  # instance group kind: gpu (KIND_GPU) or cpu (KIND_CPU)
    instances: int = 1  # model instances per GPU (or on the CPU)
    trt_accelerator: bool = True  # ONNX on GPU instances: let onnxruntime hand the graph to TensorRT


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _ints(xs) -> str:
    return "[ " + ", ".join(str(int(x)) for x in xs) + " ]"


def _tensor(name: str, dims: List[int], scalar: bool) -> str:
    reshape = "\n    reshape: { shape: [ ] }" if scalar else ""  # the graph's [N] output, as [N, 1] on the wire
    return f"  {{\n    name: {_quote(name)}\n    data_type: {TRITON_DTYPE}\n    dims: {_ints(dims)}{reshape}\n  }}"


def render_config(meta: ArtifactMeta, cfg: RepoConfig, backend: str, max_batch: int, preferred: List[int]) -> str:
    (in_name, in_dims), outs = tensor_dims(meta.image_size)
    lines = [f"name: {_quote(cfg.name)}", f"backend: {_quote(backend)}", f"max_batch_size: {max_batch}",
             f"version_policy: {{ specific: {{ versions: [ {cfg.version} ] }} }}",
             "input [\n" + _tensor(in_name, in_dims, False) + "\n]",
             "output [\n" + ",\n".join(_tensor(n, d, n == "score") for n, d in outs) + "\n]"]
    if cfg.dynamic_batching:
        lines.append(f"dynamic_batching {{\n  preferred_batch_size: {_ints(preferred)}\n"
                     f"  max_queue_delay_microseconds: {cfg.queue_delay_us}\n}}")
    kind = "KIND_GPU" if cfg.kind == "gpu" else "KIND_CPU"
    lines.append(f"instance_group [\n  {{\n    count: {cfg.instances}\n    kind: {kind}\n  }}\n]")
    if backend == "onnxruntime" and cfg.kind == "gpu" and cfg.trt_accelerator:
        lines.append("optimization {\n  execution_accelerators {\n    gpu_execution_accelerator: [\n      {\n"
                     '        name: "tensorrt"\n'
                     f'        parameters {{ key: "precision_mode" value: "{TRT_PRECISION[meta.precision]}" }}\n'
                     f'        parameters {{ key: "max_workspace_size_bytes" value: "{TRT_WORKSPACE}" }}\n'
                     "      }\n    ]\n  }\n}")
    for key, value in parameters(meta).items():
        lines.append(f"parameters {{\n  key: {_quote(key)}\n  value: {{ string_value: {_quote(value)} }}\n}}")
    return "\n".join(lines) + "\n"


def _check(cfg: RepoConfig) -> None:
    if not NAME_RE.match(cfg.name):
        raise HfrError(f"--name {cfg.name!r}: use letters, digits, '_', '.' or '-' (it is a folder and a URL part)")
    if cfg.kind not in KINDS:
        raise HfrError(f"--kind {cfg.kind!r} must be gpu or cpu")
    for flag, v, low in (("--version", cfg.version, 1), ("--instances", cfg.instances, 1),
                         ("--queue-delay-us", cfg.queue_delay_us, 0)):
        if v < low:
            raise HfrError(f"{flag} {v} must be at least {low}")
    if cfg.max_batch is not None and cfg.max_batch < 1:
        raise HfrError(f"--max-batch {cfg.max_batch} must be at least 1")


def _batching(meta: ArtifactMeta, cfg: RepoConfig, path: Path, graph_max: Optional[int]) -> Tuple[int, List[int]]:
    """(max_batch_size, preferred sizes) within what the artifact accepts."""
    if meta.kind == "engine":
        profile = meta.extra.get("batch_profile") or [1, 1, 1]
        opt, limit = int(profile[1]), int(profile[2])
        why = f"{path.name}'s batch profile maximum {limit}; rebuild it with a larger --batch"
    else:
        opt, limit = None, graph_max
        why = f"{path.name}'s fixed batch {limit}; re-export it with a dynamic batch"
    max_batch = cfg.max_batch or limit or 8
    if limit is not None and max_batch > limit:
        raise HfrError(f"--max-batch {max_batch} exceeds {why}")
    preferred = list(cfg.preferred) or sorted({max(1, opt or max_batch // 2), max_batch})
    bad = [p for p in preferred if not 1 <= p <= max_batch]
    if bad:
        raise HfrError(f"--preferred {','.join(map(str, preferred))}: sizes must lie in 1..{max_batch} (--max-batch)")
    return max_batch, preferred


def write_repository(model, out, cfg: RepoConfig = RepoConfig()) -> Path:
    """Write (or replace) repo/<name>/ for `model`; returns the config.pbtxt path."""
    _check(cfg)
    src = Path(model)
    if not src.is_file():
        raise HfrError(f"{src}: {'is a folder, not a model' if src.is_dir() else 'file not found'}")
    suffix = src.suffix.lower()
    graph_max = None
    if suffix == ".onnx":
        from ..runtime.onnxrt import OrtRunner  # noqa: PLC0415 - opening it checks the graph's I/O contract

        with OrtRunner(src, provider="cpu") as runner:
            meta, graph_max = runner.meta, runner.max_batch
        backend, filename = "onnxruntime", "model.onnx"
    elif suffix in ENGINE_SUFFIXES:
        meta = load_meta(src)
        if cfg.kind != "gpu":
            raise HfrError(f"{src.name} is a TensorRT engine: it runs on GPU instances only; drop --kind cpu "
                           f"or give the .onnx graph for CPU instances")
        backend, filename = "tensorrt", "model.plan"
    else:
        raise HfrError(f"{src}: unknown artifact type {suffix or '(no suffix)'!r}; give a .onnx graph or a "
                       f".engine/.plan TensorRT engine")
    max_batch, preferred = _batching(meta, cfg, src, graph_max)
    text = render_config(meta, cfg, backend, max_batch, preferred)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HfrError(f"-o {out}: is a file; give a folder for the model repository")
    version_dir = out / cfg.name / str(cfg.version)
    try:
        version_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HfrError(f"cannot create {version_dir}: {exc.strerror}; choose another -o folder") from None
    with atomic_path(version_dir / filename) as tmp:  # model first, then the config that names it
        shutil.copyfile(src, tmp)
    config = out / cfg.name / "config.pbtxt"
    write_bytes_atomic(config, text.encode("utf-8"))
    return config


def describe(config: Path, engine: bool, gpu: bool) -> str:
    """What to run next, for the command's last line."""
    repo = config.parent.parent.resolve()
    gpus = "--gpus all " if gpu else ""
    note = "; the container's TensorRT must be the version the engine was built with" if engine else ""
    return (f"wrote {config}; serve it with: docker run {gpus}-p 8000-8002:8000-8002 -v {repo}:/models "
            f"nvcr.io/nvidia/tritonserver:<release>-py3 tritonserver --model-repository=/models{note}")
