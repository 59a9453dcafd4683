"""Figures: PNGs that decode to the expected sizes; best/worst picks the right cases."""

import numpy as np
import pytest

from hfr_edge import figures

cv2 = pytest.importorskip("cv2")


def _read(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, f"{path} does not decode"
    return img


def test_roc_png(tmp_path):
    p = tmp_path / "roc.png"
    figures.save_roc_png(p, [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], "bottle image ROC")
    img = _read(p)
    assert img.shape == (480, 480, 3)
    assert (img < 128).any() and (img == 255).any()  # drawn on a white background
    # one class only: still a figure (axes and a note), not an error
    figures.save_roc_png(tmp_path / "one.png", [0, 0], [0.1, 0.2], "good only")
    assert _read(tmp_path / "one.png").shape == (480, 480, 3)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["one.png", "roc.png"]  # no temp files left


def test_case_png_panels(tmp_path):
    rgb = np.zeros((64, 128, 3), np.uint8)
    amap = np.zeros((32, 64), np.float32)
    amap[10:20, 30:40] = 1.2  # beyond 1: clipped for display
    mask = np.zeros((64, 128), bool)
    mask[20:40, 60:80] = True
    figures.save_case_png(tmp_path / "m.png", rgb, amap, mask, "000  score 0.910  ANOMALOUS")
    h = figures.PANEL + figures.CAPTION_H
    assert _read(tmp_path / "m.png").shape == (h, 3 * 2 * figures.PANEL + 2 * 4, 3)  # 2:1 panels
    figures.save_case_png(tmp_path / "n.png", rgb, amap)
    assert _read(tmp_path / "n.png").shape == (h, 2 * 2 * figures.PANEL + 4, 3)


def _item(name, score, label):
    rgb = np.full((16, 16, 3), 100, np.uint8)
    amap = np.full((16, 16), score, np.float32)
    mask = np.ones((16, 16), bool) if label else None
    return {"name": name, "rgb": rgb, "amap": amap, "mask": mask, "score": score, "label": label}


def test_best_worst_selection(tmp_path):
    items = [
        _item("good/000", 0.05, 0),  # right by 0.45
        _item("good/001", 0.45, 0),  # right by 0.05
        _item("good/002", 0.90, 0),  # wrong by 0.40
        _item("crack/000", 0.99, 1),  # right by 0.49
        _item("crack/001", 0.20, 1),  # wrong by 0.30
        _item("crack/002", 0.70, 1),  # right by 0.20
    ]
    paths = figures.save_best_worst(tmp_path / "cases", items, k=2)
    assert [p.name for p in paths] == [
        "best_01_crack_000.png", "best_02_good_000.png",
        "worst_01_good_002.png", "worst_02_crack_001.png",
    ]
    for p in paths:
        assert p.is_file() and _read(p).shape[0] == figures.PANEL + figures.CAPTION_H
    # fewer than 2k items: split between best and worst, none repeated
    names = [p.name for p in figures.save_best_worst(tmp_path / "few", items[:3], k=4)]
    assert names == ["best_01_good_000.png", "best_02_good_001.png", "worst_01_good_002.png"]
    assert figures._safe_name("../a b/c?.png") == "a_b_c_.png"
