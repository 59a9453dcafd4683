"""Where the model looks (base/view.py): a region of interest trained, carried through every artifact
and cropped again by the runtime; letterboxing that keeps a part's shape; one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from hfr_edge.base.errors import HfrError
from hfr_edge.base.view import LEGACY, PAD, View, fit_square, parse_roi, parse_tiles, unfit

cv2 = pytest.importorskip("cv2")

ROI = (4, 8, 56, 40)  # x, y, w, h on the 64x64 synthetic images: not square, letterboxed by roi_ckpt


def test_letterbox_keeps_the_shape_and_unfit_undoes_it():
    rgb = np.zeros((40, 80, 3), np.uint8)
    cv2.circle(rgb, (40, 20), 15, (255, 255, 255), -1)
    sq = fit_square(rgb, 64, "letterbox")
    assert sq.shape == (64, 64, 3)
    assert (sq[:16] == PAD).all() and (sq[48:] == PAD).all()  # bars above and below, the part in between
    ys, xs = np.nonzero(sq[:, :, 0] > 200)
    assert abs((ys.max() - ys.min()) - (xs.max() - xs.min())) <= 1  # still a circle
    ys, xs = np.nonzero(fit_square(rgb, 64, "squash")[:, :, 0] > 200)
    assert (ys.max() - ys.min()) > 1.5 * (xs.max() - xs.min())  # squashed: an ellipse
    amap = np.zeros((64, 64), np.float32)
    amap[16:48] = 1.0  # 1 over the picture, 0 over the bars
    back = unfit(amap, (80, 40), (80, 40), "letterbox")
    assert back.shape == (40, 80) and np.allclose(back, 1.0)


def test_the_default_squashes_as_the_suite_measures():
    """A new model squashes a region that is not square (measured best on parts and textures), and
    the view's input is then the one the benchmarks' loader (data.load_items) gives."""
    from hfr_edge.base.images import preprocess

    rgb = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    assert View().aspect == "squash" and View.from_dict(View().to_dict()) == View()
    assert np.array_equal(preprocess(View().inputs(rgb, 64), 64), preprocess([rgb], 64))
    assert not np.array_equal(View(aspect="letterbox").inputs(rgb, 64)[0], View().inputs(rgb, 64)[0])


def test_letterboxing_regions_of_several_aspect_ratios_warns():
    """Bars that fall at different places in different images cost the statistics: training warns
    where a letterboxed view meets regions of more than one aspect ratio, never where squashed or
    where every region has one shape (a camera's ROI)."""
    from hfr_edge.viewdata import mixed_letterbox, squashed_note

    crops = [(45, 60), (60, 45), (60, 60), (45, 60)]  # 4:3, 3:4 and square crops of a texture
    got = mixed_letterbox(View(aspect="letterbox"), crops)
    assert "3 aspect ratios (width / height 0.75, 1.00, 1.33)" in got and "--aspect squash" in got
    assert "3 aspect ratios" in mixed_letterbox(View(aspect="letterbox"), crops + [(131, 97)])  # 0.74: one shape with 0.75
    assert mixed_letterbox(View(), crops) is None  # squash, the default: training says what it squashed
    assert squashed_note(View(), crops) == ("view: 3 of 4 regions are not square: squashed into the square input "
                                            "(--aspect letterbox keeps their shape on grey bars)")
    assert squashed_note(View(), [(64, 64)]) is None and squashed_note(View(aspect="letterbox"), crops) is None
    assert mixed_letterbox(View(aspect="letterbox"), [(45, 60), (90, 120)]) is None  # one aspect ratio
    # one ROI on frames of two sizes: one region shape, however the frames differ
    assert mixed_letterbox(View(roi=(0, 0, 40, 30), aspect="letterbox"), [(480, 640), (60, 80)]) is None


def test_region_outside_the_frame_is_one_line():
    v = View(roi=(600, 0, 200, 100))
    assert v.region(480, 800) == (600, 0, 800, 100)
    with pytest.raises(HfrError, match=r"--roi 600,0,200,100 lies outside the 640x480 frame of cam; .*x \+ w <= 640"):
        v.inputs(np.zeros((480, 640, 3), np.uint8), 64, "cam")
    with pytest.raises(HfrError, match="must be four integers"):
        parse_roi("1,2,3")
    with pytest.raises(HfrError, match="w, h >= 1"):
        View(roi=(0, 0, 0, 5))
    with pytest.raises(HfrError, match="must be RxC"):
        parse_tiles("2by2")
    assert View.from_dict(None) == LEGACY and LEGACY.inputs(np.zeros((30, 50, 3), np.uint8), 32)[0].shape == (32, 32, 3)


def test_frame_map_is_zero_outside_the_region():
    v = View(roi=(10, 20, 40, 20))
    m = v.frame_map([np.ones((32, 32), np.float32)], 60, 80)
    assert m.shape == (60, 80) and np.allclose(m[20:40, 10:50], 1.0)
    m[20:40, 10:50] = 0
    assert not m.any()


# -- the ROI through every artifact ---------------------------------------------------------------
def _hfr(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hfr_edge", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def roi_ckpt(syn_data, tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("roi") / "ckpt.pt"
    r = _hfr("train", syn_data, "-o", out, "--epochs", "2", "--image-size", "64", "--batch-size", "4",
             "--decoder-widths", "32,16,8", "--roi", ",".join(map(str, ROI)), "--aspect", "letterbox")
    assert r.returncode == 0, r.stderr
    return out


def test_roi_round_trip_through_every_artifact(roi_ckpt, syn_data, tmp_path):
    import torch

    from hfr_edge.artifacts import open_artifact
    from hfr_edge.base.artifact import load_meta
    from hfr_edge.export.graph import graph_meta, load_onnx
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.variants import calibrate_model

    want = {"roi": list(ROI), "aspect": "letterbox", "tiles": [1, 1], "overlap": 0.25}
    ckpt = torch.load(roi_ckpt, weights_only=True)
    assert ckpt["view"] == want and ckpt["reference"]["frames"] == ckpt["train"]["holdout_frames"] >= 1
    assert set(ckpt["reference"]["stats"]) == {"brightness", "contrast", "sharpness", "layout", "score"}
    onnx = export_onnx(str(roi_ckpt), str(tmp_path / "model.onnx"))
    assert load_meta(onnx).extra["view"] == want and load_meta(onnx).extra["reference"] == ckpt["reference"]
    assert graph_meta(load_onnx(onnx), "g").extra["view"] == want  # a graph that lost its JSON still knows
    int8 = calibrate_model(onnx, str(syn_data / "train" / "good"), n=6, report=False)
    assert load_meta(int8).extra["view"] == want
    with open_artifact(roi_ckpt, provider="cpu") as runner:
        assert runner.meta.extra["view"] == want
    fp16 = _hfr("export", roi_ckpt, "--precision", "fp16", "-o", tmp_path / "m16.onnx")
    assert fp16.returncode == 0, fp16.stderr
    assert load_meta(tmp_path / "m16.onnx").extra["view"] == want


def test_runtime_crops_what_training_cropped(roi_ckpt, syn_data, tmp_path):
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.runtime.detector import Detector
    from hfr_edge.runtime.run import run
    from hfr_edge.runtime.runner import open_runner
    from hfr_edge.torch_runner import TorchRunner

    onnx = export_onnx(str(roi_ckpt), str(tmp_path / "model.onnx"))
    folder = syn_data / "test" / "scratch"
    s = run(str(onnx), source=str(folder), headless=True, jsonl=str(tmp_path / "r.jsonl"), threshold=0.0,
            save_anomalies=str(tmp_path / "bad"), provider="cpu")
    recs = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert s["view"]["roi"] == list(ROI) and len(recs) == s["frames"] == 2
    x, y, w, h = ROI
    frames = [cv2.imread(r["source"])[:, :, ::-1] for r in recs]
    crops = [fit_square(np.ascontiguousarray(f[y:y + h, x:x + w]), 64, "letterbox") for f in frames]
    with open_runner(onnx, provider="cpu") as runner:
        _, want = Detector(runner).predict(crops)
    np.testing.assert_allclose([r["score"] for r in recs], want, atol=1e-5)
    with TorchRunner(roi_ckpt, provider="cpu") as runner:  # and the checkpoint, which training measured with
        _, ref = Detector(runner).predict(crops)
    np.testing.assert_allclose(want, ref, atol=1e-4)
    saved = cv2.imread(str(tmp_path / "bad" / f"{recs[0]['frame']:06d}_overlay.png"))
    assert saved.shape == frames[0].shape  # overlays are drawn on the whole frame, the ROI outlined
    with pytest.raises(HfrError, match=r"--roi 30,30,40,40 lies outside the 64x64 frame") as exc:
        run(str(onnx), source=str(folder), headless=True, roi="30,30,40,40", provider="cpu")
    assert exc.value.exit_code == 2


def test_eval_and_calibrate_take_roi(roi_ckpt, syn_data, tmp_path):
    r = _hfr("eval", roi_ckpt, syn_data, "--report", tmp_path / "r.json")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["view"]["roi"] == list(ROI) and rep["map_size"] == [46, 64]  # the region's shape, 64 px long
    assert rep["pixel_auroc"] is not None
    r = _hfr("eval", roi_ckpt, syn_data, "--roi", "0,0,80,80")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "lies outside the 64x64 frame" in r.stderr
    assert _hfr("export", roi_ckpt, "-o", tmp_path / "m.onnx").returncode == 0
    r = _hfr("calibrate", tmp_path / "m.onnx", "--images", syn_data / "train" / "good", "-n", "4", "--roi", "0,0,64,99")
    assert r.returncode == 2 and "lies outside the 64x64 frame" in r.stderr
