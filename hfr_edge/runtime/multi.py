"""Several sources, one runner: each source is read in its own thread into a one-frame slot, and
each tick of `run` takes the frames that are ready, from all sources, as one batch.

A live source (camera, stream) keeps only its newest frame: one the loop has not taken yet is
overwritten and counted as dropped. A file source (video, folder) waits until its frame is taken,
so none is lost, and decodes the next one while the loop runs the model. A source that fails is
recorded and left behind; the others go on.
"""

from __future__ import annotations

import threading
import time
from typing import List, Optional, Sequence, Tuple

from ..base.errors import HfrError
from .sources import Frame, Source

WAIT_SLICE = 0.25  # s: waits are cut in slices so a stop request (a signal) is seen promptly


class Feed:
    """One source read by its own thread into a slot the loop takes from."""

    def __init__(self, index: int, src: Source, ready: threading.Condition, max_frames: Optional[int] = None):
        self.index, self.src, self._ready, self._max = index, src, ready, max_frames
        self.live = bool(src.live)
        self.slot: Optional[Frame] = None
        self.done = False  # the reader ended (source exhausted, failed or stopped)
        self.error: Optional[str] = None  # why it failed, if it did
        self.overwritten = 0  # live frames replaced in the slot before the loop took them
        self.taken = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name=f"hfr-feed {index}", daemon=True)

    def start(self) -> "Feed":
        self._thread.start()
        return self

    @property
    def dropped(self) -> int:
        return self.src.dropped + self.overwritten

    def _read(self) -> None:
        frames = iter(self.src)
        try:
            while not self._stop.is_set():
                frame = next(frames, None)
                if frame is None:
                    break
                with self._ready:
                    if self.slot is not None:
                        self.overwritten += 1
                    self.slot = frame
                    self._ready.notify_all()
                    while not self.live and self.slot is not None and not self._stop.is_set():
                        self._ready.wait(WAIT_SLICE)  # a file waits for the loop: nothing is lost
        except HfrError as exc:
            self.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a source's failure must not take the others down
            self.error = f"{self.src.name}: {type(exc).__name__}: {exc}"
        finally:
            with self._ready:
                self.done = True
                self._ready.notify_all()

    @property
    def capped(self) -> bool:
        """It has given its --frames."""
        return self._max is not None and self.taken >= self._max

    @property
    def ready(self) -> bool:
        return self.slot is not None and not self.capped

    def take(self) -> Optional[Frame]:
        """The waiting frame, or None (call with the condition held)."""
        frame, self.slot = self.slot, None
        if frame is not None:
            self.taken += 1
            if self.capped:
                self.stop()
        return frame

    @property
    def finished(self) -> bool:
        """Nothing more will come from this feed."""
        return self.capped or (self.slot is None and self.done)

    def stop(self) -> None:
        self._stop.set()
        self.src.stop_requested = True  # ends a wait inside the source (a live source checks it)

    def close(self) -> None:
        """Stop the reader, then release the source (never while its thread may still read it)."""
        self.stop()
        with self._ready:
            self._ready.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        if self.live and self.slot is not None:
            self.overwritten += 1  # captured, never processed: a drop
        self.slot = None
        if not self._thread.is_alive():
            self.src.close()


class Feeds:
    """All feeds of a run and the condition their readers signal."""

    def __init__(self, sources: Sequence[Source], max_frames: Optional[int] = None):
        self.ready = threading.Condition()
        self.items = [Feed(i, s, self.ready, max_frames) for i, s in enumerate(sources)]

    def start(self) -> "Feeds":
        for f in self.items:
            f.start()
        return self

    def next_batch(self, stopped) -> Optional[List[Tuple[Feed, Frame]]]:
        """The frames ready now, at least one (waiting for one), or None once every feed is finished
        or `stopped()` is true."""
        with self.ready:
            while True:
                if stopped():
                    return None
                got = [(f, f.take()) for f in self.items if f.ready]
                if got:
                    self.ready.notify_all()  # file readers wait for their slot to empty
                    return got
                if all(f.finished for f in self.items):
                    return None
                self.ready.wait(WAIT_SLICE)

    def stop(self) -> None:
        for f in self.items:
            f.stop()

    def close(self) -> None:
        for f in self.items:
            f.close()


class SourceStats:
    """Per-source counters for the live line and the summary."""

    def __init__(self, feed: Feed):
        self.feed = feed
        self.frames = 0
        self.anomalous = 0
        self.start = time.perf_counter()
        self._wframes, self._wstart = 0, self.start

    def add(self, anomalous: bool) -> None:
        self.frames += 1
        self._wframes += 1
        self.anomalous += bool(anomalous)

    def window_fps(self) -> float:
        now = time.perf_counter()
        fps = self._wframes / max(now - self._wstart, 1e-9)
        self._wframes, self._wstart = 0, now
        return fps

    def summary(self, elapsed: float) -> dict:
        src = self.feed.src
        return {"id": self.feed.index, "source": src.describe(), "frames": self.frames,
                "fps": round(self.frames / max(elapsed, 1e-9), 3), "anomalous": self.anomalous,
                "dropped": self.feed.dropped, "skipped": src.skipped, "reconnects": getattr(src, "reconnects", 0),
                "error": self.feed.error}
