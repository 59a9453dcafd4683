"""Evaluation metrics: ROC / AUROC, F1-max and AUPRO, exact over all distinct thresholds, and the
rank statistics that compare two artifacts (Spearman's rho).

numpy only (OpenCV, lazily, for the connected components of AUPRO); no torch. Every curve is
built from one descending sort and cumulative sums, so millions of pixels take about a second.
A sample is predicted anomalous when its score >= the threshold; tied scores move together.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .base.errors import HfrError
from .base.images import cv2_module


def _as_pair(labels, scores, what: str = "scores") -> Tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).ravel()
    s = np.asarray(scores).ravel()
    if y.shape != s.shape:
        raise HfrError(f"{what}: {s.size} scores for {y.size} labels; give one score per label")
    if s.dtype.kind not in "fiub":
        raise HfrError(f"{what}: dtype {s.dtype} is not numeric")
    if s.dtype.kind == "f" and np.isnan(s).any():
        raise HfrError(f"{what}: contains NaN; check the model output")
    if y.dtype != np.bool_:
        if y.size and not np.isin(y, (0, 1)).all():
            raise HfrError(f"{what}: labels must be 0 (good) or 1 (anomalous)")
        y = y.astype(np.bool_)
    return y, s


def _counts(y: np.ndarray, s: np.ndarray, weights: Optional[np.ndarray] = None):
    """One descending sort -> per distinct score (tie runs merged): cumulative positives, negatives,
    the score itself, and (with `weights`) the cumulative weight of the positives (for AUPRO)."""
    order = np.argsort(s)[::-1]
    s_sorted = s[order]
    last = np.r_[np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s_sorted.size - 1]  # end of each tie run
    y_sorted = y[order]
    pos = np.cumsum(y_sorted)[last]
    wpos = None if weights is None else np.cumsum(np.where(y_sorted, weights[order], 0.0))[last]
    return pos, (last + 1) - pos, s_sorted[last], wpos


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def roc_curve(labels, scores) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), starting at (0, 0, +inf), one point per distinct score (descending)."""
    y, s = _as_pair(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise HfrError("ROC curve needs both good and anomalous samples")
    tp, fp, thr, _ = _counts(y, s)
    fpr = np.r_[0.0, fp / n_neg]
    tpr = np.r_[0.0, tp / n_pos]
    return fpr, tpr, np.r_[np.inf, thr.astype(np.float64)]


def auroc(labels, scores) -> Optional[float]:
    """Area under the ROC curve (ties count half); None when only one class is present."""
    y, _ = _as_pair(labels, scores)
    if y.all() or not y.any():
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    return _trapezoid(fpr, tpr)


def f1_max(labels, scores) -> Tuple[Optional[float], Optional[float]]:
    """(best F1, its threshold) over all distinct thresholds; (None, None) without anomalous samples."""
    y, s = _as_pair(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        return None, None
    tp, fp, thr, _ = _counts(y, s)
    f1 = 2.0 * tp / (tp + fp + n_pos)  # 2PR/(P+R) with P = tp/(tp+fp), R = tp/n_pos
    i = int(np.argmax(f1))
    return float(f1[i]), float(thr[i])


def flagged(labels, scores, threshold: float) -> Dict:
    """What one threshold does on a test set (score >= threshold: anomalous, as `run` decides): the
    anomalous and the good images it flags, out of how many."""
    y, s = _as_pair(labels, scores)
    hit = s >= threshold
    return {"threshold": float(threshold), "anomalous_flagged": int((hit & y).sum()), "n_anomalous": int(y.sum()),
            "good_flagged": int((hit & ~y).sum()), "n_good": int((~y).sum())}


def ranks(a) -> np.ndarray:
    """Ranks 0..n-1 of a 1-D array, ties sharing their average rank."""
    a = np.asarray(a)
    order = np.argsort(a, kind="mergesort")
    r = np.empty(len(a), np.float64)
    r[order] = np.arange(len(a))
    _, inv = np.unique(a, return_inverse=True)
    return (np.bincount(inv, weights=r) / np.bincount(inv))[inv]


def spearman(a, b) -> Optional[float]:
    """Spearman's rank correlation of two equally long sequences; None for fewer than 2 values or a constant one."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2:
        return None
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _region_weights(masks: np.ndarray) -> Tuple[np.ndarray, int]:
    """Per pixel: 1/area of its ground-truth region (8-connected), 0 outside; and the region count."""
    cv2 = cv2_module()
    weights = np.zeros(masks.shape, np.float64)
    n_regions = 0
    for i, m in enumerate(masks):
        if not m.any():
            continue
        n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        area = np.bincount(lab.ravel(), minlength=n).astype(np.float64)
        inv = np.r_[0.0, 1.0 / area[1:]]
        weights[i] = inv[lab]
        n_regions += n - 1
    return weights, n_regions


def aupro(masks, maps, fpr_limit: float = 0.3) -> Optional[float]:
    """Area under the per-region-overlap curve up to `fpr_limit`, divided by it (perfect = 1.0).

    As in MVTec AD's `compute_pro`: PRO(t) is the mean over all ground-truth regions of the share
    of the region's pixels scoring >= t; FPR(t) is over all pixels outside the masks. None when
    there is no anomalous region (or no normal pixel).
    """
    return pixel_metrics(masks, maps, fpr_limit)[1]


def pixel_metrics(masks, maps, fpr_limit: float = 0.3) -> Tuple[Optional[float], Optional[float]]:
    """(pixel AUROC, AUPRO) from one sort of all pixels; masks bool (N, H, W), maps (N, H, W)."""
    if not 0.0 < fpr_limit <= 1.0:
        raise HfrError(f"aupro: fpr_limit {fpr_limit} must be in (0, 1]")
    m = np.asarray(masks)
    a = np.asarray(maps)
    if m.ndim == 2:
        m, a = m[None], a[None]
    if m.ndim != 3 or m.shape != a.shape:
        raise HfrError(f"masks {m.shape} and anomaly maps {a.shape} must both be (N, H, W)")
    y, s = _as_pair(m.astype(np.bool_), a, "anomaly maps")
    n_pos = int(y.sum())
    n_ok = y.size - n_pos
    if n_pos == 0 or n_ok == 0:
        return None, None
    weights, n_regions = _region_weights(y.reshape(m.shape))
    tp, fp, _, wpos = _counts(y, s, weights.ravel())
    fpr = np.r_[0.0, np.minimum(fp / n_ok, 1.0)]
    pixel_auroc = _trapezoid(fpr, np.r_[0.0, tp / n_pos])
    pro = np.r_[0.0, np.minimum(wpos / n_regions, 1.0)]
    k = int(np.searchsorted(fpr, fpr_limit, side="right"))  # fpr[:k] <= fpr_limit < fpr[k:]
    area = _trapezoid(fpr[:k], pro[:k])
    if k < fpr.size and fpr[k - 1] < fpr_limit:  # close the area with the curve's value at fpr_limit
        y_lim = pro[k - 1] + (pro[k] - pro[k - 1]) * (fpr_limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
        area += (fpr_limit - fpr[k - 1]) * (pro[k - 1] + y_lim) / 2.0
    return pixel_auroc, float(area / fpr_limit)


def _summary(labels: np.ndarray, scores: np.ndarray, masks, maps) -> Dict:
    f1, thr = f1_max(labels, scores)
    pixel_auroc, pro = (None, None) if masks is None else pixel_metrics(masks, maps)
    return {
        "image_auroc": auroc(labels, scores),
        "pixel_auroc": pixel_auroc,
        "aupro": pro,
        "f1_max": f1,
        "f1_threshold": thr,
        "n_images": int(labels.size),
        "n_anomalous": int(labels.sum()),
    }


def summarize(labels, scores, defects: Sequence[str], masks=None, maps=None) -> Dict:
    """Image and pixel metrics for a test set, overall and per defect type (good images + that defect).

    labels: (N,) 0 good / 1 anomalous; scores: (N,); defects: N names ("good" for normal images);
    masks: bool (N, H, W) or None; maps: float (N, H, W) or None. Undefined metrics are None.
    """
    y = np.asarray(labels).ravel().astype(np.int64)
    s = np.asarray(scores, np.float64).ravel()
    d = np.asarray(list(defects), dtype=object)
    if not (y.size == s.size == d.size):
        raise HfrError(f"summarize: {y.size} labels, {s.size} scores and {d.size} defect names; give one each per image")
    if masks is not None:
        masks = np.asarray(masks).astype(np.bool_)
        maps = np.asarray(maps)
        if masks.ndim != 3 or masks.shape != maps.shape or masks.shape[0] != y.size:
            raise HfrError(f"summarize: masks {masks.shape} and maps {maps.shape} must be ({y.size}, H, W)")
    out = _summary(y, s, masks, maps)
    good = y == 0
    per: Dict[str, Dict] = {}
    names: List[str] = sorted({str(n) for n in d[~good]} - {"good"})
    for name in names:
        idx = np.flatnonzero(good | (d == name))
        per[name] = _summary(y[idx], s[idx], None if masks is None else masks[idx], None if masks is None else maps[idx])
    out["per_defect"] = per
    return out
