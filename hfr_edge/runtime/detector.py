"""Frames in, anomaly maps and scores out: the shared pre-processing plus a runner. The only way
`run`, `eval`, `calibrate` and `bench` turn frames into results, whatever the backend."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..base.contract import MAP_NAME, SCORE_NAME, THRESHOLD
from ..base.errors import HfrError
from ..base.images import preprocess
from .runner import Runner


class Detector:
    def __init__(self, runner: Runner, threshold: float = THRESHOLD):
        self.runner = runner
        self.size: int = runner.meta.image_size
        self.threshold = float(threshold)  # outputs are normalised: THRESHOLD is the artifact's own
        self._buffer: Optional[np.ndarray] = None  # reused input where the runner has no pinned one

    def _chunk(self, n: int) -> int:
        return self.runner.max_batch or max(n, 1)

    def prepare(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Frames of any size, RGB or gray (see base.images.to_rgb_uint8) -> float32 (N, 3, S, S),
        pre-processed straight into the runner's pinned buffer where it has one, else into a buffer
        this detector keeps (so a frame loop allocates nothing)."""
        n = len(frames)
        out = self.runner.input_buffer(n)
        if out is None:
            if self._buffer is None or self._buffer.shape[0] < n:
                self._buffer = np.empty((max(n, 1), 3, self.size, self.size), np.float32)
            out = self._buffer[:n]
        return preprocess(frames, self.size, out=out)

    def predict(self, frames: Sequence[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        """Frames -> maps float32 (N, S, S), scores float32 (N,), in chunks of the runner's max batch."""
        frames = list(frames)
        step = self._chunk(len(frames))
        maps: List[np.ndarray] = []
        scores: List[np.ndarray] = []
        for i in range(0, len(frames), step):
            m, s = self._run(self.prepare(frames[i:i + step]))
            maps.append(m)
            scores.append(s)
        return self._join(maps, scores)

    def predict_batch(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """x already float32 (N, 3, S, S) in [0, 1]: run in chunks of the runner's max batch."""
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise HfrError(f"predict_batch: expected a float32 (N, 3, {self.size}, {self.size}) array, got "
                           f"{getattr(x, 'shape', type(x).__name__)}")
        step = self._chunk(x.shape[0])
        maps: List[np.ndarray] = []
        scores: List[np.ndarray] = []
        for i in range(0, x.shape[0], step):
            m, s = self._run(np.ascontiguousarray(x[i:i + step]))
            maps.append(m)
            scores.append(s)
        return self._join(maps, scores)

    def is_anomalous(self, score: float) -> bool:
        return score >= self.threshold

    def _run(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        out = self.runner.infer({self.runner.input_name: x})
        return out[MAP_NAME][:, 0], out[SCORE_NAME]

    def _join(self, maps: List[np.ndarray], scores: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
        if not maps:
            return np.zeros((0, self.size, self.size), np.float32), np.zeros((0,), np.float32)
        if len(maps) == 1:
            return maps[0], scores[0]
        return np.concatenate(maps), np.concatenate(scores)
