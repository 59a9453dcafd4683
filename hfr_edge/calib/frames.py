"""Calibration frames from a folder (recursive), a video file or a glob, sampled evenly to N.
They are decoded here and pre-processed by the shared `base.images.preprocess`."""

from __future__ import annotations

import glob as globmod
import os
from pathlib import Path
from typing import List, Tuple

import numpy as np

from ..base import console
from ..base.errors import HfrError
from ..base.images import cv2_module, list_images, read_image

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


def even_sample(n_total: int, n: int) -> List[int]:
    """n indices spread evenly over range(n_total) (all of them when n >= n_total)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(round(i * (n_total - 1) / max(n - 1, 1))) for i in range(n)})


def _video_frames(path: str, n: int) -> List[np.ndarray]:
    cv2 = cv2_module()
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise HfrError(f"{path}: cannot open the video (unreadable or unsupported codec); give a folder of images instead")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames = []
        if total > 0:
            for idx in even_sample(total, n):
                cap.set(cv2.CAP_PROP_POS_FRAMES, idx)
                ok, bgr = cap.read()
                if ok:
                    frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
        if not frames:  # unknown length or seeking unsupported: read all, then sample
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            allf = []
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                allf.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            frames = [allf[i] for i in even_sample(len(allf), n)]
    finally:
        cap.release()
    if not frames:
        raise HfrError(f"{path}: no frame could be decoded from the video; give a folder of images instead")
    return frames


def collect_frames(spec: str, n: int, warn=None) -> Tuple[List[np.ndarray], List[str]]:
    """Decoded RGB frames and their names from a folder, video file or glob, evenly sampled to n."""
    warn = warn or console.warn
    if n < 1:
        raise HfrError(f"-n {n}: need at least one calibration image")
    p = Path(spec)
    if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
        frames = _video_frames(str(p), n)
        names = [f"{p.name}#{i}" for i in range(len(frames))]
    else:
        if p.is_dir():
            paths = list_images(str(p))
        elif any(c in spec for c in "*?["):
            paths = sorted(q for q in globmod.glob(spec, recursive=True) if os.path.isfile(q))
        elif p.is_file():
            paths = [str(p)]
        else:
            raise HfrError(f"--images {spec}: no such folder, video file or glob; give 100-500 representative frames")
        if not paths:
            raise HfrError(f"--images {spec}: no images found (png, jpg, bmp, tif, webp); give 100-500 representative frames")
        frames, names = [], []
        for i in even_sample(len(paths), n):
            try:
                frames.append(read_image(paths[i]))
                names.append(paths[i])
            except HfrError as exc:
                if len(paths) == 1:  # one image: its own error names the problem
                    raise
                warn(f"skipping {exc}")
        if not frames:
            raise HfrError(f"--images {spec}: none of the images could be read")
    if len(frames) < n:
        warn(f"{spec}: only {len(frames)} calibration frames (asked for {n}); using all of them")
    return frames, names
