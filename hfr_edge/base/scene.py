"""What a camera's view looks like in a few numbers, for the drift watch: brightness, contrast,
sharpness and a coarse layout signature of the region the model looks at, measured at about the
resolution the model sees it; and the reference of normal frames that training stores beside the
model (those numbers and the normalised scores of its held-out good frames). numpy + OpenCV only:
training computes the reference, the runtime compares a camera with it.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .images import cv2_module, to_rgb_uint8

VERSION = 1
GRID = 8  # the layout signature: the region's grey levels on a GRID x GRID grid, standardised
STATS = ("brightness", "contrast", "sharpness", "layout", "score")
MAX_SCORES = 1000  # normal scores kept in the reference (quantiles beyond that)


def analysis_side(view, image_size: int) -> int:
    """The long side, in pixels, a region is measured at: what the model resolves (its input size
    times the tiles along the longer side), between 64 and 512."""
    return int(min(512, max(64, image_size * max(view.tiles))))


def grey(rgb: np.ndarray, side: int) -> np.ndarray:
    """(h, w, 3) uint8 -> float32 grey in [0, 1] with its long side `side` (area-averaged when shrinking).
    A large frame is first averaged down by a whole factor: OpenCV's fast path (a 1080p frame: ~5 ms
    instead of ~25 ms for one area resize by 7.5)."""
    cv2 = cv2_module()
    rgb = to_rgb_uint8(rgb, "frame")
    k = max(rgb.shape[:2]) // side
    if k >= 2:  # the fast path needs whole multiples: the last few rows and columns are left out
        h, w = rgb.shape[0] // k, rgb.shape[1] // k
        rgb = cv2.resize(rgb[:h * k, :w * k], (w, h), interpolation=cv2.INTER_AREA)
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = g.shape
    scale = side / max(h, w)
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    if size != (w, h):
        g = cv2.resize(g, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return g.astype(np.float32) * np.float32(1.0 / 255.0)


def frame_stats(rgb: np.ndarray, side: int) -> Tuple[float, float, float, np.ndarray]:
    """(brightness, contrast, sharpness, layout signature (GRID*GRID,)) of a region.

    brightness: mean grey; contrast: its standard deviation; sharpness: mean |Laplacian| divided by
    the contrast (so a dimmer lamp does not read as blur, a defocused lens does); signature: the
    grey levels on a coarse grid, standardised (a camera that moved changes it, light does not)."""
    cv2 = cv2_module()
    g = grey(rgb, side)
    b, c = float(g.mean()), float(g.std())
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1)
    s = float(np.abs(lap).mean()) / (c + 0.02)
    sig = cv2.resize(g, (GRID, GRID), interpolation=cv2.INTER_AREA).ravel().astype(np.float64)
    sig = (sig - sig.mean()) / max(float(sig.std()), 0.01)
    return b, c, s, sig


def layout_distance(sig: np.ndarray, ref: np.ndarray) -> float:
    """1 - the correlation of two standardised signatures: 0 for the same layout, about 1 for an unrelated one."""
    n = float(np.linalg.norm(sig) * np.linalg.norm(ref))
    return 1.0 - (float(np.dot(sig, ref)) / n if n > 0 else 0.0)


def _summary(values: Sequence[float]) -> Dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def reference(regions: Optional[List[np.ndarray]], scores: Sequence[float], side: int) -> dict:
    """The reference of normal frames: their statistics (mean, std, min, max each), the mean layout
    signature and their normalised scores (sorted; quantiles beyond MAX_SCORES). Plain numbers only."""
    s = np.sort(np.asarray(scores, np.float64))
    if len(s) > MAX_SCORES:
        s = np.quantile(s, np.linspace(0, 1, MAX_SCORES))
    ref: dict = {"version": VERSION, "frames": int(len(scores)), "side": int(side),
                 "scores": [round(float(v), 6) for v in s]}
    stats = {"score": _summary(s)} if len(s) else {}
    if regions:
        rows = [frame_stats(r, side) for r in regions]
        sigs = np.stack([r[3] for r in rows])
        mean_sig = sigs.mean(0)
        mean_sig = (mean_sig - mean_sig.mean()) / max(float(mean_sig.std()), 1e-6)
        stats.update(brightness=_summary([r[0] for r in rows]), contrast=_summary([r[1] for r in rows]),
                     sharpness=_summary([r[2] for r in rows]),
                     layout=_summary([layout_distance(r[3], mean_sig) for r in rows]))
        ref["layout_signature"] = [round(float(v), 6) for v in mean_sig]
    ref["stats"] = stats
    return ref
