"""`hfr-edge run` on a camera that fails and comes back: the run goes on with the new connection's
frames, and the summary counts the reconnects. The camera is a stand-in for cv2.VideoCapture
(its methods only) behind the runtime's own capture factory, as in test_run.py."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from hfr_edge.runtime import sources  # noqa: E402
from hfr_edge.runtime.run import run  # noqa: E402


def _grey():
    return np.full((80, 96, 3), 128, np.uint8)  # toy score ~0: good


def _patch():
    img = _grey()
    img[20:60, 30:70] = 255  # toy score ~1: anomalous
    return img


class _Camera:
    """read() gives `frames` copies of `image` (None: forever, until released), then fails."""

    def __init__(self, image=None, frames=None, opened=True):
        self.image, self.left, self.opened = image, frames, opened
        self.released = threading.Event()

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        return True

    def get(self, prop):
        return 0.0  # the rate is unknown, as for many V4L2 devices

    def read(self):
        if self.released.is_set() or self.left == 0:
            return False, None
        if self.left is not None:
            self.left -= 1
        time.sleep(0.01)
        return True, self.image.copy()

    def release(self):
        self.released.set()


def test_camera_that_fails_and_comes_back(tmp_path, toy_onnx, monkeypatch, caplog):
    monkeypatch.setattr(sources, "DEV_DIR", str(tmp_path))
    (tmp_path / "video0").touch()
    first = _Camera(_grey(), frames=3)  # three frames, then a device error
    not_yet = _Camera(opened=False)  # the first reopen finds no camera
    back = _Camera(_patch())  # then it is back, showing something else
    opened = iter([first, not_yet, back])
    monkeypatch.setattr(sources, "_cv2_capture", lambda target, api: next(opened))

    # a camera that never comes back would wait forever: stop the run as Ctrl-C would, and fail below
    watchdog = threading.Timer(30, os.kill, (os.getpid(), signal.SIGINT))
    watchdog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="hfr_edge"):
            s = run(str(toy_onnx), camera="0", headless=True, max_frames=8, jsonl=str(tmp_path / "r.jsonl"),
                    summary=str(tmp_path / "s.json"), log=io.StringIO())
    finally:
        watchdog.cancel()

    assert s["reconnects"] == 2 and s["stopped_by"] == "max-frames" and s["frames"] == 8
    assert json.loads((tmp_path / "s.json").read_text())["reconnects"] == 2  # the file says the same
    recs = [json.loads(line) for line in Path(tmp_path / "r.jsonl").read_text().splitlines()]
    idx = [r["frame"] for r in recs]
    assert len(recs) == 8 and idx == sorted(set(idx))  # one numbering across both connections
    before = [r for r in recs if r["frame"] < 3]
    after = [r for r in recs if r["frame"] >= 3]
    assert 1 <= len(before) <= 3 and len(after) >= 5  # the run went on after the failure
    assert not any(r["anomalous"] for r in before) and all(r["anomalous"] for r in after)
    assert "read failed" in caplog.text and "could not be reopened" in caplog.text
    assert "reconnecting in 0.5 s (attempt 1)" in caplog.text and "reconnecting in 1 s (attempt 2)" in caplog.text
    for cam in (first, not_yet, back):  # every capture was released, the last one when the run ended
        assert cam.released.wait(5)
