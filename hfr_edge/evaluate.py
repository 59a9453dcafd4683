"""`hfr-edge eval ARTIFACT DATA`: image AUROC, pixel AUROC, AUPRO, F1-max (and per defect) of any
artifact, through the runtime's Detector (a checkpoint in PyTorch behind the same runner
interface), so what is measured is what deploys. Shared with `compare` (fp32 vs int8) and `demo`."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import numpy as np

from .base import console
from .base.contract import THRESHOLD
from .base.errors import HfrError
from .base.view import View

CHUNK = 64  # images per evaluation step: bounds memory on large test sets


@dataclass
class Scores:
    labels: np.ndarray  # (N,) 0 good, 1 anomalous
    defects: List[str]
    keys: List[str]
    scores: np.ndarray  # (N,) normalised
    maps: Optional[np.ndarray]  # (N, S, S) normalised, when kept
    masks: Optional[np.ndarray]  # (N, S, S) bool, when the dataset has masks
    skipped: List[Tuple[str, str]]
    seconds: float


@contextlib.contextmanager
def open_scorer(artifact: str, provider: str = "auto") -> Iterator[Tuple[Callable, int, str, str]]:
    """(predict(x float32 (N,3,S,S)) -> (maps (N,S,S), scores (N,)), image size, backend, precision)
    of any artifact: a checkpoint in PyTorch, a graph or an engine through the runtime."""
    from .artifacts import open_artifact
    from .runtime.detector import Detector

    with open_artifact(artifact, provider=provider) as runner:
        det = Detector(runner)
        yield det.predict_batch, det.size, runner.backend, runner.meta.precision


@contextlib.contextmanager
def open_view_scorer(artifact: str, provider: str = "auto", roi: Optional[str] = None, tiles: Optional[str] = None):
    """open_scorer, plus the artifact's view (its ROI and tiles replaced by `roi`, `tiles` where given)."""
    from .artifacts import open_artifact
    from .base.view import view_for
    from .runtime.detector import Detector

    with open_artifact(artifact, provider=provider) as runner:
        det = Detector(runner)
        view = view_for(runner.meta.extra.get("view"), roi, str(artifact), tiles)
        yield det.predict_batch, det.size, runner.backend, runner.meta.precision, view


def score_items(predict, items, size: int, with_masks: bool, keep_maps: bool = True, warn=None) -> Scores:
    from .data import load_items

    t0 = time.time()
    labels, defects, keys, scores, maps, masks, skipped = [], [], [], [], [], [], []
    for i in range(0, len(items), CHUNK):
        x, mk, kept, sk = load_items(items[i:i + CHUNK], size, with_masks=with_masks, warn=warn or console.warn)
        skipped += sk
        if not kept:
            continue
        m, s = predict(x)
        labels += [it.label for it in kept]
        defects += [it.defect for it in kept]
        keys += [it.key for it in kept]
        scores.append(np.asarray(s, np.float32))
        if keep_maps:
            maps.append(np.asarray(m, np.float32))
        if mk is not None:
            masks.append(mk)
    if not scores:
        raise HfrError("no readable test image; check the dataset's test folder")
    return Scores(np.asarray(labels, np.int64), defects, keys, np.concatenate(scores),
                  np.concatenate(maps) if maps else None, np.concatenate(masks) if masks else None,
                  skipped, time.time() - t0)


def score_view_items(predict, items, view: View, size: int, with_masks: bool, keep_maps: bool = True,
                     out_hw: Optional[Tuple[int, int]] = None, warn=None):
    """score_items through a view: scores per image (the largest tile score) and region
    maps stitched at out_hw (default: region_hw of the first image), masks cropped alike."""
    from .viewdata import frame_scores, load_view_items, region_hw, split_frames

    warn = warn or console.warn
    t0 = time.time()
    labels, defects, keys, scores, maps, masks, skipped = [], [], [], [], [], [], []
    for i in range(0, len(items), CHUNK):
        b = load_view_items(items[i:i + CHUNK], view, size, with_masks=with_masks, out_hw=out_hw, warn=warn)
        skipped += b.skipped
        if not b.kept:
            continue
        if out_hw is None:
            out_hw = region_hw(view, *b.shapes[0], size)
        m, s = predict(b.x)
        labels += [it.label for it in b.kept]
        defects += [it.defect for it in b.kept]
        keys += [it.key for it in b.kept]
        scores.append(frame_scores(s, b.counts))
        if keep_maps:
            maps += [view.stitch(tm, h, w, out_hw) for tm, (h, w) in zip(split_frames(np.asarray(m), b.counts), b.shapes)]
        if b.masks is not None:
            masks.append(b.masks)
    if not scores:
        raise HfrError("no readable test image; check the dataset's test folder")
    return Scores(np.asarray(labels, np.int64), defects, keys, np.concatenate(scores),
                  np.stack(maps).astype(np.float32) if maps else None, np.concatenate(masks) if masks else None,
                  skipped, time.time() - t0)


def evaluate(artifact: str, data: str, fmt: str = "auto", normal_class: Optional[str] = None,
             test: Optional[str] = None, provider: str = "auto", figures: Optional[str] = None,
             roi: Optional[str] = None, map_hw: Optional[Tuple[int, int]] = None, tiles: Optional[str] = None) -> dict:
    """`roi`, `tiles`: crop and tile the test images so instead of as the artifact says; `map_hw`: judge
    pixel metrics at this (rows, cols) resolution of the region (default: viewdata.region_hw)."""
    from .data import open_dataset
    from .metrics import flagged, summarize

    ds = open_dataset(data, fmt, normal_class=normal_class, test_dir=test)
    if not ds.test:
        raise HfrError(f"{data}: has no test images to evaluate on; give --test DIR with good/ and defect subfolders")
    with open_view_scorer(artifact, provider, roi, tiles) as (predict, size, backend, precision, view):
        r = score_view_items(predict, ds.test, view, size, with_masks=ds.has_masks,
                             keep_maps=ds.has_masks or bool(figures), out_hw=map_hw)
    report = summarize(r.labels, r.scores, r.defects, masks=r.masks, maps=r.maps if ds.has_masks else None)
    report.update(artifact=str(artifact), data=str(data), format=ds.format, normal_class=ds.normal_class,
                  backend=backend, precision=precision, image_size=size, seconds=round(r.seconds, 2),
                  ms_per_image=round(1000 * r.seconds / max(len(r.scores), 1), 2),
                  skipped=[k for k, _ in r.skipped], view=view.to_dict())
    # the operating point: the artifact's own threshold (`run`'s default), and the F1-max one as `run
    # --threshold` would take it (3 decimals, rounded down so that it flags at least the same images)
    report["at_threshold"] = flagged(r.labels, r.scores, THRESHOLD)
    if report.get("f1_threshold") is not None:
        report["at_f1_threshold"] = flagged(r.labels, r.scores, math.floor(report["f1_threshold"] * 1000) / 1000)
    if r.maps is not None:
        report["map_size"] = list(r.maps.shape[1:])
    if figures:
        _figures(Path(figures), ds, r, view)
        report["figures"] = str(figures)
    return report


def _figures(folder: Path, ds, r: Scores, view) -> None:
    from .figures import save_best_worst, save_roc_png
    from .viewdata import region_rgb

    folder.mkdir(parents=True, exist_ok=True)
    save_roc_png(folder / "roc.png", r.labels, r.scores, "image ROC")
    by_key = {it.key: it for it in ds.test}
    order = np.argsort(r.scores)
    pick = sorted(set(order[:8].tolist() + order[-8:].tolist() + _mistakes(r, 8)))
    items = []
    for i in pick:
        items.append({"name": Path(r.keys[i]).stem if "/" in r.keys[i] else r.keys[i].replace(":", "_"),
                      "rgb": region_rgb(view, by_key[r.keys[i]].load(), r.maps.shape[1:]), "amap": r.maps[i],
                      "mask": None if r.masks is None else r.masks[i], "score": float(r.scores[i]),
                      "label": int(r.labels[i])})
    save_best_worst(folder, items, k=4)


def _mistakes(r: Scores, k: int) -> List[int]:
    wrong = np.where((r.scores >= THRESHOLD) != (r.labels == 1))[0]
    margin = np.abs(r.scores[wrong] - THRESHOLD)
    return wrong[np.argsort(-margin)][:k].tolist()


def _fmt(v) -> str:
    return "   -  " if v is None else f"{v:.4f}"


def _share(k: int, n: int) -> str:
    return f"{k} of {n} ({100 * k / n:.0f} %)" if n else "0 of 0"


def flagged_text(at: dict) -> str:
    """What a threshold flags (metrics.flagged), e.g. '20 of 60 (33 %) anomalous, 0 of 30 (0 %) good images'."""
    return (f"{_share(at['anomalous_flagged'], at['n_anomalous'])} anomalous, "
            f"{_share(at['good_flagged'], at['n_good'])} good images")


def _operating(at: dict, what: str) -> str:
    return f"threshold {at['threshold']:.3f} ({what}) flags {flagged_text(at)}"


def format_report(report: dict) -> str:
    """The metrics as a table: all images, then each defect type; then what the artifact's threshold
    and the F1-max threshold flag."""
    lines = [f"{'':<22}{'image AUROC':>12}{'pixel AUROC':>12}{'AUPRO':>8}{'F1-max':>8}{'n':>7}"]
    for name, m in [("all", report)] + sorted(report.get("per_defect", {}).items()):
        lines.append(f"{name[:22]:<22}{_fmt(m.get('image_auroc')):>12}{_fmt(m.get('pixel_auroc')):>12}"
                     f"{_fmt(m.get('aupro')):>8}{_fmt(m.get('f1_max')):>8}{m.get('n_images', ''):>7}")
    if "at_threshold" in report:
        lines.append(_operating(report["at_threshold"], "the model's, `run`'s default"))
    f1 = report.get("at_f1_threshold")
    if f1 and f1["threshold"] != report["at_threshold"]["threshold"]:
        lines.append(_operating(f1, "F1-max here") + f": `run --threshold {f1['threshold']:.3f}`")
    return "\n".join(lines)
