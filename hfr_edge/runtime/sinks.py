"""Where `hfr-edge run` sends each verdict: a window, an overlay video, a JSONL log, PNGs of
anomalous frames, and the statistics line and summary. No torch; cv2 imported lazily.

The JSONL log is written in place and flushed per record (a crash keeps every finished record);
the video, the PNGs and the summary appear under their final names only when complete.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from ..base.errors import HfrError
from ..base.fsio import write_bytes_atomic, write_json_atomic
from ..base.images import cv2_module, heat_overlay

STAGES = ("capture", "preprocess", "inference", "postprocess", "output")
RED, GREEN = (230, 40, 40), (40, 200, 60)  # RGB


def annotate(rgb: np.ndarray, amap: np.ndarray, score: float, anomalous: bool, box=None) -> np.ndarray:
    """The frame with its heat map blended in and 'ANOMALY 0.73' / 'OK 0.21' written on it (RGB);
    `box` (x0, y0, x1, y1): the inspected region, outlined."""
    cv2 = cv2_module()
    out = heat_overlay(rgb, amap)
    h = out.shape[0]
    scale = max(0.35, h / 720.0)
    if box is not None:
        cv2.rectangle(out, (int(box[0]), int(box[1])), (int(box[2]) - 1, int(box[3]) - 1), (255, 255, 255),
                      max(1, int(scale)), cv2.LINE_AA)
    text = f"{'ANOMALY' if anomalous else 'OK'} {score:.2f}"
    org = (max(2, int(10 * scale)), max(12, int(36 * scale)))
    thick = max(1, int(2 * scale))
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, RED if anomalous else GREEN, thick, cv2.LINE_AA)
    return out


def _check_parent(path: Path, what: str) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise HfrError(f"{what} {path}: folder {parent} does not exist; create it or choose another path")


class Display:
    """An OpenCV window showing the annotated frames; show() returns False once q/Esc is pressed
    or the window is closed."""

    def __init__(self, title: str = "hfr-edge"):
        cv2 = cv2_module()
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise HfrError("no display to open a window on (DISPLAY is not set); add --headless, "
                           "or run it from the desktop session")
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error:
            raise HfrError("this OpenCV has no window support (opencv-python-headless?); add --headless, or use "
                           "JetPack's OpenCV / opencv-python") from None
        self.title = title

    def show(self, rgb: np.ndarray) -> bool:
        cv2 = cv2_module()
        cv2.imshow(self.title, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), 27):
            return False
        return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) >= 1

    def close(self) -> None:
        try:
            cv2_module().destroyWindow(self.title)
        except Exception:  # noqa: BLE001 - the user may have closed it already
            pass


class VideoSink:
    """An mp4 ('mp4v') of the annotated frames, sized by the first frame; written under a temporary
    name beside `path` and renamed onto it by close() (also after Ctrl-C or SIGTERM)."""

    def __init__(self, path, fps: float):
        self.path = Path(path)
        _check_parent(self.path, "--save")
        self.fps = float(fps)
        self.frames = 0
        self._writer = None
        self._size = None  # (w, h)
        suffix = self.path.suffix or ".mp4"  # the container is chosen by the extension
        self._tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}{suffix}")

    def write(self, rgb: np.ndarray) -> None:
        cv2 = cv2_module()
        h, w = rgb.shape[:2]
        if self._writer is None:
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                self._writer = None
                self._drop_tmp()  # OpenCV may have created it before failing
                raise HfrError(f"--save {self.path}: OpenCV cannot write an mp4v video here ({w}x{h}); "
                               f"check the folder is writable, or try a .avi name")
            self._size = (w, h)
        elif (w, h) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if not self._readable():  # OpenCV's writer fails silently (disk full): never rename a broken video
            self._drop_tmp()
            raise HfrError(f"--save {self.path}: the video could not be written completely (disk full or file "
                           f"size limit?); free space or choose another path", exit_code=1)
        try:
            os.replace(self._tmp, self.path)
        except OSError as exc:
            raise HfrError(f"--save {self.path}: cannot move the finished video into place ({exc.strerror}); "
                           f"it is at {self._tmp}") from None

    def _drop_tmp(self) -> None:
        try:
            os.unlink(self._tmp)
        except OSError:
            pass

    def _readable(self) -> bool:
        cap = cv2_module().VideoCapture(str(self._tmp))
        try:
            return bool(cap.isOpened() and cap.read()[0])
        finally:
            cap.release()


class JsonlSink:
    """One JSON object per line and frame, flushed after each record. A write that fails (disk
    full) cuts the file back to its last complete record and stops the run with one line."""

    def __init__(self, path):
        self.path = Path(path)
        _check_parent(self.path, "--jsonl")
        try:
            self._f = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise HfrError(f"--jsonl {self.path}: cannot write it ({exc.strerror}); choose another path") from None
        self._end = 0  # bytes of complete records
        self.records = 0

    def write(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode("utf-8")
        try:
            self._f.write(line)
            self._f.flush()
        except OSError as exc:
            self._fail(exc)
        self._end += len(line)
        self.records += 1

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError as exc:
                self._fail(exc)
            self._f = None

    def _fail(self, exc: OSError) -> None:
        f, self._f = self._f, None
        try:
            f.close()  # flushes the rest of the buffer again: may fail again
        except OSError:
            pass
        try:
            os.truncate(self.path, self._end)  # no half record at the end
        except OSError:
            pass
        raise HfrError(f"--jsonl {self.path}: cannot write ({exc.strerror or exc}); kept its {self.records} complete "
                       f"records; free space or choose another path", exit_code=1) from None


class AnomalySaver:
    """For each anomalous frame: NNNNNN_frame.png (as captured) and NNNNNN_overlay.png (annotated)."""

    def __init__(self, folder):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)  # run checked it already (runtime/outputs.py)
        except OSError as exc:
            raise HfrError(f"--save-anomalies {self.folder}: cannot create the folder ({exc.strerror})") from None
        self.saved = 0

    def save(self, index: int, rgb: np.ndarray, overlay: np.ndarray) -> None:
        for suffix, img in (("frame", rgb), ("overlay", overlay)):
            write_bytes_atomic(self.folder / f"{index:06d}_{suffix}.png", _png(img))
        self.saved += 1

    def close(self) -> None:
        pass


def _png(rgb: np.ndarray) -> bytes:
    cv2 = cv2_module()
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise HfrError("OpenCV could not encode a PNG")
    return buf.tobytes()


class Stats:
    """Per-stage timings and counts: a live statistics line per window and the summary at exit."""

    def __init__(self):
        self.start = time.perf_counter()
        self.frames = 0
        self.anomalous = 0
        self._total = [0.0] * len(STAGES)  # seconds per stage, whole run
        self._window = [0.0] * len(STAGES)
        self._wframes, self._wstart = 0, self.start
        # ms per part of "inference" (server/network, h2d/compute/d2h) where the runner measures them
        self._split: Dict[str, float] = {}
        self._wsplit: Dict[str, float] = {}

    def add(self, stages, anomalous: bool, parts: Optional[Dict[str, float]] = None) -> None:
        """stages: seconds spent in each of STAGES for one frame; parts: the runner's last_timings (ms)."""
        if parts and len(parts) > 1:
            for k, v in parts.items():
                self._split[k] = self._split.get(k, 0.0) + v
                self._wsplit[k] = self._wsplit.get(k, 0.0) + v
        self.frames += 1
        self._wframes += 1
        self.anomalous += bool(anomalous)
        for i, s in enumerate(stages):
            self._total[i] += s
            self._window[i] += s

    def line(self, dropped: int, skipped: int) -> str:
        """Statistics since the last line (then starts a new window)."""
        now = time.perf_counter()
        n = max(self._wframes, 1)
        fps = self._wframes / max(now - self._wstart, 1e-9)
        ms = ", ".join(f"{name} {1e3 * s / n:.1f}" for name, s in zip(STAGES, self._window))
        if self._wsplit:
            ms += " (" + ", ".join(f"{k} {v / n:.1f}" for k, v in self._wsplit.items()) + ")"
        self._wsplit = {}
        self._window = [0.0] * len(STAGES)
        self._wframes, self._wstart = 0, now
        return (f"hfr-edge: {self.frames} frames, {fps:.1f} fps | ms: {ms} | {self.anomalous} anomalous, "
                f"{dropped} dropped, {skipped} skipped")

    def summary(self, dropped: int, skipped: int, **extra) -> Dict[str, object]:
        elapsed = time.perf_counter() - self.start
        n = max(self.frames, 1)
        d: Dict[str, object] = {
            "frames": self.frames,
            "fps": round(self.frames / max(elapsed, 1e-9), 3),
            "elapsed_s": round(elapsed, 3),
            "dropped": dropped,
            "skipped": skipped,
            "anomalous": self.anomalous,
            "stages_ms": {name: round(1e3 * s / n, 3) for name, s in zip(STAGES, self._total)},
        }
        if self._split:
            d["inference_split_ms"] = {k: round(v / n, 3) for k, v in self._split.items()}
        d.update(extra)
        return d


def write_summary(path: Optional[str], summary: dict) -> None:
    if path:
        write_json_atomic(path, summary)
