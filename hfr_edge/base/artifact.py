"""Artifact metadata: the versioned JSON beside every artifact (model.onnx -> model.onnx.json,
model.engine -> model.engine.json), validated on load. torch-free.

The same dict is stored in the ONNX graph's metadata_props (key "hfr_edge", JSON text), so a
graph that lost its JSON can still be described.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from .contract import INPUT_NAME, MAP_NAME, PRECISIONS, SCORE_NAME, THRESHOLD
from .errors import HfrError, first_line
from .fsio import path_or_bytes, read_json, write_json_atomic

SCHEMA = "hfr-edge-artifact"
SCHEMA_VERSION = 1  # the only version so far; a newer file is refused (upgrade hfr-edge)
META_KEY = "hfr_edge"  # key in ONNX metadata_props


def sidecar(path: str | os.PathLike) -> Path:
    """model.onnx -> model.onnx.json"""
    p = Path(path)
    return p.with_name(p.name + ".json")


@dataclass(frozen=True)
class ArtifactMeta:
    kind: str  # "onnx" or "engine"
    precision: str  # fp32 | fp16 | int8
    image_size: int
    model: Dict[str, Any]  # ModelConfig.to_dict()
    norm: Dict[str, Any]  # NormStats.to_dict()
    extra: Dict[str, Any] = field(default_factory=dict)  # provenance, training data, engine fingerprint ...

    def to_dict(self) -> dict:
        d = dict(self.extra)
        d.update(schema=SCHEMA, schema_version=SCHEMA_VERSION, kind=self.kind, precision=self.precision,
                 image_size=self.image_size, model=self.model, norm=self.norm, threshold=THRESHOLD,
                 input={"name": INPUT_NAME, "shape": ["N", 3, self.image_size, self.image_size],
                        "dtype": "float32", "layout": "NCHW, RGB, values in [0, 1]"},
                 outputs={MAP_NAME: ["N", 1, self.image_size, self.image_size], SCORE_NAME: ["N"]})
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "ArtifactMeta":
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise HfrError(f"{where}: not hfr-edge artifact metadata (schema {d.get('schema') if isinstance(d, dict) else None!r}); "
                           f"re-export the model with `hfr-edge export`")
        ver = d.get("schema_version")
        if not isinstance(ver, int) or ver > SCHEMA_VERSION:
            raise HfrError(f"{where}: metadata schema_version {ver!r} is newer than this hfr-edge understands "
                           f"({SCHEMA_VERSION}); upgrade hfr-edge")
        try:
            kind, precision, size = d["kind"], d["precision"], d["image_size"]
            model, norm = d["model"], d["norm"]
        except KeyError as exc:
            raise HfrError(f"{where}: metadata lacks {exc.args[0]!r}; re-export the model") from None
        if kind not in ("onnx", "engine"):
            raise HfrError(f"{where}: metadata kind {kind!r} must be 'onnx' or 'engine'")
        if precision not in PRECISIONS:
            raise HfrError(f"{where}: metadata precision {precision!r} must be one of {', '.join(PRECISIONS)}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 32 or size % 32:
            raise HfrError(f"{where}: metadata image_size {size!r} must be a positive multiple of 32")
        if not isinstance(model, dict) or not isinstance(norm, dict):
            raise HfrError(f"{where}: metadata 'model' and 'norm' must be objects; re-export the model")
        for k in ("threshold", "low"):
            v = norm.get(k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
                raise HfrError(f"{where}: metadata norm.{k} {v!r} must be a number; re-export the model")
        known = {"schema", "schema_version", "kind", "precision", "image_size", "model", "norm", "threshold",
                 "input", "outputs"}
        return cls(kind, precision, size, model, norm, {k: v for k, v in d.items() if k not in known})


def write_meta(artifact: str | os.PathLike, meta: ArtifactMeta) -> Path:
    p = sidecar(artifact)
    write_json_atomic(p, meta.to_dict())
    return p


def drop_stale_meta(artifact: str | os.PathLike) -> None:
    """Remove the JSON beside `artifact` before the artifact is replaced, so that a crash between
    writing the artifact and its new JSON never pairs the new file with the old file's metadata
    (an ONNX graph then falls back to the metadata inside it; an engine asks to be rebuilt)."""
    try:
        sidecar(artifact).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise HfrError(f"cannot replace {sidecar(artifact)}: {exc.strerror}; check its permissions") from None


def _meta_from_onnx_props(path: Path) -> Optional[dict]:
    """Read metadata_props without onnx (which the runtime does not need): ONNX Runtime has them.
    None for a readable graph without hfr-edge metadata; HfrError for an unreadable one."""
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        raise HfrError(f"{path}: reading its metadata needs onnxruntime (pip install onnxruntime), "
                       f"or put {sidecar(path).name} beside it") from None
    source = path_or_bytes(path)  # a non-UTF-8 name is read as bytes
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
        text = sess.get_modelmeta().custom_metadata_map.get(META_KEY)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind11 types
        first = first_line(exc, 120)
        raise HfrError(f"{path}: not a valid ONNX file, truncated or corrupt ({first}); "
                       f"re-export it with `hfr-edge export`") from None
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise HfrError(f"{path}: its hfr-edge metadata is corrupt; re-export it with `hfr-edge export`") from None


def load_meta(artifact: str | os.PathLike) -> ArtifactMeta:
    """Metadata of an .onnx or .engine artifact: the JSON beside it, else (ONNX) the graph's own."""
    artifact = Path(artifact)
    if not artifact.is_file():
        raise HfrError(f"{artifact}: file not found")
    side = sidecar(artifact)
    if side.is_file():
        return ArtifactMeta.from_dict(read_json(side, "artifact metadata"), str(side))
    if artifact.suffix == ".onnx":
        d = _meta_from_onnx_props(artifact)
        if d is not None:
            return ArtifactMeta.from_dict(d, str(artifact))
        raise HfrError(f"{artifact}: not an hfr-edge graph (no {side.name} beside it and no hfr_edge metadata "
                       f"inside); export it with `hfr-edge export ckpt.pt`")
    raise HfrError(f"{artifact}: its metadata {side} is missing; rebuild it with `hfr-edge build`")
