"""The checkpoint contract: a plain dict that `torch.load(weights_only=True)`
reads without running code, carrying everything export needs (no weights package, no network)."""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Optional, Tuple

import torch

from .config import CKPT_FORMAT, CKPT_VERSION, ModelConfig, NormStats
from .base.errors import HfrError
from .base.fsio import atomic_path
from .model import HFRAE, DeployModel


def save_checkpoint(path, model: HFRAE, stats: NormStats, summary: dict, extra: Optional[dict] = None) -> Path:
    """`extra`: more top-level entries of plain data (the view, the reference of normal frames)."""
    ckpt = {
        **(extra or {}),
        "format": CKPT_FORMAT,
        "version": CKPT_VERSION,
        "config": model.cfg.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "norm": stats.to_dict(),
        "train": summary,
    }
    buf = io.BytesIO()  # serialized in memory: torch's zip writer turns a full disk into a RuntimeError
    torch.save(ckpt, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())  # an OSError here: atomic_path words it (disk full, permission)
    return Path(path)


def load_checkpoint(path) -> dict:
    """Read and validate a checkpoint; every failure is one HfrError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise HfrError(f"{p}: checkpoint not found; train one with `hfr-edge train DATA -o {p.name}`")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says it all
            warnings.simplefilter("ignore")
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise HfrError(f"{p}: refused: the file holds Python objects that would run code when loaded "
                           f"(not an hfr-edge checkpoint); only load checkpoints written by `hfr-edge train`") from None
        raise HfrError(f"{p}: corrupt checkpoint ({first[:80]}); retrain or restore it") from None
    except Exception as exc:  # noqa: BLE001 - truncated zips surface as many types (KeyError, EOFError, ...)
        raise HfrError(f"{p}: not a readable checkpoint, truncated or corrupt ({type(exc).__name__}); "
                       f"retrain or restore it") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise HfrError(f"{p}: not an hfr-edge checkpoint (no format '{CKPT_FORMAT}'); "
                       f"give a file written by `hfr-edge train`")
    ver = ckpt.get("version")
    if not isinstance(ver, int) or ver > CKPT_VERSION:
        raise HfrError(f"{p}: checkpoint version {ver!r} is newer than this hfr-edge reads ({CKPT_VERSION}); upgrade hfr-edge")
    for key in ("config", "state_dict", "norm"):
        if not isinstance(ckpt.get(key), dict):
            raise HfrError(f"{p}: checkpoint lacks its '{key}'; retrain it")
    return ckpt


def _config(ckpt: dict, where: str) -> Tuple[ModelConfig, NormStats]:
    try:
        return ModelConfig.from_dict(ckpt["config"]), NormStats.from_dict(ckpt["norm"])
    except (TypeError, ValueError, KeyError) as exc:
        raise HfrError(f"{where}: checkpoint config or statistics are malformed ({exc}); retrain it") from None


def model_from_checkpoint(ckpt: dict, where: str = "checkpoint") -> HFRAE:
    cfg, _ = _config(ckpt, where)
    model = HFRAE(cfg, pretrained=False)
    state = ckpt["state_dict"]
    if model.gauss is not None:  # an older checkpoint also holds the statistics of levels its map leaves out
        state = model.gauss.without_unused(state, "gauss.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise HfrError(f"{where}: weights do not match the model config ({str(exc).splitlines()[0][:100]}); retrain it") from None
    return model.eval()


def deploy_model(ckpt: dict, where: str) -> Tuple[DeployModel, ModelConfig, NormStats]:
    """A loaded checkpoint as the export wrapper: float32 (N, 3, S, S) in [0, 1] -> (map, score) normalised."""
    model = model_from_checkpoint(ckpt, where)
    _, stats = _config(ckpt, where)
    return DeployModel(model, stats).eval(), model.cfg, stats


def load_deploy_model(path) -> Tuple[DeployModel, ModelConfig, NormStats]:
    return deploy_model(load_checkpoint(path), str(path))
