"""Dataset items through a view (base/view.py): the model inputs training learns from (a region of
interest, squashed or letterboxed, cut into tiles), and evaluation's per-image scores and region maps, tiles
stitched back. The same View.inputs the runtime uses, so what is trained is what deploys. No torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from .base import console
from .base.console import show
from .base.errors import HfrError
from .base.images import cv2_module, preprocess
from .base.view import View
from .data import load_or_skip


@dataclass
class ViewBatch:
    x: np.ndarray  # (sum of tiles, 3, S, S) float32 in [0, 1]
    counts: List[int]  # tiles of each kept item, in order
    shapes: List[Tuple[int, int]]  # (h, w) of each kept item's frame
    kept: list  # the data.Item of each kept image
    skipped: List[Tuple[str, str]]  # (key, reason)
    masks: Optional[np.ndarray] = None  # (N, oh, ow) bool region masks, when asked for
    regions: Optional[List[np.ndarray]] = None  # each kept frame's region (uint8 RGB), when asked for


def region_hw(view: View, h: int, w: int, size: int) -> Tuple[int, int]:
    """The resolution a region's map is judged at: its longer side is the model's input size times
    the tiles along it, the shorter side in proportion (a square untiled region: size x size)."""
    x0, y0, x1, y1 = view.region(h, w)
    rw, rh = x1 - x0, y1 - y0
    long_side = size * max(view.tiles)
    scale = long_side / max(rw, rh)
    return max(1, int(round(rh * scale))), max(1, int(round(rw * scale)))


def crop_mask(view: View, mask: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    """A frame's bool mask -> its region's mask at out_hw (nearest neighbour)."""
    x0, y0, x1, y1 = view.region(*mask.shape[:2])
    m = mask[y0:y1, x0:x1]
    if m.shape != tuple(out_hw):
        m = cv2_module().resize(m.astype(np.uint8), (out_hw[1], out_hw[0]), interpolation=cv2_module().INTER_NEAREST) > 0
    return m


def region_rgb(view: View, rgb: np.ndarray, out_hw: Tuple[int, int]) -> np.ndarray:
    """A frame's region at out_hw (what figures draw a region map on)."""
    x0, y0, x1, y1 = view.region(*rgb.shape[:2])
    return np.ascontiguousarray(cv2_module().resize(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (out_hw[1], out_hw[0]),
                                                    interpolation=cv2_module().INTER_AREA))


def load_view_items(items: Sequence, view: View, size: int, with_masks: bool = False,
                    out_hw: Optional[Tuple[int, int]] = None, keep_regions: bool = False,
                    warn: Callable[[str], None] = console.warn) -> ViewBatch:
    """Load items and cut each into its view's model inputs. Corrupt images are skipped with a
    warning; a ROI outside an image is an error (the view does not fit this dataset)."""
    inputs: List[np.ndarray] = []
    counts, shapes, kept, skipped, masks, regions = [], [], [], [], [], []
    for it in items:
        img = load_or_skip(it, skipped, warn)
        if img is None:
            continue
        tiles = view.inputs(img, size, name=show(it.key))
        inputs += tiles
        counts.append(len(tiles))
        shapes.append(img.shape[:2])
        kept.append(it)
        if keep_regions:
            x0, y0, x1, y1 = view.region(*img.shape[:2])
            regions.append(np.ascontiguousarray(img[y0:y1, x0:x1]))
        if with_masks:
            if it.load_mask is None:
                raise HfrError(f"{show(it.key)}: no ground-truth mask; this dataset has none, evaluate without pixel metrics")
            if out_hw is None:
                out_hw = region_hw(view, img.shape[0], img.shape[1], size)
            masks.append(crop_mask(view, it.load_mask(), out_hw))
    if items and not kept:
        raise HfrError(f"all {len(items)} images are unreadable (first: {show(skipped[0][0])}); check the dataset")
    x = preprocess(inputs, size) if inputs else np.zeros((0, 3, size, size), np.float32)
    return ViewBatch(x, counts, shapes, kept, skipped, np.stack(masks) if with_masks and masks else None,
                     regions if keep_regions else None)


def _region_sizes(view: View, shapes: Iterable[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """(w, h) of every model region (each tile) of frames of these (h, w) shapes."""
    return [(x1 - x0, y1 - y0) for h, w in shapes for x0, y0, x1, y1 in view.boxes(h, w)]


def mixed_letterbox(view: View, shapes: Sequence[Tuple[int, int]]) -> Optional[str]:
    """A warning where `view` letterboxes regions of several aspect ratios ((h, w) frames): their grey
    bars fall at different places in different inputs, and the per-position statistics there learn
    half bar, half content (docs/benchmarks.md: a texture's image AUROC 0.88 -> 0.74). None otherwise."""
    if view.aspect != "letterbox":
        return None
    ratios: List[float] = []
    for r in sorted({rw / rh for rw, rh in _region_sizes(view, set(shapes))}):
        if not ratios or r > ratios[-1] * 1.02:  # within 2 %: bars a pixel or two apart, one shape
            ratios.append(r)
    if len(ratios) < 2:
        return None
    shown = ", ".join(f"{r:.2f}" for r in ratios[:4]) + (", ..." if len(ratios) > 4 else "")
    return (f"--aspect letterbox on regions of {len(ratios)} aspect ratios (width / height {shown}): their grey bars "
            "fall at different places in different images, which costs the statistics there; --aspect squash "
            "(the default) stretches them instead")


def squashed_note(view: View, shapes: Sequence[Tuple[int, int]]) -> Optional[str]:
    """What training tells where `view` squashes regions that are not square ((h, w) frames); None else."""
    if view.aspect != "squash":
        return None
    sizes = _region_sizes(view, shapes)
    off = sum(1 for rw, rh in sizes if abs(rw - rh) > 0.02 * max(rw, rh))
    if not off:
        return None
    return (f"view: {off} of {len(sizes)} regions are not square: squashed into the square input (--aspect letterbox "
            "keeps their shape on grey bars)")


def split_frames(values: np.ndarray, counts: Sequence[int]) -> List[np.ndarray]:
    """Per-tile values (sum of counts, ...) -> one array per frame."""
    return np.split(values, np.cumsum(counts)[:-1]) if len(counts) else []


def frame_scores(tile_scores: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """A frame's score is its largest tile score."""
    return np.array([float(s.max()) for s in split_frames(np.asarray(tile_scores), counts)], np.float32)


def head(b: ViewBatch, n: int) -> ViewBatch:
    """The first n frames of a batch."""
    n = min(n, len(b.counts))
    k = sum(b.counts[:n])
    return ViewBatch(b.x[:k], b.counts[:n], b.shapes[:n], b.kept[:n], [], None,
                     None if b.regions is None else b.regions[:n])
