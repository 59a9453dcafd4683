"""scikit-learn as the oracle for hfr_edge.metrics: ROC curve, image and pixel AUROC, F1-max and
per-defect AUROC on random inputs, with and without ties, balanced and skewed."""

import numpy as np
import pytest

skm = pytest.importorskip("sklearn.metrics")

from hfr_edge import metrics  # noqa: E402

CASES = [  # (samples, share of anomalous, distinct score values or 0 for continuous)
    (2, 0.5, 0), (7, 0.3, 0), (50, 0.5, 0), (400, 0.1, 0), (400, 0.9, 0),
    (50, 0.5, 3), (300, 0.2, 5), (1000, 0.05, 2), (257, 0.5, 1),
]


def _sample(rng, n, share, levels):
    y = (rng.random(n) < share).astype(np.int64)
    y[0], y[-1] = 0, 1  # both classes present
    if levels:  # few values: long runs of ties, across both classes
        s = rng.integers(0, levels, n).astype(np.float64) / max(levels, 1)
    else:  # anomalous a little higher on average: a curve that is neither trivial nor perfect
        s = rng.standard_normal(n) + 0.8 * y
    return y, s


@pytest.mark.parametrize("n,share,levels", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_roc_curve_equal_sklearn(n, share, levels, seed):
    y, s = _sample(np.random.default_rng(seed), n, share, levels)
    assert metrics.auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert metrics.auroc(y.astype(bool), s.astype(np.float32)) == pytest.approx(
        skm.roc_auc_score(y, s.astype(np.float32)), abs=1e-12)
    fpr, tpr, thr = metrics.roc_curve(y, s)
    ref_fpr, ref_tpr, ref_thr = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, ref_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, ref_tpr, atol=1e-12)
    np.testing.assert_allclose(thr[1:], ref_thr[1:])  # one point per distinct score, descending


@pytest.mark.parametrize("n,share,levels", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_f1_max_equals_sklearn_precision_recall(n, share, levels, seed):
    y, s = _sample(np.random.default_rng(seed), n, share, levels)
    precision, recall, thresholds = skm.precision_recall_curve(y, s)
    p, r = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
    got, t = metrics.f1_max(y, s)
    assert got == pytest.approx(f1.max(), abs=1e-12)
    # its threshold is one that reaches the best F1 (sklearn's own F1 at that threshold agrees)
    assert skm.f1_score(y, s >= t) == pytest.approx(got, abs=1e-12)


@pytest.mark.parametrize("levels", [0, 4])
def test_pixel_auroc_equals_sklearn(levels):
    rng = np.random.default_rng(5)
    masks = np.zeros((6, 24, 32), bool)
    for i in range(1, 6):  # image 0 is good; the others have a rectangle of defect
        y0, x0 = rng.integers(0, 16, 2)
        masks[i, y0:y0 + 6, x0:x0 + 9] = True
    maps = rng.random(masks.shape) + 0.6 * masks
    if levels:
        maps = np.floor(maps * levels) / levels
    pixel_auroc, _ = metrics.pixel_metrics(masks, maps.astype(np.float32))
    assert pixel_auroc == pytest.approx(skm.roc_auc_score(masks.ravel(), maps.astype(np.float32).ravel()), abs=1e-9)


def test_summary_per_defect_equals_sklearn_on_each_subset():
    rng = np.random.default_rng(7)
    defects = np.array(["good"] * 20 + ["crack"] * 8 + ["spot"] * 12, dtype=object)
    labels = (defects != "good").astype(int)
    scores = np.round(rng.random(labels.size) + 0.5 * labels, 1)  # rounded: ties
    out = metrics.summarize(labels, scores, list(defects))
    assert out["image_auroc"] == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    for name in ("crack", "spot"):
        idx = (defects == "good") | (defects == name)
        assert out["per_defect"][name]["image_auroc"] == pytest.approx(
            skm.roc_auc_score(labels[idx], scores[idx]), abs=1e-12)
