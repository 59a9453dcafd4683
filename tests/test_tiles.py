"""Tiling (base/view.py, runtime/tiles.py): tiles of a frame go through the runner as one batch, their
maps are stitched back with the overlaps cross-faded, the frame's score is its largest tile score;
a tile covering the whole frame gives exactly the untiled map; tiled training sets its threshold on
frames."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hfr_edge.base.view import View
from hfr_edge.runtime.detector import Detector
from hfr_edge.runtime.runner import open_runner
from hfr_edge.runtime.tiles import TiledDetector

cv2 = pytest.importorskip("cv2")


def _frame(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)
    img[h // 3:h // 3 + 6, w // 2:w // 2 + 5] = 255  # a small bright defect
    return img


def _toy_map(rgb):
    """What the toy graph computes, per pixel, at the frame's own resolution."""
    return (np.abs(rgb.astype(np.float32) / 255.0 - 0.5) * 2).mean(2)


def test_spans_cover_the_region_with_the_asked_overlap():
    v = View(tiles=(2, 3), overlap=0.25)
    boxes = v.boxes(100, 200)
    assert len(boxes) == 6 and boxes[0][:2] == (0, 0) and boxes[-1][2:] == (200, 100)
    xs = sorted({(b[0], b[2]) for b in boxes})
    assert xs[0][1] - xs[1][0] == pytest.approx(0.25 * (xs[0][1] - xs[0][0]), abs=1)  # neighbours share a quarter
    stitched = v.stitch([np.full((32, 32), 0.7, np.float32)] * 6, 100, 200, (100, 200))
    assert np.allclose(stitched, 0.7, atol=1e-5)  # the cross-fade weights sum to one everywhere


def test_a_tile_covering_the_whole_frame_stitches_the_untiled_map(toy_onnx):
    frame = _frame(48, 80)
    with open_runner(toy_onnx) as runner:
        det = Detector(runner)
        for aspect in ("squash", "letterbox"):
            view = View(aspect=aspect, tiles=(1, 1))
            r = TiledDetector(det, view).predict([frame])[0]
            maps, scores = det.predict([view.inputs(frame, 64)[0]])
            assert r.score == float(scores[0])
            untiled = view.frame_map(maps, 48, 80)
            np.testing.assert_array_equal(view.frame_map(r.maps, 48, 80), untiled)
            assert untiled.shape == (48, 80)


def test_overlapping_tiles_stitch_the_full_resolution_map(toy_onnx):
    """The toy graph's map is per pixel: 2x2 tiles of a 112x112 frame with overlap 0.25 are 64x64 each
    (no resizing), so the stitched map must equal the map of the whole frame at its own resolution,
    blended overlaps included; the frame's score is its largest tile score."""
    frame = _frame(112, 112)
    view = View(tiles=(2, 2), overlap=0.25)
    assert {(b[2] - b[0], b[3] - b[1]) for b in view.boxes(112, 112)} == {(64, 64)}
    with open_runner(toy_onnx) as runner:
        calls = []
        infer = runner.infer
        runner.infer = lambda feed: calls.append(feed["image"].shape[0]) or infer(feed)
        r = TiledDetector(Detector(runner), view).predict([frame])[0]
    assert calls == [4]  # one inference for all four tiles
    np.testing.assert_allclose(view.frame_map(r.maps, 112, 112), _toy_map(frame), atol=1e-6)
    assert r.score == pytest.approx(float(_toy_map(frame).max()), abs=1e-6) and r.score == float(r.tile_scores.max())


def test_run_batches_every_tile_of_every_source(tmp_path, toy_onnx):
    from hfr_edge.base.artifact import load_meta, write_meta
    from hfr_edge.runtime.run import run

    meta = load_meta(toy_onnx)
    view = View(tiles=(2, 2), overlap=0.25)
    write_meta(toy_onnx, type(meta)(meta.kind, meta.precision, meta.image_size, meta.model, meta.norm,
                                    {**meta.extra, "view": view.to_dict()}))
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = [_frame(112, 112, seed=i) for i in range(5)]
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i}.png"), f[:, :, ::-1])
    s = run(str(toy_onnx), source=str(folder), headless=True, jsonl=str(tmp_path / "r.jsonl"),
            save_anomalies=str(tmp_path / "bad"), threshold=0.0, drift="off")
    recs = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert s["view"]["tiles"] == [2, 2] and len(recs) == 5
    want = [float(_toy_map(f).max()) for f in frames]
    np.testing.assert_allclose([r["score"] for r in recs], want, atol=1e-6)
    assert all(0 <= r["tile"] < 4 for r in recs)
    assert cv2.imread(str(tmp_path / "bad" / "000000_overlay.png")).shape == (112, 112, 3)


@pytest.mark.slow
def test_tiled_training_sets_its_threshold_on_frames(syn_data, tmp_path):
    pytest.importorskip("torch")
    import subprocess
    import sys

    import torch

    out = tmp_path / "ckpt.pt"
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "train", str(syn_data), "-o", str(out), "--epochs", "2",
                        "--image-size", "32", "--batch-size", "8", "--decoder-widths", "32,16,8", "--tiles", "2x2"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["view"]["tiles"] == [2, 2] and ckpt["train"]["train_images"] == 4 * ckpt["train"]["train_frames"]
    ref = ckpt["reference"]
    # normalised on FRAME scores (each its largest tile): no held-out frame is over the threshold
    assert ref["frames"] == ckpt["norm"]["n_images"] and max(ref["scores"]) <= 0.5 + 1e-5
    rep = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "eval", str(out), str(syn_data), "--json", str(rep)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(rep.read_text())["map_size"] == [64, 64]  # the region judged at 2 x 32 px
