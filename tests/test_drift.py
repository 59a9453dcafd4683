"""The drift watch (base/scene.py, runtime/drift.py) through `run`: videos whose light dims, whose
camera moves and whose focus goes each raise their drift event within the window; a normal video of
5,000 frames raises none; --drift stop ends the run; an artifact without a reference runs unwatched."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from hfr_edge.base.artifact import load_meta, write_meta
from hfr_edge.base.errors import HfrError
from hfr_edge.base.scene import reference
from hfr_edge.base.view import LEGACY
from hfr_edge.runtime.drift import DriftWatch, normal_ranges
from hfr_edge.runtime.run import run

cv2 = pytest.importorskip("cv2")
from toy import decode_video  # noqa: E402

H, W = 96, 128
WINDOW = 100


def _scene() -> np.ndarray:
    """A part on a lit background: a bright plate with slots, fine texture, a light gradient."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = 60 + 40 * xx / W + 20 * yy / H
    tex = cv2.GaussianBlur(np.random.default_rng(7).normal(0, 1, (H, W)).astype(np.float32), (0, 0), 1.2) * 25
    part = np.zeros((H, W), np.float32)
    cv2.rectangle(part, (40, 25), (95, 70), 1, -1)
    img = img + 110 * cv2.GaussianBlur(part, (0, 0), 1.0) + tex
    for x in range(44, 92, 8):
        cv2.line(img, (x, 30), (x, 65), 40, 1)
    return img


BASE = _scene()


def _frame(rng, bright=1.0, shift=0, blur=0.0) -> np.ndarray:
    """One camera frame: +-1 px jitter, 1% flicker and sensor noise on top of what is asked."""
    dx, dy = rng.integers(-1, 2, 2)
    img = cv2.warpAffine(BASE, np.float32([[1, 0, dx + shift], [0, 1, dy]]), (W, H), borderMode=cv2.BORDER_REFLECT)
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img = img * bright * (1 + rng.normal(0, 0.01)) + rng.normal(0, 2, (H, W))
    return np.repeat(np.clip(img, 0, 255).astype(np.uint8)[:, :, None], 3, 2)


def _video(path: Path, frames) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (W, H))
    for f in frames:
        w.write(f)
    w.release()
    return path


@pytest.fixture
def watched_toy(tmp_path, toy_onnx):
    """The toy graph with a reference of normal frames, made as training makes it: camera frames
    (through the codec) of the normal scene, their scene statistics and the model's scores."""
    from hfr_edge.runtime.detector import Detector
    from hfr_edge.runtime.runner import open_runner

    rng = np.random.default_rng(1)
    frames = [f[:, :, ::-1] for f in decode_video(_video(tmp_path / "ref.mp4", [_frame(rng) for _ in range(30)]))]
    with open_runner(toy_onnx) as runner:
        _, scores = Detector(runner).predict(frames)
    meta = load_meta(toy_onnx)
    write_meta(toy_onnx, type(meta)(meta.kind, meta.precision, meta.image_size, meta.model, meta.norm,
                                    {**meta.extra, "reference": reference(frames, scores, 64)}))
    return toy_onnx


def _events(jsonl: Path):
    return [r for r in map(json.loads, jsonl.read_text().splitlines()) if r.get("event") == "drift"]


def _first_crossing(video: Path, model: Path, stat: str) -> int:
    """The first frame whose OWN value of `stat` lies outside the normal range (the window lags it)."""
    from hfr_edge.base.scene import STATS

    ref = load_meta(model).extra["reference"]
    lo, hi = normal_ranges(ref)[stat]
    watch = DriftWatch(ref, LEGACY, WINDOW)
    i = STATS.index(stat)
    for k, rgb in enumerate(decode_video(video)):
        v = watch.measure(np.ascontiguousarray(rgb[:, :, ::-1]), 0.0)[i]
        if not lo <= v <= hi:
            return k
    raise AssertionError(f"{stat} never leaves its range in {video}")


@pytest.mark.parametrize("case, stat", [("brightness ramp", "brightness"), ("camera shift", "layout"),
                                        ("blur ramp", "sharpness")])
def test_a_drifting_video_raises_its_event_within_the_window(tmp_path, watched_toy, case, stat):
    rng = np.random.default_rng(2)
    if case == "brightness ramp":  # a lamp dimming to half over 400 frames
        frames = [_frame(rng, bright=1.0 - 0.5 * min(max(i - 100, 0), 400) / 400) for i in range(600)]
    elif case == "camera shift":  # bumped at frame 150
        frames = [_frame(rng, shift=30 if i >= 150 else 0) for i in range(400)]
    else:  # focus drifting away over 400 frames
        frames = [_frame(rng, blur=3.0 * min(max(i - 100, 0), 400) / 400) for i in range(600)]
    video = _video(tmp_path / "drift.mp4", frames)
    log = io.StringIO()
    s = run(str(watched_toy), source=str(video), headless=True, jsonl=str(tmp_path / "r.jsonl"),
            drift_window=WINDOW, log=log)
    events = _events(tmp_path / "r.jsonl")
    mine = [e for e in events if e["stat"] == stat]
    assert mine, f"no {stat} event among {[(e['stat'], e['frame']) for e in events]}"
    cross = _first_crossing(video, watched_toy, stat)
    assert cross <= mine[0]["frame"] <= cross + WINDOW, (cross, mine[0]["frame"])
    assert len(mine) == 1  # raised once, not every frame while it stays out
    assert s["drift_events"] == len(events) == s["sources"][0]["drift_events"]
    assert "DRIFT [0]" in log.getvalue() and stat in log.getvalue()  # the banner
    assert mine[0]["window"] == WINDOW and mine[0]["source_id"] == 0 and mine[0]["message"]


def test_a_normal_video_raises_none_over_5000_frames(tmp_path, watched_toy):
    rng = np.random.default_rng(3)
    video = _video(tmp_path / "normal.mp4", (_frame(rng) for _ in range(5000)))
    s = run(str(watched_toy), source=str(video), headless=True, jsonl=str(tmp_path / "r.jsonl"),
            drift_window=WINDOW, log=io.StringIO())
    assert s["frames"] == 5000 and s["drift_events"] == 0 and not _events(tmp_path / "r.jsonl")


def test_drift_stop_ends_the_run(tmp_path, watched_toy):
    rng = np.random.default_rng(4)
    video = _video(tmp_path / "moved.mp4", [_frame(rng, shift=30) for _ in range(300)])
    with pytest.raises(HfrError, match="stopped by the drift watch") as exc:
        run(str(watched_toy), source=str(video), headless=True, drift="stop", drift_window=WINDOW,
            summary=str(tmp_path / "s.json"), log=io.StringIO())
    s = json.loads((tmp_path / "s.json").read_text())
    assert exc.value.exit_code == 1 and s["stopped_by"] == "drift" and WINDOW <= s["frames"] < 300


def test_without_a_reference_the_run_goes_unwatched(tmp_path, toy_onnx):
    rng = np.random.default_rng(5)
    video = _video(tmp_path / "v.mp4", [_frame(rng) for _ in range(5)])
    log = io.StringIO()
    s = run(str(toy_onnx), source=str(video), headless=True, log=log)
    assert s["drift_events"] == 0 and "carries no reference of normal frames" in log.getvalue()
    with pytest.raises(HfrError, match="--drift 'maybe' must be one of: off, warn, stop"):
        run(str(toy_onnx), source=str(video), headless=True, drift="maybe")


def test_a_large_region_is_sampled_not_every_frame():
    from types import SimpleNamespace

    rng = np.random.default_rng(6)
    ref = reference([_frame(rng) for _ in range(5)], [0.2] * 5, 64)
    watch = DriftWatch(ref, LEGACY, window=10)
    big = SimpleNamespace(rgb=np.zeros((1000, 1000, 3), np.uint8), index=0, name="cam")
    for _ in range(3):
        assert watch.update(big, SimpleNamespace(score=0.1)) == []
    assert watch.every == 2 and watch.samples == 2 and len(watch._ring) == 5  # 10 frames = 5 samples
