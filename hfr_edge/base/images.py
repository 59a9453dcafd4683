"""Images: listing folders, reading files, and the pre- and post-processing shared by training,
evaluation, calibration and both runtime backends: one implementation, so a frame is turned into
the model's input the same way everywhere. numpy + Pillow + OpenCV only (no torch).

Input contract of every hfr-edge graph: float32 (N, 3, S, S), RGB, values in [0, 1].
"""

from __future__ import annotations

import os
import re
from typing import List, Optional, Sequence

import numpy as np

from .console import show
from .errors import HfrError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
# Decompression-bomb guard: images with more pixels than this are refused before decoding.
MAX_PIXELS = 64_000_000  # e.g. 8000 x 8000


def cv2_module():
    """OpenCV, imported lazily: JetPack's system cv2 (with GStreamer) or the PyPI wheel."""
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        raise HfrError("OpenCV is needed here: pip install 'hfr-edge[cv]' on a desktop, "
                       "or on a Jetson use JetPack's python3-opencv (a venv made with --system-site-packages)") from None
    return cv2


def unreadable_folder(folder: str, exc: OSError) -> HfrError:
    return HfrError(f"{show(folder)}: cannot read folder ({exc.strerror or exc}); check the path and permissions")


def is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # e.g. a symlink to itself (ELOOP)
        return False


def _leads_up(entry: os.DirEntry) -> bool:
    """A symlink to its own folder or an ancestor (a loop: following it would list the folders
    above as if they were inside, e.g. test/good/up -> .. puts the defects among the good)."""
    if not entry.is_symlink():
        return False
    target, here = os.path.realpath(entry.path), os.path.realpath(os.path.dirname(entry.path))
    return here == target or here.startswith(target.rstrip(os.sep) + os.sep)


def list_images(folder: str, exclude: Sequence[str] = ()) -> List[str]:
    """Image files under `folder`, recursively, hidden entries skipped, symlinks followed (each
    real folder visited once, links back up to an ancestor skipped), in a deterministic (byte-wise) order.
    `exclude`: folders left out (e.g. a test folder inside the training folder)."""
    found: List[str] = []
    seen = set()
    for ex in exclude:
        try:
            st = os.stat(ex)
            seen.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    stack = [os.fspath(folder)]
    while stack:
        d = stack.pop()
        try:
            st = os.stat(d)
        except OSError:
            continue  # a broken symlink
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(d) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except OSError as exc:
            raise unreadable_folder(d, exc) from None
        for e in entries:
            if is_dir(e):
                if not _leads_up(e):
                    stack.append(e.path)
            elif os.path.splitext(e.name)[1].lower() in IMAGE_EXTS and os.path.isfile(e.path):
                found.append(e.path)
    return sorted(found, key=os.fsencode)


def to_rgb_uint8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Any common image array -> (H, W, 3) uint8 RGB.

    Accepts (H, W), (H, W, 1), (H, W, 3) and (H, W, 4) (alpha dropped); uint8, uint16 (top 8
    bits), bool, and float in [0, 1]. Anything else is refused with the shape or dtype named.
    """
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise HfrError(f"{name}: shape {a.shape} is not an image; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise HfrError(f"{name}: empty image of shape {a.shape}")
    if a.dtype == np.uint8:
        pass
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise HfrError(f"{name}: float image holds NaN or infinity")
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise HfrError(f"{name}: dtype {a.dtype} is not supported; give uint8, uint16, bool or float in [0, 1]")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB, or raise HfrError naming the file.

    Grayscale, 16-bit, palette, RGBA, CMYK and LA images are converted; files larger than
    MAX_PIXELS are refused before decoding (decompression-bomb guard).
    """
    import warnings  # noqa: PLC0415

    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    p = os.fspath(path)
    bomb = f"{p}: {{}} exceeds the limit of {MAX_PIXELS} pixels (decompression-bomb guard); downscale the image first"
    try:
        with warnings.catch_warnings():  # Pillow's bomb and TIFF-tag warnings: the guard below decides,
            warnings.simplefilter("ignore")  # and corrupt data is an error, not a warning
            with Image.open(p) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise HfrError(bomb.format(f"{w}x{h} pixels"))
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    a = np.asarray(im, dtype=np.uint32)
                    a = (np.clip(a, 0, 65535) >> 8).astype(np.uint8)
                elif im.mode == "F":
                    a = np.asarray(im, dtype=np.float32)
                    a = np.clip(a / max(float(a.max()), 1e-12), 0, 1)
                elif im.mode in ("RGB", "L"):
                    a = np.asarray(im)
                else:  # P, PA, RGBA, LA, CMYK, YCbCr, 1, ...
                    a = np.asarray(im.convert("RGB"))
    except HfrError:
        raise
    except FileNotFoundError:
        raise HfrError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise HfrError(f"{p}: is a folder, not an image") from None
    except Image.DecompressionBombError as exc:  # Pillow refuses far larger images at open
        n = re.search(r"\((\d+) pixels\)", str(exc))
        raise HfrError(bomb.format(f"{n.group(1)} pixels" if n else "its size")) from None
    except UnidentifiedImageError as exc:
        raise HfrError(f"{p}: not a readable image ({type(exc).__name__}); replace or remove the file") from None
    except MemoryError:
        raise HfrError(f"{p}: too large to decode in the memory available; downscale the image first") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data surfaces as many types in the decoders
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:80]
        raise HfrError(f"{p}: corrupt or truncated image ({why}); replace or remove the file") from None
    return to_rgb_uint8(a, p)


def resize_to(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """(H, W, C) -> (h, w, C): area interpolation when shrinking both sides, bilinear otherwise."""
    cv2 = cv2_module()
    ih, iw = img.shape[:2]
    if (ih, iw) == (h, w):
        return img
    interp = cv2.INTER_AREA if (ih >= h and iw >= w) else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def resize_rgb(img: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8."""
    return resize_to(img, size, size)


def preprocess(images: Sequence[np.ndarray], size: int, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Frames (any size, RGB or gray, see to_rgb_uint8) -> float32 (N, 3, size, size) in [0, 1].

    `out`, if given, is a preallocated float32 (>= N, 3, size, size) buffer filled in place
    (the runtime passes its pinned input buffer here).
    """
    n = len(images)
    if out is None:
        out = np.empty((n, 3, size, size), np.float32)
    elif out.shape[0] < n or out.shape[1:] != (3, size, size) or out.dtype != np.float32:
        raise HfrError(f"preprocess: output buffer {out.shape} {out.dtype} cannot hold {n} images of {size}x{size}")
    for i, img in enumerate(images):
        rgb = resize_rgb(to_rgb_uint8(img, f"frame {i}"), size)
        np.multiply(rgb.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=out[i], casting="unsafe")
    return out[:n]


def fill_batch(x: np.ndarray, n: int) -> np.ndarray:
    """x (k, ...) with 1 <= k <= n as n rows, its last repeated: for a graph exported with a fixed batch n."""
    return x if len(x) >= n else np.concatenate([x, np.repeat(x[-1:], n - len(x), 0)])


def read_mask(path: str | os.PathLike, expect_hw: Optional[tuple] = None) -> np.ndarray:
    """A ground-truth mask file -> bool (H, W); expect_hw checks it matches its image."""
    a = read_image(path)[:, :, 0]
    if expect_hw is not None and a.shape[:2] != tuple(expect_hw):
        raise HfrError(f"{os.fspath(path)}: mask is {a.shape[1]}x{a.shape[0]} but its image is "
                       f"{expect_hw[1]}x{expect_hw[0]}; masks must have their image's size")
    return a > 127


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """bool (H, W) -> bool (size, size), nearest neighbour."""
    cv2 = cv2_module()
    if mask.shape == (size, size):
        return mask
    return cv2.resize(mask.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0


def heat_overlay(rgb: np.ndarray, amap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a normalised anomaly map (h, w; 0.5 = threshold, clipped to [0, 1] for display) onto
    an (H, W, 3) uint8 RGB frame; returns uint8 RGB of the frame's size."""
    cv2 = cv2_module()
    h, w = rgb.shape[:2]
    m = np.clip(np.asarray(amap, np.float32).squeeze(), 0.0, 1.0)
    if m.shape != (h, w):
        m = cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((m * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]  # BGR -> RGB
    return cv2.addWeighted(rgb, 1.0 - alpha, heat, alpha, 0.0)
