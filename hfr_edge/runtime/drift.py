"""The drift watch: each source's frames compared, over a rolling window, with the reference of
normal frames the artifact carries (base/scene.py): brightness, contrast, sharpness, layout and the
model's scores. When the window's mean of one of them leaves its normal range, one drift event
(a JSONL record, a banner, a count in the summary); it is raised again only after coming back.

A normal range is the reference's [min, max] widened by the larger of k standard deviations and a
floor (absolute or relative to the mean), so a reference of a few frames is not a hair trigger.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, TextIO, Tuple

import numpy as np

from ..base import console
from ..base.errors import HfrError
from ..base.scene import STATS, frame_stats, layout_distance

MODES = ("off", "warn", "stop")
WINDOW = 300  # frames per source: 10 s of a 30 fps camera
PIXELS_PER_SAMPLE = 500_000  # a larger region is measured every k-th frame (1080p: every 4th), bounding the cost
# stat: (k standard deviations, absolute floor, floor relative to |mean|, lower side checked)
RULES: Dict[str, Tuple[float, float, float, bool]] = {
    "brightness": (4.0, 0.06, 0.0, True),
    "contrast": (4.0, 0.0, 0.25, True),
    "sharpness": (4.0, 0.0, 0.30, True),
    "layout": (4.0, 0.12, 0.0, False),  # a distance: only too far is drift
    "score": (3.0, 0.08, 0.0, False),  # scores as a whole rising; single anomalies are verdicts, not drift
}
HINTS = {
    ("brightness", -1): "darker than training: light dimmed or exposure changed?",
    ("brightness", 1): "brighter than training: light or exposure changed?",
    ("contrast", -1): "flatter than training: light, exposure or a dirty lens?",
    ("contrast", 1): "harsher than training: light or exposure changed?",
    ("sharpness", -1): "blurrier than training: focus lost, lens dirty or motion blur?",
    ("sharpness", 1): "sharper or noisier than training: gain or focus changed?",
    ("layout", 1): "the scene is laid out differently: camera moved or another part?",
    ("score", 1): "scores as a whole above normal: the scene or the process changed; check it, or retrain",
}


def normal_ranges(ref: dict) -> Dict[str, Tuple[float, float]]:
    out = {}
    for name, (k, floor, rel, lower) in RULES.items():
        st = ref.get("stats", {}).get(name)
        if not st:
            continue
        margin = max(k * st["std"], floor, rel * abs(st["mean"]))
        out[name] = (st["min"] - margin if lower else -np.inf, st["max"] + margin)
    return out


class DriftWatch:
    """One source's watch: update(frame, result) -> the drift events this frame raises (often none)."""

    def __init__(self, ref: dict, view, window: int = WINDOW, source_id: int = 0, source: str = ""):
        self.view, self.window, self.source_id, self.source = view, int(window), source_id, source
        self.side = int(ref.get("side", 256))
        sig = ref.get("layout_signature")
        self.signature = None if sig is None else np.asarray(sig, np.float64)
        self.ranges = normal_ranges(ref)
        self.every = 0  # frames per sample, set by the first frame's size
        self._ring = np.zeros((0, len(STATS)), np.float64)
        self.seen = self.samples = 0
        self.out: Dict[str, bool] = {name: False for name in self.ranges}
        self.events = 0

    def measure(self, rgb: np.ndarray, score: float) -> np.ndarray:
        """This frame's values of STATS (its region's scene statistics and its score)."""
        x0, y0, x1, y1 = self.view.region(*rgb.shape[:2])
        b, c, s, sig = frame_stats(rgb[y0:y1, x0:x1], self.side)
        d = layout_distance(sig, self.signature) if self.signature is not None else 0.0
        return np.array([b, c, s, d, score], np.float64)

    def update(self, frame, result) -> List[dict]:
        if not self.every:
            x0, y0, x1, y1 = self.view.region(*frame.rgb.shape[:2])
            self.every = max(1, round((x1 - x0) * (y1 - y0) / PIXELS_PER_SAMPLE))
            self._ring = np.zeros((max(2, -(-self.window // self.every)), len(STATS)), np.float64)
        self.seen += 1
        if (self.seen - 1) % self.every:
            return []
        self._ring[self.samples % len(self._ring)] = self.measure(frame.rgb, result.score)
        self.samples += 1
        if self.samples < len(self._ring):
            return []  # judged on full windows only
        mean = self._ring.mean(0)
        events = []
        for i, name in enumerate(STATS):
            if name not in self.ranges:
                continue
            lo, hi = self.ranges[name]
            v = float(mean[i])
            outside = v < lo or v > hi
            if outside and not self.out[name]:
                events.append(self._event(frame, name, v, lo, hi))
            self.out[name] = outside
        self.events += len(events)
        return events

    def _event(self, frame, name: str, v: float, lo: float, hi: float) -> dict:
        side = -1 if v < lo else 1
        normal = f"{lo:.3g}..{hi:.3g}" if np.isfinite(lo) else f"<= {hi:.3g}"
        msg = (f"{self.source}: {name} {v:.3g} outside its normal range {normal} (mean of the last {self.window} "
               f"frames, at frame {frame.index}): {HINTS[(name, side)]}")
        return {"event": "drift", "source": frame.name, "source_id": self.source_id, "frame": frame.index,
                "time": round(time.time(), 6), "stat": name, "value": round(v, 6),
                "normal": [None if not np.isfinite(lo) else round(lo, 6), round(hi, 6)], "window": self.window,
                "message": msg}


def open_watch(mode: str, ref: Optional[dict], view, window: Optional[int], model: str,
               log: Optional[TextIO] = None) -> Optional[Callable[[int, str], DriftWatch]]:
    """A factory of per-source watches, or None (--drift off, or an artifact without a reference)."""
    if mode not in MODES:
        raise HfrError(f"--drift {mode!r} must be one of: {', '.join(MODES)}")
    window = WINDOW if window is None else int(window)
    if window < 2:
        raise HfrError(f"--drift-window {window} must be at least 2 frames")
    if mode == "off":
        return None
    if not isinstance(ref, dict) or not normal_ranges(ref):
        console.warn(f"{model} carries no reference of normal frames (trained before the drift watch); "
                     f"no drift watch: retrain it to have one, or add --drift off", log)
        return None
    return lambda source_id, source: DriftWatch(ref, view, window, source_id, source)
