"""Several sources on one runner (runtime/multi.py, loop.py): each read in its own thread, the frames
of all of them batched into one inference per tick, per-source JSONL fields, statistics and summary,
and a source that fails never stops the others."""

from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from hfr_edge.base.errors import HfrError
from hfr_edge.runtime.run import run
from hfr_edge.runtime.runner import open_runner
from toy import ctrl_c_once_stalled

cv2 = pytest.importorskip("cv2")


def _video(path: Path, n: int, seed: int, hw=(72, 96)) -> Path:
    rng = np.random.default_rng(seed)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (hw[1], hw[0]))
    for i in range(n):
        img = np.full(hw + (3,), 120 + 10 * seed, np.uint8)
        y, x = rng.integers(0, hw[0] - 16), rng.integers(0, hw[1] - 16)
        img[y:y + 16, x:x + 16] = (40 * i) % 256
        w.write(img)
    w.release()
    return path


def _records(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


class _Counting:
    """The real toy runner, counting the batch size of every inference."""

    def __init__(self, path, provider="auto"):
        self.runner, self.batches = open_runner(path, provider=provider), []

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def infer(self, feed):
        self.batches.append(feed["image"].shape[0])
        return self.runner.infer(feed)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.runner.close()


def test_four_file_sources_batched_equal_four_single_runs(tmp_path, toy_onnx):
    videos = [_video(tmp_path / f"cam{i}.mp4", 9 + 3 * i, seed=i) for i in range(4)]  # 9, 12, 15, 18 frames
    seen = []

    def opener(p, provider):
        seen.append(_Counting(p, provider))
        return seen[-1]

    s = run(str(toy_onnx), source=[str(v) for v in videos], headless=True, jsonl=str(tmp_path / "all.jsonl"),
            summary=str(tmp_path / "s.json"), save=str(tmp_path / "out.mp4"), drift="off", opener=opener, log=io.StringIO())
    together = _records(tmp_path / "all.jsonl")
    assert max(seen[0].batches) > 1  # frames of several sources went through one inference
    assert sum(seen[0].batches) == s["frames"] == 9 + 12 + 15 + 18
    for i, v in enumerate(videos):
        alone = run(str(toy_onnx), source=str(v), headless=True, jsonl=str(tmp_path / f"one{i}.jsonl"), drift="off",
                    log=io.StringIO())
        mine = [r for r in together if r["source_id"] == i]
        single = _records(tmp_path / f"one{i}.jsonl")
        assert [r["frame"] for r in mine] == [r["frame"] for r in single] == list(range(9 + 3 * i))
        assert [r["score"] for r in mine] == [r["score"] for r in single]  # the same verdicts, bit for bit
        assert [r["anomalous"] for r in mine] == [r["anomalous"] for r in single]
        assert {r["source"] for r in mine} == {str(v)} and alone["frames"] == len(single)
        per = s["sources"][i]
        assert per["id"] == i and per["frames"] == len(single) and per["dropped"] == 0 and per["error"] is None
        assert per["fps"] > 0 and per["anomalous"] == sum(r["anomalous"] for r in single)
        assert len(cv2.VideoCapture(str(tmp_path / f"out_{i}.mp4")).read()) == 2  # one overlay video each
    written = json.loads((tmp_path / "s.json").read_text())
    assert written["frames"] == s["frames"] and len(written["sources"]) == 4 and written["stopped_by"] == "end"


def test_frames_limit_counts_per_source(tmp_path, toy_onnx):
    videos = [_video(tmp_path / f"v{i}.mp4", 10, seed=i) for i in range(2)]
    s = run(str(toy_onnx), source=[str(v) for v in videos], headless=True, max_frames=4, drift="off",
            log=io.StringIO())
    assert [p["frames"] for p in s["sources"]] == [4, 4] and s["stopped_by"] == "max-frames"


class _DeadCamera:
    """A camera that opens and never delivers a frame."""

    def isOpened(self):
        return True

    def set(self, prop, value):
        return True

    def get(self, prop):
        return 0.0

    def read(self):
        time.sleep(0.01)
        return False, None

    def release(self):
        pass


def test_a_failing_source_never_stops_the_others(tmp_path, toy_onnx, monkeypatch):
    from hfr_edge.runtime import sources

    monkeypatch.setattr(sources, "DEV_DIR", str(tmp_path))
    (tmp_path / "video0").touch()
    real = sources._cv2_capture
    monkeypatch.setattr(sources, "_cv2_capture", lambda target, api: _DeadCamera() if target == 0 else real(target, api))
    videos = [_video(tmp_path / f"v{i}.mp4", 20, seed=i) for i in range(2)]
    log = io.StringIO()
    with pytest.raises(HfrError, match=r"/video0: read failed .*gave up after 1 reconnect") as exc:
        run(str(toy_onnx), camera="0", source=[str(v) for v in videos], headless=True, max_reconnects=1,
            jsonl=str(tmp_path / "r.jsonl"), summary=str(tmp_path / "s.json"), drift="off", stats_every=0.05, log=log)
    assert exc.value.exit_code == 1
    s = json.loads((tmp_path / "s.json").read_text())
    cam, a, b = s["sources"]
    assert cam["frames"] == 0 and cam["reconnects"] == 1 and "gave up" in cam["error"]
    assert a["frames"] == b["frames"] == 20 and a["error"] is None and b["error"] is None  # the files ran to their end
    assert len(_records(tmp_path / "r.jsonl")) == 40
    assert "FAILED" in log.getvalue()  # the per-source lines say which one


def test_live_and_file_sources_and_ctrl_c(tmp_path, toy_onnx, monkeypatch):
    """A live camera (latest frame, drops counted) beside a file (no frame lost); Ctrl-C stops both."""
    from hfr_edge.runtime import sources

    class Camera(_DeadCamera):
        left = 60

        def read(self):
            if self.left <= 0:  # stalled: read blocks, then fails
                time.sleep(3)
                return False, None
            self.left -= 1
            time.sleep(0.001)
            return True, np.full((48, 64, 3), 100 + self.left, np.uint8)

    monkeypatch.setattr(sources, "DEV_DIR", str(tmp_path))
    (tmp_path / "video0").touch()
    real = sources._cv2_capture
    cam = Camera()
    monkeypatch.setattr(sources, "_cv2_capture", lambda target, api: cam if target == 0 else real(target, api))
    video = _video(tmp_path / "v.mp4", 15, seed=3)

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN where pytest runs in the background
    ctrl_c_once_stalled(cam, settle=1.0)
    s = run(str(toy_onnx), camera="0", source=str(video), headless=True, jsonl=str(tmp_path / "r.jsonl"),
            stall_timeout=30, drift="off", log=io.StringIO())
    assert s["stopped_by"] == "SIGINT"
    live, f = s["sources"]
    assert f["frames"] == 15 and f["dropped"] == 0  # the file: every frame
    assert 1 <= live["frames"] and live["frames"] + live["dropped"] == 60  # the camera: processed or dropped
    assert s["dropped"] == live["dropped"] and s["frames"] == live["frames"] + 15
    recs = [r for r in _records(tmp_path / "r.jsonl") if r["source_id"] == 0]
    assert [r["frame"] for r in recs] == sorted({r["frame"] for r in recs})  # newest first never reorders
    assert live["frames"] == len(recs)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_batched_trained_model_matches_single_runs(tmp_path, tiny_model_onnx):
    """A real graph (convolutions, where a batch may take other kernels than one image): the same
    scores within float rounding."""
    videos = [_video(tmp_path / f"v{i}.mp4", 6, seed=i) for i in range(3)]
    run(str(tiny_model_onnx), source=[str(v) for v in videos], headless=True, jsonl=str(tmp_path / "all.jsonl"),
        drift="off", provider="cpu", log=io.StringIO())
    together = _records(tmp_path / "all.jsonl")
    for i, v in enumerate(videos):
        run(str(tiny_model_onnx), source=str(v), headless=True, jsonl=str(tmp_path / f"{i}.jsonl"), drift="off",
            provider="cpu", log=io.StringIO())
        single = _records(tmp_path / f"{i}.jsonl")
        mine = [r for r in together if r["source_id"] == i]
        np.testing.assert_allclose([r["score"] for r in mine], [r["score"] for r in single], atol=1e-5)
