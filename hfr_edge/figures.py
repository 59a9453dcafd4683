"""Evaluation figures drawn with OpenCV (no matplotlib): ROC curve, case panels, best/worst cases.

Maps are normalised (THRESHOLD, 0.5, is the decision threshold); a case is anomalous when score >= THRESHOLD.
Every PNG is encoded in memory and written atomically.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import metrics
from .base.contract import THRESHOLD
from .base.errors import HfrError
from .base.fsio import write_bytes_atomic
from .base.images import cv2_module, heat_overlay, to_rgb_uint8

FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
PANEL = 256  # height of each case panel, pixels
CAPTION_H = 30  # height of the caption strip above the panels


def _write_png(path, rgb: np.ndarray) -> None:
    cv2 = cv2_module()
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))  # RGB -> BGR
    if not ok:
        raise HfrError(f"cannot encode {path} as PNG")
    write_bytes_atomic(path, buf.tobytes())


def _text(img: np.ndarray, text: str, org, scale: float = 0.45, color=(0, 0, 0), max_w: Optional[int] = None) -> None:
    """Draw `text` with its baseline-left at `org`, shrunk to fit `max_w` pixels if given."""
    cv2 = cv2_module()
    if max_w is not None:
        w = cv2.getTextSize(text, FONT, scale, 1)[0][0]
        if w > max_w:
            scale *= max_w / w
    cv2.putText(img, text, (int(org[0]), int(org[1])), FONT, scale, color, 1, cv2.LINE_AA)


def save_roc_png(path, labels, scores, title: str) -> None:
    """A 480x480 ROC plot: axes with ticks 0..1, chance diagonal, the curve, AUROC in the title."""
    cv2 = cv2_module()
    size, left, right, top, bottom = 480, 62, 18, 40, 52
    img = np.full((size, size, 3), 255, np.uint8)
    w, h = size - left - right, size - top - bottom

    def px(x, y):  # (fpr, tpr) in [0, 1] -> pixel column, row
        return np.stack([left + np.asarray(x) * w, top + (1.0 - np.asarray(y)) * h], -1).round().astype(np.int32)

    for t in np.linspace(0.0, 1.0, 6):  # grid, ticks and tick labels
        (x0, y0), = px([t], [t])
        cv2.line(img, (int(x0), top), (int(x0), top + h), (232, 232, 232), 1)
        cv2.line(img, (left, int(y0)), (left + w, int(y0)), (232, 232, 232), 1)
        cv2.line(img, (int(x0), top + h), (int(x0), top + h + 5), (0, 0, 0), 1)
        cv2.line(img, (left - 5, int(y0)), (left, int(y0)), (0, 0, 0), 1)
        _text(img, f"{t:.1f}", (x0 - 10, top + h + 20))
        _text(img, f"{t:.1f}", (left - 38, y0 + 5))
    for a in np.linspace(0.0, 1.0, 41)[::2]:  # dashed chance diagonal
        p, q = px([a, min(a + 0.0125, 1.0)], [a, min(a + 0.0125, 1.0)])
        cv2.line(img, tuple(int(v) for v in p), tuple(int(v) for v in q), (150, 150, 150), 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + w, top + h), (0, 0, 0), 1)
    _text(img, "false positive rate", (left + w // 2 - 70, size - 12), 0.5)
    ylabel = np.full((22, h, 3), 255, np.uint8)
    _text(ylabel, "true positive rate", (h // 2 - 65, 16), 0.5)
    img[top:top + h, 8:30] = np.rot90(ylabel)

    value = metrics.auroc(labels, scores)
    if value is None:
        _text(img, "needs both good and anomalous images", (left + 20, top + h // 2), 0.5, (0, 0, 200))
    else:
        fpr, tpr, _ = metrics.roc_curve(labels, scores)
        cv2.polylines(img, [px(fpr, tpr).reshape(-1, 1, 2)], False, (31, 119, 180), 2, cv2.LINE_AA)
    auc = "n/a" if value is None else f"{value:.4f}"
    _text(img, f"{title}  (AUROC {auc})", (left, 26), 0.55, max_w=size - left - 8)
    _write_png(path, img)


def _panel(img: np.ndarray) -> np.ndarray:
    """Scale an (H, W, 3) uint8 image to PANEL pixels high, keeping its aspect ratio."""
    cv2 = cv2_module()
    h, w = img.shape[:2]
    new_w = max(1, int(round(w * PANEL / h)))
    interp = cv2.INTER_AREA if h > PANEL else cv2.INTER_NEAREST
    return cv2.resize(img, (new_w, PANEL), interpolation=interp)


def save_case_png(path, rgb: np.ndarray, amap: np.ndarray, mask: Optional[np.ndarray] = None, caption: str = "") -> None:
    """One row: input | ground-truth mask (if any) | heat overlay of the normalised map; caption above."""
    cv2 = cv2_module()
    rgb = to_rgb_uint8(rgb, "case image")
    panels = [_panel(rgb)]
    overlay = heat_overlay(rgb, amap)
    if mask is not None:
        m = np.asarray(mask).squeeze().astype(np.uint8)
        if m.shape != rgb.shape[:2]:
            m = cv2.resize(m, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
        panels.append(_panel(np.repeat(m[:, :, None] * 255, 3, axis=2)))
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(overlay, contours, -1, (255, 255, 255), max(1, rgb.shape[0] // 256))
    panels.append(_panel(overlay))
    gap = np.full((PANEL, 4, 3), 255, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    strip = np.full((CAPTION_H, row.shape[1], 3), 255, np.uint8)
    _text(strip, caption, (6, CAPTION_H - 10), 0.5, max_w=row.shape[1] - 12)
    _write_png(path, np.concatenate([strip, row], axis=0))


def _safe_name(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return s[:80] or "case"


def _margin(item: Dict) -> float:
    """How right the verdict is: > 0 right, < 0 wrong (THRESHOLD on the normalised score)."""
    s = float(item["score"])
    return s - THRESHOLD if int(item["label"]) == 1 else THRESHOLD - s


def save_best_worst(folder, items: Sequence[Dict], k: int = 4) -> List[Path]:
    """Write the k most confidently right cases (best_NN_<name>.png) and the k most wrong, or least
    right, ones (worst_NN_<name>.png, worst first); returns the paths written.

    items: dicts {name, rgb, amap, mask or None, score, label (0 good / 1 anomalous)}. With fewer
    than 2k items they are split between best and worst, never repeated.
    """
    k = max(0, int(k))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    order = sorted(range(len(items)), key=lambda i: _margin(items[i]), reverse=True)
    n_best = min(k, (len(order) + 1) // 2)
    n_worst = min(k, len(order) - n_best)
    chosen = [("best", order[:n_best]), ("worst", order[::-1][:n_worst])]
    paths = []
    for kind, idx in chosen:
        for rank, i in enumerate(idx, 1):
            it = items[i]
            verdict = "ANOMALOUS" if float(it["score"]) >= THRESHOLD else "good"
            truth = "anomalous" if int(it["label"]) == 1 else "good"
            path = folder / f"{kind}_{rank:02d}_{_safe_name(it['name'])}.png"
            caption = f"{it['name']}  score {float(it['score']):.3f}  {verdict} (truth: {truth})"
            save_case_png(path, it["rgb"], it["amap"], it.get("mask"), caption)
            paths.append(path)
    return paths
