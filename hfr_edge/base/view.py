"""Where in a frame the model looks, written once for training, evaluation, calibration and the
runtime, and stored in every artifact so the device crops what training cropped.

- region of interest: `roi` (x, y, w, h) in pixels of the source frame; None: the whole frame.
- aspect: a region that is not square becomes the square model input by "squash" (stretched: the
  default, as before views existed; it keeps every pixel row and column of the region) or "letterbox"
  (scaled to fit, centred, padded with grey: the part keeps its shape, at fewer pixels). For a square
  region both give the same input. Squash won where it was measured (docs/benchmarks.md): grey
  bars that differ between images (crops of several aspect ratios) make a texture's per-position
  statistics half bar, half texture (gravel image AUROC 0.89 -> 0.75), and on one part through one
  3:2 (16:9) region squash kept AUPRO 0.004 (0.009) higher, pixel AUROC within 0.0003 (2 seeds).
- tiles (rows, cols): the region cut into overlapping tiles, each its own model input, so small
  defects keep their pixels on a large frame; the tile maps are stitched back with the overlaps
  cross-faded, and the frame's score is the largest tile score.

numpy + OpenCV only (no torch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import HfrError
from .images import cv2_module, resize_to, to_rgb_uint8

ASPECTS = ("squash", "letterbox")
PAD = 128  # grey of the letterbox bars (uint8): the same in training and at run time
MAX_TILES = 16  # per side
Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, end exclusive
# what a checkpoint hands on to every artifact made from it (top-level keys of the checkpoint, extra
# keys of the artifact metadata): its view, and the reference of normal frames the drift watch uses
CARRIED_KEYS = ("view", "reference")


@dataclass(frozen=True)
class View:
    roi: Optional[Tuple[int, int, int, int]] = None  # x, y, w, h in source-frame pixels; None: whole frame
    aspect: str = "squash"  # squash | letterbox
    tiles: Tuple[int, int] = (1, 1)  # rows, columns
    overlap: float = 0.25  # share of a tile's width (height) it shares with its neighbour

    def __post_init__(self):
        if self.roi is not None:
            if len(self.roi) != 4 or min(self.roi[2:]) < 1 or min(self.roi[:2]) < 0:
                raise HfrError(f"--roi {_roi_text(self.roi)} must be x,y,w,h with x, y >= 0 and w, h >= 1 "
                               f"(pixels of the source frame)")
        if self.aspect not in ASPECTS:
            raise HfrError(f"--aspect {self.aspect!r} must be one of: {', '.join(ASPECTS)}")
        if len(self.tiles) != 2 or not all(1 <= t <= MAX_TILES for t in self.tiles):
            raise HfrError(f"--tiles {'x'.join(map(str, self.tiles))} must be RxC with 1 to {MAX_TILES} rows and columns")
        if not 0.0 <= self.overlap <= 0.75:
            raise HfrError(f"--overlap {self.overlap} must be between 0 and 0.75 (a share of the tile)")

    @property
    def n_tiles(self) -> int:
        return self.tiles[0] * self.tiles[1]

    def to_dict(self) -> dict:
        return {"roi": None if self.roi is None else list(self.roi), "aspect": self.aspect,
                "tiles": list(self.tiles), "overlap": self.overlap}

    @classmethod
    def from_dict(cls, d: Optional[dict], where: str = "artifact") -> "View":
        """The view an artifact stores; an artifact from before views squashed the whole frame."""
        if d is None:
            return LEGACY
        try:
            roi = d.get("roi")
            return cls(roi=None if roi is None else tuple(int(v) for v in roi), aspect=str(d.get("aspect", "squash")),
                       tiles=tuple(int(v) for v in d.get("tiles", (1, 1))), overlap=float(d.get("overlap", 0.0)))
        except (TypeError, ValueError, AttributeError):
            raise HfrError(f"{where}: its view metadata {d!r} is malformed; re-export the model") from None

    def describe(self) -> str:
        parts = [f"roi {_roi_text(self.roi)}" if self.roi else "whole frame", self.aspect]
        if self.n_tiles > 1:
            parts.append(f"tiles {self.tiles[0]}x{self.tiles[1]} (overlap {self.overlap:g})")
        return ", ".join(parts)

    # -- geometry -------------------------------------------------------------------------
    def region(self, h: int, w: int, name: str = "frame") -> Box:
        """The region of an (h, w) frame, or HfrError when the ROI does not lie inside it."""
        if self.roi is None:
            return 0, 0, w, h
        x, y, rw, rh = self.roi
        if x + rw > w or y + rh > h:
            raise HfrError(f"--roi {_roi_text(self.roi)} lies outside the {w}x{h} frame of {name}; give a region "
                           f"inside it (x + w <= {w}, y + h <= {h})")
        return x, y, x + rw, y + rh

    def boxes(self, h: int, w: int, name: str = "frame") -> List[Box]:
        """The tiles of an (h, w) frame, row by row, in frame pixels (one box: the region itself)."""
        x0, y0, x1, y1 = self.region(h, w, name)
        rows = _spans(y0, y1, self.tiles[0], self.overlap)
        cols = _spans(x0, x1, self.tiles[1], self.overlap)
        return [(a, b, c, d) for b, d in rows for a, c in cols]

    def inputs(self, rgb: np.ndarray, size: int, name: str = "frame") -> List[np.ndarray]:
        """A frame -> one (size, size, 3) uint8 RGB model input per tile."""
        rgb = to_rgb_uint8(rgb, name)
        return [fit_square(rgb[y0:y1, x0:x1], size, self.aspect) for x0, y0, x1, y1 in self.boxes(*rgb.shape[:2], name)]

    def stitch(self, maps: Sequence[np.ndarray], h: int, w: int, out_hw: Tuple[int, int]) -> np.ndarray:
        """Tile maps (size, size) of an (h, w) frame -> the region's map at out_hw (rows, cols):
        each tile's map without its letterbox bars, resized onto its place, overlaps cross-faded."""
        boxes = self.boxes(h, w)
        rx0, ry0, rx1, ry1 = self.region(h, w)
        oh, ow = out_hw
        sy, sx = oh / (ry1 - ry0), ow / (rx1 - rx0)
        if len(boxes) == 1:
            return unfit(maps[0], (rx1 - rx0, ry1 - ry0), (ow, oh), self.aspect)
        acc = np.zeros((oh, ow), np.float32)
        wsum = np.zeros((oh, ow), np.float32)
        rows, cols = self.tiles
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            r, c = divmod(k, cols)
            tx0, tx1 = round((x0 - rx0) * sx), round((x1 - rx0) * sx)
            ty0, ty1 = round((y0 - ry0) * sy), round((y1 - ry0) * sy)
            if tx1 <= tx0 or ty1 <= ty0:
                continue
            m = unfit(maps[k], (x1 - x0, y1 - y0), (tx1 - tx0, ty1 - ty0), self.aspect)
            wy = _ramp(ty1 - ty0, self.overlap * (ty1 - ty0), r > 0, r < rows - 1)
            wx = _ramp(tx1 - tx0, self.overlap * (tx1 - tx0), c > 0, c < cols - 1)
            wt = wy[:, None] * wx[None, :]
            acc[ty0:ty1, tx0:tx1] += wt * m
            wsum[ty0:ty1, tx0:tx1] += wt
        return acc / np.maximum(wsum, 1e-12)

    def frame_map(self, maps: Sequence[np.ndarray], h: int, w: int, out_hw: Optional[Tuple[int, int]] = None) -> np.ndarray:
        """The stitched map in the whole frame's coordinates (0 outside the region), at out_hw
        (default: the frame's own size): what overlays and saved anomalies are drawn with."""
        oh, ow = out_hw or (h, w)
        x0, y0, x1, y1 = self.region(h, w)
        if (x0, y0, x1, y1) == (0, 0, w, h):
            return self.stitch(maps, h, w, (oh, ow))
        sy, sx = oh / h, ow / w
        bx0, bx1, by0, by1 = round(x0 * sx), round(x1 * sx), round(y0 * sy), round(y1 * sy)
        out = np.zeros((oh, ow), np.float32)
        if bx1 > bx0 and by1 > by0:
            out[by0:by1, bx0:bx1] = self.stitch(maps, h, w, (by1 - by0, bx1 - bx0))
        return out


LEGACY = View(roi=None, aspect="squash", tiles=(1, 1), overlap=0.0)  # what artifacts without a view did


def _roi_text(roi) -> str:
    return ",".join(str(v) for v in roi)


def _spans(a: int, b: int, n: int, overlap: float) -> List[Tuple[int, int]]:
    """n spans covering [a, b), each sharing `overlap` of its length with the next; the last ends at b."""
    if n == 1:
        return [(a, b)]
    length = (b - a) / (n - (n - 1) * overlap)
    step = length * (1.0 - overlap)
    spans = [(int(round(a + i * step)), int(round(a + i * step + length))) for i in range(n)]
    spans[-1] = (spans[-1][0], b)
    if any(e - s < 1 for s, e in spans):
        raise HfrError(f"--tiles: {n} tiles do not fit in a region {b - a} pixels long; use fewer tiles")
    return spans


def _ramp(n: int, width: float, before: bool, after: bool) -> np.ndarray:
    """Blend weights along a tile: rising over `width` pixels where a neighbour comes before, falling
    where one comes after, 1 elsewhere; neighbours' ramps over the same pixels sum to about 1."""
    t = np.arange(n, dtype=np.float32) + 0.5
    w = np.ones(n, np.float32)
    if width >= 1.0:
        if before:
            w = np.minimum(w, t / width)
        if after:
            w = np.minimum(w, (n - t) / width)
    return np.maximum(w, 1e-3)


def _fit_size(w: int, h: int, size: int) -> Tuple[int, int]:
    scale = size / max(w, h)
    return max(1, min(size, int(round(w * scale)))), max(1, min(size, int(round(h * scale))))


def fit_square(rgb: np.ndarray, size: int, aspect: str) -> np.ndarray:
    """An (h, w, 3) uint8 crop -> (size, size, 3) uint8: stretched (squash) or scaled to fit and
    centred on grey (letterbox)."""
    h, w = rgb.shape[:2]
    if aspect == "squash" or h == w:
        return resize_to(rgb, size, size)
    nw, nh = _fit_size(w, h, size)
    out = np.full((size, size, 3), PAD, np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = resize_to(np.ascontiguousarray(rgb), nw, nh)
    return out


def unfit(amap: np.ndarray, crop_wh: Tuple[int, int], out_wh: Tuple[int, int], aspect: str) -> np.ndarray:
    """A (size, size) map of a crop of crop_wh (w, h) -> the crop's map at out_wh, letterbox bars removed."""
    cv2 = cv2_module()
    m = np.asarray(amap, np.float32)
    size = m.shape[0]
    cw, ch = crop_wh
    if aspect == "letterbox" and cw != ch:
        nw, nh = _fit_size(cw, ch, size)
        top, left = (size - nh) // 2, (size - nw) // 2
        m = m[top:top + nh, left:left + nw]
    if m.shape != (out_wh[1], out_wh[0]):
        m = cv2.resize(np.ascontiguousarray(m), out_wh, interpolation=cv2.INTER_LINEAR)
    return m


def view_inputs(frames: Sequence[np.ndarray], view: View, size: int) -> np.ndarray:
    """Frames (calibration's) -> every model input of their view, float32 (sum of tiles, 3, S, S)."""
    from .images import preprocess  # noqa: PLC0415

    return preprocess([t for i, f in enumerate(frames) for t in view.inputs(f, size, name=f"frame {i}")], size)


def parse_roi(text: Optional[str]) -> Optional[Tuple[int, int, int, int]]:
    """'x,y,w,h' (pixels) -> a tuple; None stays None."""
    if text is None:
        return None
    try:
        v = tuple(int(p) for p in text.replace(" ", "").split(","))
    except ValueError:
        v = ()
    if len(v) != 4:
        raise HfrError(f"--roi {text!r} must be four integers x,y,w,h (pixels of the source frame), e.g. 400,120,960,960")
    return v


def parse_tiles(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """'RxC' (e.g. 2x2, 1x4) -> (rows, cols); None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*", text)
    if not m:
        raise HfrError(f"--tiles {text!r} must be RxC, rows x columns, e.g. 2x2")
    return int(m.group(1)), int(m.group(2))


def view_for(stored: Optional[dict], roi: Optional[str] = None, where: str = "artifact",
             tiles: Optional[str] = None) -> View:
    """An artifact's view, its ROI replaced by --roi where one is given (a camera moved since training)
    and its tiles by --tiles (with a warning: the artifact's threshold was set for its own tiling)."""
    from dataclasses import replace  # noqa: PLC0415

    from .console import warn  # noqa: PLC0415

    view = View.from_dict(stored, where)
    r, t = parse_roi(roi), parse_tiles(tiles)
    if r is not None:
        view = replace(view, roi=r)
    if t is not None and t != view.tiles:
        warn(f"--tiles {t[0]}x{t[1]}: {where} was trained on {view.tiles[0]}x{view.tiles[1]} tiles; its threshold was "
             f"set for those, so scores may read higher or lower than its own")
        view = replace(view, tiles=t)
    return view
