"""`hfr-edge run` end to end on the toy graph: JSONL, overlay video, summary, anomaly PNGs,
scores equal to Detector.predict, --threshold, and a clean stop on SIGTERM."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hfr_edge.base.errors import HfrError
from hfr_edge.runtime.run import run

cv2 = pytest.importorskip("cv2")

from toy import ctrl_c_once_stalled, decode_video  # noqa: E402
REPO = Path(__file__).resolve().parents[1]
KEYS = {"frame", "time", "source", "score", "anomalous", "latency_ms"}


def _cli(*args, cwd, **kw):
    return subprocess.Popen([sys.executable, "-m", "hfr_edge", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, **kw)


def _frame(i, hw=(80, 96)):
    """Grey with one patch whose contrast grows with i: toy scores from ~0 to ~0.86."""
    img = np.full(hw + (3,), 128, np.uint8)
    img[20:44, 8 + 6 * i:32 + 6 * i] = min(255, 128 + 10 * i)
    return img


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "vid.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (96, 80))
    for i in range(12):
        w.write(_frame(i))
    w.release()
    return path


def _jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_run_video_cli_matches_detector(tmp_path, toy_onnx, video):
    p = _cli("run", toy_onnx, "--source", video, "--headless", "--jsonl", "r.jsonl", "--save", "out.mp4",
             "--summary", "s.json", cwd=tmp_path)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    recs = _jsonl(tmp_path / "r.jsonl")
    assert len(recs) == 12 and all(KEYS <= set(r) for r in recs)
    assert [r["frame"] for r in recs] == list(range(12)) and recs[0]["source"] == str(video)

    frames = decode_video(video)
    from hfr_edge.runtime.detector import Detector
    from hfr_edge.runtime.runner import open_runner

    with open_runner(toy_onnx) as runner:
        _, scores = Detector(runner).predict(frames)
    got = np.array([r["score"] for r in recs])
    np.testing.assert_allclose(got, scores, atol=1e-5)
    assert [r["anomalous"] for r in recs] == [bool(s >= 0.5) for s in scores]
    assert 0 < sum(r["anomalous"] for r in recs) < 12  # the video holds both verdicts

    written = decode_video(tmp_path / "out.mp4")  # the overlay video, read back frame for frame
    assert len(written) == 12 and written[0].shape == (80, 96, 3)

    s = json.loads((tmp_path / "s.json").read_text())
    assert s["frames"] == 12 and s["dropped"] == 0 and s["skipped"] == 0 and s["stopped_by"] == "end"
    assert s["anomalous"] == sum(r["anomalous"] for r in recs) and s["fps"] > 0
    assert {"capture", "preprocess", "inference", "postprocess"} <= set(s["stages_ms"])
    assert s["model"] == str(toy_onnx) and s["backend"] == runner.backend  # auto's choice, the same in both
    assert sorted(os.listdir(tmp_path)) == sorted(["out.mp4", "r.jsonl", "s.json", "toy.onnx", "toy.onnx.json",
                                                    "vid.mp4"])  # no temporary files left


def test_threshold_changes_verdicts_and_saves_anomalies(tmp_path, toy_onnx, video):
    log = io.StringIO()
    low = run(str(toy_onnx), source=str(video), headless=True, threshold=0.0, save_anomalies=str(tmp_path / "a"),
              jsonl=str(tmp_path / "low.jsonl"), log=log)
    assert low["anomalous"] == 12 and all(r["anomalous"] for r in _jsonl(tmp_path / "low.jsonl"))
    pngs = sorted(os.listdir(tmp_path / "a"))
    assert len(pngs) == 24 and pngs[:2] == ["000000_frame.png", "000000_overlay.png"]
    assert cv2.imread(str(tmp_path / "a" / "000003_frame.png")).shape == (80, 96, 3)
    high = run(str(toy_onnx), source=str(video), headless=True, threshold=5.0, jsonl=str(tmp_path / "high.jsonl"),
               log=log)
    assert high["anomalous"] == 0 and not any(r["anomalous"] for r in _jsonl(tmp_path / "high.jsonl"))
    assert "threshold 5" in log.getvalue()


def test_max_frames_and_stats_line(tmp_path, toy_onnx, video):
    log = io.StringIO()
    s = run(str(toy_onnx), source=str(video), headless=True, max_frames=5, stats_every=1e-6,
            summary=str(tmp_path / "s.json"), log=log)
    assert s["frames"] == 5 and s["stopped_by"] == "max-frames"
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 5
    assert "fps | ms: capture" in log.getvalue()


def test_sigterm_leaves_valid_jsonl_video_and_summary(tmp_path, toy_onnx):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(tmp_path / "one.png"), np.random.default_rng(0).integers(0, 256, (192, 256, 3), np.uint8))
    for i in range(5000):  # many frames, one file: the run cannot finish before the signal
        os.symlink(tmp_path / "one.png", folder / f"{i:05d}.png")
    p = _cli("run", toy_onnx, "--source", folder, "--headless", "--jsonl", "r.jsonl", "--save", "out.mp4",
             "--summary", "s.json", cwd=tmp_path)
    jl = tmp_path / "r.jsonl"
    end = time.monotonic() + 60
    while not (jl.is_file() and jl.read_text().count("\n") >= 5):
        assert p.poll() is None, p.communicate()[1]
        assert time.monotonic() < end, "no records after 60 s"
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    recs = _jsonl(jl)  # every line is complete JSON
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["stopped_by"] == "SIGTERM" and 5 <= s["frames"] == len(recs) < 5000
    assert len(decode_video(tmp_path / "out.mp4")) == len(recs)  # the video was finalised


def test_errors_are_one_line_hfr_errors(tmp_path, toy_onnx, video, monkeypatch):
    with pytest.raises(HfrError, match="give a source: --camera"):
        run(str(toy_onnx), headless=True)
    with pytest.raises(HfrError, match="--frames 0"):
        run(str(toy_onnx), source=str(video), max_frames=0)
    with pytest.raises(HfrError, match="missing.onnx: file not found"):
        run(str(tmp_path / "missing.onnx"), source=str(video), headless=True)
    with pytest.raises(HfrError, match="--json .*nodir"):
        run(str(toy_onnx), source=str(video), headless=True, summary=str(tmp_path / "nodir" / "s.json"))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        with pytest.raises(HfrError, match="add --headless"):
            run(str(toy_onnx), source=str(video))
    p = _cli("run", toy_onnx, cwd=tmp_path)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and err.strip().startswith("hfr-edge: error: give a source")


def test_runtime_never_imports_torch(tmp_path, toy_onnx, video):
    code = (f"import sys; from hfr_edge.runtime.run import run; "
            f"run({str(toy_onnx)!r}, source={str(video)!r}, headless=True, max_frames=2, save={str(tmp_path / 'o.mp4')!r}); "
            f"bad = [m for m in ('torch', 'onnx') if m in sys.modules]; assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr


class _FakeCamera:
    """A V4L2 camera stand-in: `frames` frames (toy scores rising), then nothing (a stall)."""

    def __init__(self, frames):
        self.left = frames

    def isOpened(self):
        return True

    def set(self, prop, value):
        return True

    def read(self):
        if self.left <= 0:  # stalled: read blocks (3 s, then fails)
            time.sleep(3)
            return False, None
        self.left -= 1
        time.sleep(0.002)
        return True, _frame(self.left % 12)

    def release(self):
        pass


def test_live_camera_and_ctrl_c_while_stalled(tmp_path, toy_onnx, monkeypatch):
    from hfr_edge.runtime import sources

    monkeypatch.setattr(sources, "DEV_DIR", str(tmp_path))
    (tmp_path / "video0").touch()
    cam = _FakeCamera(40)
    monkeypatch.setattr(sources, "_cv2_capture", lambda target, api: cam)

    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN where pytest runs in the background
    ctrl_c_once_stalled(cam, settle=0.5)
    s = run(str(toy_onnx), camera="0", headless=True, jsonl=str(tmp_path / "r.jsonl"), stall_timeout=30,
            log=io.StringIO())
    recs = _jsonl(tmp_path / "r.jsonl")
    assert s["stopped_by"] == "SIGINT" and 1 <= s["frames"] == len(recs) <= 40
    assert s["frames"] + s["dropped"] == 40  # every captured frame was either processed or dropped
    assert [r["frame"] for r in recs] == sorted({r["frame"] for r in recs})  # newest first never reorders
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
