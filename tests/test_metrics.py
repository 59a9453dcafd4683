"""Metrics against hand-computed cases, brute force and a slow reference AUPRO."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hfr_edge import metrics
from hfr_edge.base.errors import HfrError


def test_auroc_perfect_inverted_ties():
    y = [0, 0, 1, 1]
    assert metrics.auroc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.auroc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.auroc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    # one tied pair out of four counts half: (1 + 0.5 + 1 + 1) / 4
    assert metrics.auroc(y, [0.2, 0.5, 0.5, 0.9]) == pytest.approx(0.875)


def test_roc_curve_four_samples_by_hand():
    # positives 0.35 and 0.8 beat 1 and 2 of the negatives {0.1, 0.4}: AUROC 3/4
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    fpr, tpr, thr = metrics.roc_curve(y, s)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    assert metrics.auroc(y, s) == pytest.approx(0.75)


def test_auroc_one_class_is_none_and_bad_input_raises():
    assert metrics.auroc([0, 0, 0], [0.1, 0.2, 0.3]) is None
    assert metrics.auroc([1, 1], [0.1, 0.2]) is None
    with pytest.raises(HfrError, match="needs both"):
        metrics.roc_curve([1, 1], [0.1, 0.2])
    with pytest.raises(HfrError, match="NaN"):
        metrics.auroc([0, 1], [0.1, float("nan")])
    with pytest.raises(HfrError, match="3 scores for 2 labels"):
        metrics.auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(HfrError, match="0 .good. or 1"):
        metrics.auroc([0, 2], [0.1, 0.2])


def test_f1_max_known_best_threshold():
    y = [0, 0, 1, 1, 1, 0]
    s = [0.1, 0.2, 0.6, 0.7, 0.3, 0.65]
    # at t = 0.3: tp 3, fp 1, fn 0 -> F1 = 6/7 (every other threshold is lower)
    f1, t = metrics.f1_max(y, s)
    assert f1 == pytest.approx(6 / 7)
    assert t == pytest.approx(0.3)
    assert metrics.f1_max([0, 0], [0.1, 0.2]) == (None, None)
    # the tied positives go together: t = 0.5 flags all three (tp 2, fp 1): F1 = 4/5
    assert metrics.f1_max([0, 1, 1], [0.9, 0.5, 0.5]) == (pytest.approx(0.8), 0.5)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=25))
def test_auroc_and_f1_match_brute_force(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], np.float64) / 6.0  # few values: many ties
    pos, neg = s[y == 1], s[y == 0]
    got = metrics.auroc(y, s)
    if pos.size == 0 or neg.size == 0:
        assert got is None
        return
    u = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)  # Mann-Whitney U
    assert got == pytest.approx(u / (pos.size * neg.size), abs=1e-12)
    best = max(2 * np.sum((s >= t) & (y == 1)) / (np.sum(s >= t) + pos.size) for t in np.unique(s))
    f1, t = metrics.f1_max(y, s)
    assert f1 == pytest.approx(best)
    assert 2 * np.sum((s >= t) & (y == 1)) / (np.sum(s >= t) + pos.size) == pytest.approx(f1)


def _one(mask, amap):
    return np.asarray(mask, bool)[None], np.asarray(amap, np.float64)[None]


def test_aupro_perfect_and_constant_maps():
    m = np.zeros((2, 8, 8), bool)
    m[1, 2:5, 3:6] = True
    assert metrics.aupro(m, m.astype(np.float32)) == pytest.approx(1.0)
    # constant map: one threshold, the curve is the diagonal: area 0.3^2/2, divided by 0.3
    assert metrics.aupro(m, np.full(m.shape, 0.7)) == pytest.approx(0.15)
    assert metrics.aupro(m, np.full(m.shape, 0.7), fpr_limit=1.0) == pytest.approx(0.5)
    assert metrics.aupro(np.zeros((2, 8, 8), bool), np.ones((2, 8, 8))) is None


def test_aupro_regions_weighted_equally():
    m = np.zeros((10, 10), bool)
    m[0, 0] = True  # region A: 1 pixel
    m[5:8, 5:8] = True  # region B: 9 pixels
    small = np.full((10, 10), 0.5)
    small[0, 0], small[5:8, 5:8] = 1.0, 0.0  # finds A only
    large = np.full((10, 10), 0.5)
    large[0, 0], large[5:8, 5:8] = 0.0, 1.0  # finds B only
    # both: PRO 0.5 at FPR 0, then FPR jumps to 1 -> area 0.5 * 0.3, normalised 0.5
    assert metrics.aupro(*_one(m, small)) == pytest.approx(0.5)
    assert metrics.aupro(*_one(m, large)) == pytest.approx(0.5)


def test_aupro_regions_are_8_connected():
    m = np.zeros((6, 6), bool)
    m[0, 0] = m[1, 1] = True  # diagonal neighbours: one region of 2 pixels
    m[4, 4] = True  # a second region
    a = np.full((6, 6), 0.5)
    a[0, 0], a[1, 1], a[4, 4] = 1.0, 0.0, 1.0
    # at t = 1: PRO = (1/2 + 1) / 2 = 0.75 with FPR 0 (4-connectivity would give 2/3)
    assert metrics.aupro(*_one(m, a)) == pytest.approx(0.75)


def test_aupro_interpolates_at_fpr_limit():
    m = np.array([[True, False, False, False, False]])
    a = np.array([[0.5, 0.5, 0.5, 0.0, 0.0]])
    # curve (0,0) -> (0.5,1) -> (1,1): at 0.3 PRO is 0.6, area 0.09
    assert metrics.aupro(*_one(m, a), fpr_limit=0.3) == pytest.approx(0.09 / 0.3)
    assert metrics.aupro(*_one(m, a), fpr_limit=0.5) == pytest.approx(0.25 / 0.5)
    assert metrics.aupro(*_one(m, a), fpr_limit=1.0) == pytest.approx(0.75)
    with pytest.raises(HfrError, match="fpr_limit"):
        metrics.aupro(*_one(m, a), fpr_limit=0.0)


def _slow_aupro(masks, maps, limit):
    """Direct per-threshold PRO/FPR with scikit-image labelling, then the same integration."""
    label = pytest.importorskip("skimage.measure").label
    regions = [(i, lab == k) for i, mk in enumerate(masks) for lab in [label(mk, connectivity=2)]
               for k in range(1, lab.max() + 1)]
    ok = ~masks
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        xs.append(np.sum((maps >= t) & ok) / ok.sum())
        ys.append(np.mean([np.mean(maps[i][r] >= t) for i, r in regions]))
    xs, ys = np.array(xs), np.array(ys)
    keep = xs <= limit
    x, y = list(xs[keep]), list(ys[keep])
    if x[-1] < limit:
        j = np.argmax(xs > limit)
        x.append(limit)
        y.append(ys[j - 1] + (ys[j] - ys[j - 1]) * (limit - xs[j - 1]) / (xs[j] - xs[j - 1]))
    return np.trapezoid(y, x) / limit if hasattr(np, "trapezoid") else np.trapz(y, x) / limit


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupro_and_pixel_auroc_match_slow_reference(seed):
    rng = np.random.default_rng(seed)
    masks = rng.random((3, 12, 12)) > 0.85
    maps = np.round(rng.random((3, 12, 12)) + masks * 0.4, 1)  # rounded: ties across classes
    for limit in (0.3, 0.05, 1.0):
        assert metrics.aupro(masks, maps, limit) == pytest.approx(_slow_aupro(masks, maps, limit))
    px_auroc, _ = metrics.pixel_metrics(masks, maps)
    assert px_auroc == pytest.approx(metrics.auroc(masks.ravel(), maps.ravel()))


def test_flagged_counts_what_one_threshold_decides():
    labels, scores = [0, 0, 1, 1, 1], [0.1, 0.5, 0.9, 0.2, 0.5]
    assert metrics.flagged(labels, scores, 0.5) == {  # >= as `run` decides: both 0.5s are flagged
        "threshold": 0.5, "anomalous_flagged": 2, "n_anomalous": 3, "good_flagged": 1, "n_good": 2}
    assert metrics.flagged(labels, scores, 1.0)["anomalous_flagged"] == 0
    assert metrics.flagged([0, 0], [0.7, 0.2], 0.5) == {
        "threshold": 0.5, "anomalous_flagged": 0, "n_anomalous": 0, "good_flagged": 1, "n_good": 2}


def test_summarize_overall_and_per_defect():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.3, 0.9, 0.2, 0.8])
    defects = ["good", "good", "crack", "scratch", "crack"]
    masks = np.zeros((5, 4, 4), bool)
    masks[2:, 1:3, 1:3] = True
    maps = masks * 0.9 + 0.05
    r = metrics.summarize(labels, scores, defects, masks, maps)
    assert set(r) == {"image_auroc", "pixel_auroc", "aupro", "f1_max", "f1_threshold",
                      "n_images", "n_anomalous", "per_defect"}
    assert r["image_auroc"] == pytest.approx(5 / 6)  # 0.2 loses to the good 0.3
    assert r["pixel_auroc"] == pytest.approx(1.0) and r["aupro"] == pytest.approx(1.0)
    assert (r["n_images"], r["n_anomalous"]) == (5, 3)
    assert sorted(r["per_defect"]) == ["crack", "scratch"]
    crack, scratch = r["per_defect"]["crack"], r["per_defect"]["scratch"]
    assert crack["image_auroc"] == 1.0 and crack["n_images"] == 4 and crack["n_anomalous"] == 2
    assert scratch["image_auroc"] == pytest.approx(0.5) and scratch["n_images"] == 3
    assert (crack["f1_max"], crack["f1_threshold"]) == (pytest.approx(1.0), pytest.approx(0.8))

    no_px = metrics.summarize(labels, scores, defects)
    assert no_px["pixel_auroc"] is None and no_px["aupro"] is None
    assert no_px["per_defect"]["crack"]["pixel_auroc"] is None
    only_good = metrics.summarize([0, 0], [0.1, 0.2], ["good", "good"])
    assert only_good["image_auroc"] is None and only_good["f1_max"] is None and only_good["per_defect"] == {}
    with pytest.raises(HfrError, match="defect names"):
        metrics.summarize(labels, scores, defects[:4])
    with pytest.raises(HfrError, match="must be"):
        metrics.summarize(labels, scores, defects, masks, maps[:, :2])
