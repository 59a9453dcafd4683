"""What normal looks like, measured on the held-out good frames once training is done, through the
deployed model itself (DeployModel: normalised outputs): the frame-level threshold where a frame is
several tiles, and (runtime/drift.py) the normal score distribution and image statistics that the
drift watch compares a running camera with. All stored in the checkpoint as plain numbers."""

from __future__ import annotations

from dataclasses import replace
from typing import List, Tuple

import numpy as np

from .base.view import View
from .config import NormStats
from .viewdata import ViewBatch, frame_scores


def normalised_outputs(model, stats: NormStats, x: np.ndarray, batch: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    """Normalised maps (N, S, S) and scores (N,) of float32 inputs, as the exported graph gives them."""
    import torch  # noqa: PLC0415

    from .model import DeployModel  # noqa: PLC0415

    deploy = DeployModel(model, stats).eval()
    maps: List[np.ndarray] = []
    scores: List[np.ndarray] = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            m, s = deploy(torch.from_numpy(x[i:i + batch]))
            maps.append(m.numpy()[:, 0])
            scores.append(s.numpy())
    return np.concatenate(maps), np.concatenate(scores)


def frame_norm_stats(stats: NormStats, maps: np.ndarray, scores: np.ndarray, counts: List[int],
                     score_kind: str) -> NormStats:
    """Tile statistics -> frame statistics: the threshold from held-out FRAME scores (each the
    largest of its tiles), so a normal frame of many tiles is not flagged for its noisiest tile.
    `low` (the smallest map value) stays; other fields of NormStats are kept as they are."""
    from .train import norm_stats  # noqa: PLC0415 - the one rule for thresholds

    raw_scores = stats.low + np.asarray(scores, np.float64) / stats.scale
    raw_frames = frame_scores(raw_scores, counts).astype(np.float64)
    map_max = None
    if score_kind != "max":
        tile_max = stats.low + maps.reshape(len(maps), -1).max(1).astype(np.float64) / stats.map_scale
        map_max = frame_scores(tile_max, counts).astype(np.float64)
    new = norm_stats(raw_frames, stats.low, map_max)
    return replace(stats, threshold=new.threshold, low=new.low, map_threshold=new.map_threshold,
                   score_mean=new.score_mean, score_std=new.score_std, score_max=new.score_max,
                   n_images=new.n_images)


def holdout_reference(model, stats: NormStats, hold: ViewBatch, view: View) -> Tuple[NormStats, dict]:
    """(the statistics to store, the reference of normal frames for the drift watch)."""
    maps, scores = normalised_outputs(model, stats, hold.x)
    if view.n_tiles > 1:
        stats = frame_norm_stats(stats, maps, scores, hold.counts, model.cfg.score)
        maps, scores = normalised_outputs(model, stats, hold.x)
    frames = frame_scores(scores, hold.counts)
    return stats, {"frames": len(frames), "scores": [round(float(s), 6) for s in np.sort(frames)]}
