"""Calibration frames -> the explicit INT8 (Q/DQ) graph of an fp32 hfr-edge graph, for TensorRT or a
CPU (OpenVINO), checked against its target's rules and written atomically with its metadata. What int8 costs is measured elsewhere
(hfr_edge/compare.py): this package never evaluates."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, TextIO, Tuple

import numpy as np

from ..base import console
from ..base.artifact import ArtifactMeta, drop_stale_meta, load_meta, sidecar, write_meta
from ..base.errors import HfrError
from ..base.fsio import atomic_path
from ..base.view import view_for, view_inputs
from ..export.graph import graph_meta, load_onnx, set_graph_meta
from .defaults import DEFAULT_METHOD, DEFAULT_TARGET, TARGETS, int8_name
from .qdq import METHODS, qdq_problems, quantize

RULES = {"tensorrt": "TensorRT's", "cpu": "the CPU target's"}
HOLDOUT_SHARE = 0.2  # of the calibration frames, kept out of calibration to compare fp32 and int8 on


def check_source(onnx_path, out_path=None, method: str = DEFAULT_METHOD,
                 target: str = DEFAULT_TARGET) -> Tuple[Path, Path, ArtifactMeta]:
    """(fp32 graph, int8 path to write, its metadata), or HfrError before any frame is read."""
    if method not in METHODS:
        raise HfrError(f"--method {method!r} must be one of {', '.join(METHODS)}")
    if target not in TARGETS:
        raise HfrError(f"--target {target!r} must be one of {', '.join(TARGETS)}")
    src = Path(onnx_path)
    meta = graph_meta(load_onnx(src), str(src))
    if sidecar(src).is_file():
        load_meta(src)  # a corrupt JSON beside the graph is an error here as in every other command
    if meta.precision != "fp32":
        raise HfrError(f"{src}: is a {meta.precision} graph; calibrate the fp32 graph from `hfr-edge export`")
    out = Path(out_path) if out_path else int8_name(src, target)
    if out.resolve() == src.resolve():
        raise HfrError(f"-o {out}: would overwrite the fp32 graph; choose another name")
    return src, out, meta


def holdout_split(n: int, keep_out: bool = True) -> Tuple[List[int], List[int]]:
    """(calibration, held-out) indices of n frames: every k-th frame held out (HOLDOUT_SHARE of them)
    when keep_out and there are at least 5, else none."""
    k = max(1, int(round(n * HOLDOUT_SHARE))) if keep_out and n >= 5 else 0
    hold = list(range(n))[::max(1, n // k)][:k] if k else []
    held = set(hold)
    return [i for i in range(n) if i not in held], hold


def calibrate(onnx_path, frames: Sequence[np.ndarray], out_path=None, method: str = DEFAULT_METHOD,
              source: str = "", log: Optional[TextIO] = None, target: str = DEFAULT_TARGET,
              roi: Optional[str] = None, early_float: bool = True) -> Path:
    """Write the int8 graph of `onnx_path` for `target` calibrated on `frames` (RGB, any size) and its
    JSON; returns its path. The frames are cut as the graph's view says (its ROI, or `roi` instead), as
    the camera's will be. `early_float` False: every encoder layer int8 (statistics refitted on the
    int8 graph's features: variants.refit_calibrate)."""
    src, out, meta = check_source(onnx_path, out_path, method, target)
    t0 = time.time()
    view = view_for(meta.extra.get("view"), roi, str(src))
    x = view_inputs(list(frames), view, meta.image_size)
    console.say(f"calibrating {src} on {len(x)} frames from {source} ({method}, for {target})", log)
    try:
        with tempfile.TemporaryDirectory(prefix="hfr-calib-") as td:
            tmp_q = os.path.join(td, "q.onnx")
            quantize(str(src), x, tmp_q, method, target, early_float=early_float)
            q = load_onnx(tmp_q)
    except OSError as exc:  # a full disk or a file size limit while quantizing, in the temporary folder
        raise HfrError(f"calibration could not write its temporary graphs in {tempfile.gettempdir()} "
                       f"({exc.strerror or exc}); free space there or set TMPDIR to a folder with room", 1) from None
    problems = qdq_problems(q, target)
    if problems:
        raise HfrError(f"the Q/DQ graph breaks {RULES[target]} rules: {problems[0]} (+{len(problems) - 1} more); "
                       f"report this bug", 1)
    carried = {**meta.extra, "view": view.to_dict()} if roi is not None else meta.extra
    meta8 = ArtifactMeta(kind="onnx", precision="int8", image_size=meta.image_size, model=meta.model, norm=meta.norm,
                         extra={**carried, "calibration": {"method": method, "frames": len(x), "source": source,
                                                           "target": target, "symmetric": target == "tensorrt",
                                                           "per_channel": True,
                                                           "early_layers": "float" if early_float else "int8"}})
    set_graph_meta(q, meta8)
    with atomic_path(out) as tmp:
        tmp.write_bytes(q.SerializeToString(deterministic=True))
        drop_stale_meta(out)  # last step before the rename
    write_meta(out, meta8)
    console.say(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.time() - t0:.0f} s", log)
    return out
