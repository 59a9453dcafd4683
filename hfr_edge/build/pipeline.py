"""`hfr-edge build` without its CLI: ONNX graph -> TensorRT engine for this device (model.engine +
model.engine.json).

It checks for TensorRT and a GPU before reading or writing anything; has the precision variant the
engine needs (the fp16 graph, or the calibrated Q/DQ int8 graph) made by variants.py; picks the API
calls for this TensorRT version (plan.make_plan); and builds (engine.build_engine).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Tuple

from ..base import console
from ..base.artifact import ArtifactMeta, load_meta
from ..base.contract import PRECISIONS
from ..base.errors import HfrError
from ..calib.defaults import DEFAULT_METHOD, int8_name
from ..runtime.trtinfo import describe_missing

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_batch(text: str) -> Tuple[int, int, int]:
    """'1:4:8' -> (1, 4, 8); '8' -> (8, 8, 8). MIN <= OPT <= MAX, all >= 1."""
    parts = str(text).strip().split(":")
    if len(parts) == 1:
        parts = parts * 3
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise HfrError(f"--batch {text!r} must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (e.g. 1:1:8), or one number")
    return values  # type: ignore[return-value]


def parse_size(text: str) -> int:
    """'512M' -> 536870912, '2G' -> 2147483648, '1.5G', '64K', '1048576' (bytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
    value = int(float(m.group(1)) * _UNITS[m.group(2).upper()]) if m else 0
    if value < 2**20:
        raise HfrError(f"--workspace {text!r} must be a size of at least 1M, such as 512M or 2G")
    return value


def source_step(graph_precision: str, requested: Optional[str]) -> str:
    """What to do to the graph before building: 'as_is', 'fp16' (convert) or 'calibrate'."""
    if requested is None or requested == graph_precision:
        return "as_is"
    if graph_precision == "fp32":
        return "fp16" if requested == "fp16" else "calibrate"
    raise HfrError(f"--{requested} needs the fp32 graph (model.onnx), but this graph is {graph_precision}; "
                   f"build the fp32 graph with --{requested}, or this one without a precision option")


def find_calib_images(model_path: Path, meta: ArtifactMeta, images: Optional[str]) -> Path:
    """--images DIR, else calib/ beside the graph, else the training images recorded in the graph
    (for an MVTec folder its train/good, never the test defects)."""
    if images:
        p = Path(images)
        if not p.exists():
            raise HfrError(f"--images {p}: not found; give a folder of 100-500 representative frames")
        return p
    beside = model_path.parent / "calib"
    if beside.is_dir():
        return beside
    train = meta.extra.get("train") if isinstance(meta.extra.get("train"), dict) else {}
    data, fmt = train.get("data"), train.get("format")
    if isinstance(data, str) and Path(data).is_dir() and fmt in (None, "auto", "mvtec", "folder"):
        for sub in (Path(data) / "train" / "good", Path(data) / "train"):  # MVTec layout: normal training images only
            if sub.is_dir():
                return sub
        return Path(data)
    raise HfrError(f"--int8 needs calibration images: put 100-500 representative frames from the line in "
                   f"{beside}/ or give --images DIR")


def _fresh_int8(int8_path: Path, fp32_path: Path) -> bool:
    """An int8 graph beside the fp32 one, made after it (so from this very graph)."""
    try:
        return (int8_path.is_file() and int8_path.stat().st_mtime >= fp32_path.stat().st_mtime
                and load_meta(int8_path).precision == "int8")
    except (OSError, HfrError):
        return False


def build_for_device(model: Optional[str] = None, precision: Optional[str] = None, images: Optional[str] = None,
                     frames: int = 200, method: str = DEFAULT_METHOD, batch: str = "1:1:8", workspace: str = "2G",
                     timing_cache: Optional[str] = None, output: Optional[str] = None) -> Path:
    """`hfr-edge build`: every option checked, then TensorRT and a GPU, before anything is read or
    written; the precision variant made by its stage (variants.py); the plan; the engine. `precision`:
    None (as the graph is), fp32, fp16 or int8. Returns the engine's path."""
    if precision not in (None,) + PRECISIONS:
        raise HfrError(f"--precision {precision!r} must be one of {', '.join(PRECISIONS)}")
    batch_range = parse_batch(batch)
    workspace_bytes = parse_size(workspace)
    if frames < 1:
        raise HfrError(f"-n {frames} must be at least 1")
    if images and precision != "int8":
        raise HfrError(f"--images {images} applies to --int8 builds; add --int8 to calibrate with it")
    missing = describe_missing()
    if missing:
        raise HfrError(missing)

    model_path = Path(model or "model.onnx")
    if not model_path.is_file():
        raise HfrError(f"{model_path}: not found; export a graph with `hfr-edge export ckpt.pt` or name one")
    out = Path(output) if output else Path("model.engine")
    if out.suffix == ".onnx" or out.resolve() == model_path.resolve():
        raise HfrError(f"-o {out}: would overwrite a graph; name the engine e.g. model.engine")
    for p, what in ((out, "-o"), (Path(timing_cache) if timing_cache else None, "--timing-cache")):
        if p is not None and not p.parent.is_dir():
            raise HfrError(f"{what} {p}: folder {p.parent} does not exist; create it or choose another path")
    meta = load_meta(model_path)
    if precision == "fp32" and meta.precision != "fp32":
        raise HfrError(f"--precision fp32: {model_path} is a {meta.precision} graph; build the fp32 graph (model.onnx)")
    requested = None if precision == "fp32" else precision
    step = source_step(meta.precision, requested)
    if images and step != "calibrate":
        console.say(f"note: --images is not used: {model_path} is already an int8 graph")
    existing = int8_name(model_path)
    if step == "calibrate" and not images and _fresh_int8(existing, model_path):
        console.say(f"using {existing} (calibrated from {model_path} by `hfr-edge calibrate`; "
                    f"give --images DIR to recalibrate)")
        model_path, meta, step = existing, load_meta(existing), "as_is"
    calib_images = find_calib_images(model_path, meta, images) if step == "calibrate" else None

    from ..runtime.trtinfo import import_tensorrt  # noqa: PLC0415
    from ..variants import calibrate_model, make_fp16  # noqa: PLC0415
    from .engine import api_of, build_engine  # noqa: PLC0415
    from .plan import make_plan  # noqa: PLC0415

    trt = import_tensorrt()
    target = requested or meta.precision
    make_plan(trt.__version__, api_of(trt), target)  # refuse an unusable TensorRT before the slow steps
    graph = model_path
    if step == "fp16":
        graph = make_fp16(model_path)
    elif step == "calibrate":
        console.say(f"calibrating {model_path} with up to {frames} images from {calib_images} ({method}): "
                    f"{int8_name(model_path)}")
        graph = calibrate_model(model_path, str(calib_images), int8_name(model_path), n=frames, method=method)
    graph_precision = load_meta(graph).precision
    plan = make_plan(trt.__version__, api_of(trt), graph_precision, target if target != graph_precision else None)
    for note in plan.notes:
        console.say(note)
    build_engine(graph, out, plan, batch_range, workspace_bytes, timing_cache)
    return out
