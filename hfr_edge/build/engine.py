"""ONNX graph -> serialized TensorRT engine + model.engine.json, following a BuildPlan.

The calls are NVIDIA's documented Python API (Builder, create_network, OnnxParser.parse,
create_optimization_profile().set_shape, IBuilderConfig, timing cache, build_serialized_network);
which of them apply on which TensorRT version is decided by plan.make_plan. tensorrt is imported
lazily, so this module imports on a machine without it.
"""

from __future__ import annotations

import datetime
import statistics
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from ..base import console
from ..base.artifact import ArtifactMeta, drop_stale_meta, load_meta, write_meta
from ..base.contract import INPUT_NAME
from ..base.errors import HfrError
from ..base.fsio import atomic_path, sha256_file, write_bytes_atomic
from ..runtime.trtinfo import engine_fingerprint, import_tensorrt
from .plan import BuildPlan


def api_of(trt) -> Dict[str, bool]:
    """What the imported bindings really offer (keys as plan.api_for_version)."""
    ncf, bf = trt.NetworkDefinitionCreationFlag, trt.BuilderFlag
    return {"explicit_batch_flag": hasattr(ncf, "EXPLICIT_BATCH"), "strongly_typed": hasattr(ncf, "STRONGLY_TYPED"),
            "precision_flags": hasattr(bf, "FP16") and hasattr(bf, "INT8"),
            "memory_pool_limit": hasattr(trt.IBuilderConfig, "set_memory_pool_limit")}


def _parse(trt, network, logger, onnx_path: Path):
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse(onnx_path.read_bytes())
    if ok and parser.num_errors == 0:
        return parser
    if parser.num_errors == 0:
        raise HfrError(f"{onnx_path}: TensorRT {trt.__version__} could not parse the graph (no detail given); "
                       f"check it with `hfr-edge eval` and re-export it")
    err = parser.get_error(0)
    node = f"node {err.node()}"
    for attr in ("node_name", "node_operator"):  # TensorRT 10+ name the node and its operator
        if hasattr(err, attr) and getattr(err, attr)():
            node += f" {getattr(err, attr)()}"
    desc = " ".join(str(err.desc()).split())
    more = f" (+{parser.num_errors - 1} more)" if parser.num_errors > 1 else ""
    raise HfrError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse {node}: {desc}{more}; re-export with "
                   f"`hfr-edge export` or use a newer TensorRT")


def _input_chw(network, onnx_path: Path, batch: Tuple[int, int, int]) -> Tuple[int, int, int]:
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if INPUT_NAME not in names:
        raise HfrError(f"{onnx_path}: no input named {INPUT_NAME!r} (inputs: {', '.join(names)}); re-export the model")
    shape = tuple(network.get_input(names.index(INPUT_NAME)).shape)  # (N, C, H, W), N = -1 when dynamic
    if len(shape) != 4 or min(shape[1:]) < 1:
        raise HfrError(f"{onnx_path}: input {INPUT_NAME!r} has shape {shape}; expected (N, 3, S, S) with fixed S")
    if shape[0] >= 0 and batch != (shape[0],) * 3:
        raise HfrError(f"{onnx_path}: the graph's batch is fixed to {shape[0]}; use --batch "
                       f"{shape[0]}:{shape[0]}:{shape[0]} or re-export with a dynamic batch")
    return shape[1], shape[2], shape[3]


def build_engine(onnx_path, out_path, plan: BuildPlan, batch: Sequence[int] = (1, 1, 8),
                 workspace_bytes: int = 2 << 30, timing_cache=None) -> Dict[str, Any]:
    """Build `out_path` (+ its .json) from `onnx_path`; return a summary dict. Writes atomically."""
    trt = import_tensorrt()
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    src = load_meta(onnx_path)
    bmin, bopt, bmax = (int(b) for b in batch)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = _parse(trt, network, logger, onnx_path)  # keep the parser alive while the network is used
    c, h, w = _input_chw(network, onnx_path, (bmin, bopt, bmax))

    config = builder.create_builder_config()
    if plan.workspace_api == "memory_pool_limit":
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    else:
        config.max_workspace_size = int(workspace_bytes)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (bmin, c, h, w), (bopt, c, h, w), (bmax, c, h, w))
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    if cache_path is not None:
        _load_timing_cache(config, cache_path)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        raise HfrError(f"{onnx_path}: TensorRT {trt.__version__} failed to build an engine (its messages above say "
                       f"why); try a larger --workspace or a newer TensorRT", exit_code=1)
    del parser
    data = bytes(memoryview(serialized))
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(data)
        drop_stale_meta(out_path)  # last step before the rename: never the new engine with the old JSON
    if cache_path is not None:
        write_bytes_atomic(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))

    sha = sha256_file(onnx_path)
    extra = dict(src.extra)
    extra.update(
        fingerprint=engine_fingerprint(plan.precision, (bmin, bopt, bmax), src.image_size, sha, src.norm),
        batch_profile=[bmin, bopt, bmax],
        source_onnx={"path": onnx_path.name, "sha256": sha, "precision": src.precision},
        build={"seconds": round(seconds, 2), "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "workspace_bytes": int(workspace_bytes), "plan": plan.to_dict()},
    )
    meta = ArtifactMeta("engine", plan.precision, src.image_size, src.model, src.norm, extra)
    meta_path = write_meta(out_path, meta)
    summary = {"engine": str(out_path), "meta": str(meta_path), "precision": plan.precision,
               "build_seconds": round(seconds, 2), "engine_bytes": len(data), "batch": [bmin, bopt, bmax],
               "latency_ms": None}
    console.say(f"built {out_path} ({plan.precision}, {len(data) / 2**20:.1f} MiB) in {seconds:.1f} s; "
          f"batch {bmin}:{bopt}:{bmax}; metadata {meta_path.name}")
    summary["latency_ms"] = quick_latency(out_path, bopt, src.image_size)
    return summary


def _load_timing_cache(config, path: Path) -> None:
    try:
        data = path.read_bytes() if path.is_file() else b""
    except OSError as exc:
        raise HfrError(f"--timing-cache {path}: cannot read it ({exc.strerror}); delete it or choose another path") from None
    try:
        ok = config.set_timing_cache(config.create_timing_cache(data), False)
    except (RuntimeError, TypeError, ValueError):  # an unreadable cache file
        ok = False
    if not ok:  # from another GPU or TensorRT, or corrupt: start afresh (it is only a speed-up)
        console.say(f"timing cache {path} does not fit this device and TensorRT; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), False)


def quick_latency(engine_path: Path, batch: int, size: int, runs: int = 20) -> Optional[float]:
    """Median ms per inference of the new engine through the runtime's runner (None if unavailable)."""
    try:
        from ..runtime.runner import open_runner  # noqa: PLC0415
    except ImportError:
        return None
    import numpy as np  # noqa: PLC0415

    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    try:
        with open_runner(str(engine_path)) as runner:
            for _ in range(3):
                runner.infer({INPUT_NAME: x})
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                runner.infer({INPUT_NAME: x})
                times.append((time.perf_counter() - t0) * 1e3)
    except Exception as exc:  # noqa: BLE001 - the engine is written; a runtime problem must not undo the build
        console.say(f"latency check skipped: {type(exc).__name__}: {exc}")
        return None
    ms = statistics.median(times)
    console.say(f"latency: {ms:.2f} ms per batch of {batch} (median of {runs}, host to host)")
    return round(ms, 3)
