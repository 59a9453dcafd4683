"""Frames through the artifact's view: every tile of every frame of a tick pre-processed into ONE
batch (the runner's pinned buffer where it has one), one inference call (in chunks of an engine's
largest batch), and the results handed back per frame: the frame's score is its largest tile score;
its map is stitched in the full frame only when something draws it. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..base.view import View
from .detector import Detector

MAP_LONG_SIDE = 640  # a full-frame map for an overlay is stitched at most this large; the overlay scales it up


@dataclass
class FrameResult:
    score: float  # the frame's score: its largest tile score (normalised, 0.5 = threshold)
    maps: np.ndarray  # (tiles, S, S) normalised tile maps
    tile_scores: np.ndarray  # (tiles,)


class TiledDetector:
    """A Detector that sees frames as its view says."""

    def __init__(self, det: Detector, view: View):
        self.det, self.view, self.size = det, view, det.size

    def prepare(self, frames: Sequence[np.ndarray], names: Sequence[str] = ()) -> Tuple[np.ndarray, List[int]]:
        """Frames -> (float32 (sum of tiles, 3, S, S), tiles per frame). A ROI outside a frame: HfrError."""
        inputs: List[np.ndarray] = []
        counts: List[int] = []
        for i, rgb in enumerate(frames):
            tiles = self.view.inputs(rgb, self.size, names[i] if i < len(names) else f"frame {i}")
            inputs += tiles
            counts.append(len(tiles))
        if len(inputs) <= (self.det.runner.max_batch or len(inputs)):
            return self.det.prepare(inputs), counts
        from ..base.images import preprocess  # noqa: PLC0415 - more tiles than one engine call takes

        return preprocess(inputs, self.size), counts

    def infer(self, x: np.ndarray, counts: Sequence[int]) -> List[FrameResult]:
        maps, scores = self.det.predict_batch(x)
        out, k = [], 0
        for n in counts:
            s = scores[k:k + n]
            out.append(FrameResult(float(s.max()), maps[k:k + n], s))
            k += n
        return out

    def predict(self, frames: Sequence[np.ndarray]) -> List[FrameResult]:
        return self.infer(*self.prepare(frames))

    def frame_map(self, r: FrameResult, hw: Tuple[int, int]) -> np.ndarray:
        """The stitched map in the frame's coordinates (0 outside the ROI), at most MAP_LONG_SIDE long."""
        h, w = hw
        scale = min(1.0, MAP_LONG_SIDE / max(h, w))
        return self.view.frame_map(r.maps, h, w, (max(1, round(h * scale)), max(1, round(w * scale))))
