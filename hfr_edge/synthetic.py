"""A small deterministic industrial-looking dataset in MVTec AD layout: a textured metal/fabric
surface with defects (scratch, spot, crack, missing piece) and their pixel masks. Used by
`hfr-edge demo` and the tests; needs only numpy and OpenCV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base.images import cv2_module

DEFECTS = ("scratch", "spot", "crack", "missing")


def _surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed-metal-like texture: smooth noise stretched along x, plus fine grain. float32 HxW in [0,1]."""
    cv2 = cv2_module()
    base = rng.standard_normal((size // 8, size // 2)).astype(np.float32)
    base = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    grain = rng.standard_normal((size, size)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.8)
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    img = 0.55 + 0.06 * base + 0.04 * grain + 0.05 * np.sin(2 * np.pi * 3 * yy)
    return np.clip(img, 0, 1)


def _defect(rng: np.random.Generator, kind: str, size: int):
    """(mask uint8 HxW, intensity shift) for one defect of this kind."""
    cv2 = cv2_module()
    m = np.zeros((size, size), np.uint8)
    c = rng.integers(size // 5, 4 * size // 5, 2)
    if kind == "scratch":
        ang = rng.uniform(0, np.pi)
        ln = rng.integers(size // 5, size // 3)
        d = (np.cos(ang) * ln / 2, np.sin(ang) * ln / 2)
        p1 = (int(c[0] - d[0]), int(c[1] - d[1]))
        p2 = (int(c[0] + d[0]), int(c[1] + d[1]))
        cv2.line(m, p1, p2, 1, max(2, size // 64))
        return m, 0.35
    if kind == "spot":
        cv2.circle(m, (int(c[0]), int(c[1])), int(rng.integers(size // 24, size // 12)), 1, -1)
        return m, -0.35
    if kind == "crack":
        pts = [c.astype(np.int32)]
        for _ in range(6):
            pts.append(pts[-1] + rng.integers(-size // 14, size // 14 + 1, 2))
        cv2.polylines(m, [np.array(pts, np.int32)], False, 1, max(2, size // 80))
        return m, -0.45
    # missing piece: a dark rectangular notch
    w, h = rng.integers(size // 10, size // 6, 2)
    cv2.rectangle(m, (int(c[0]), int(c[1])), (int(c[0] + w), int(c[1] + h)), 1, -1)
    return m, -0.5


def make_dataset(root, size: int = 128, n_train: int = 60, n_good_test: int = 12, n_per_defect: int = 6,
                 seed: int = 0) -> Path:
    """Write the dataset under root (MVTec AD layout); returns root. Deterministic for a seed."""
    cv2 = cv2_module()
    root = Path(root)
    rng = np.random.default_rng(seed)
    tint = np.array([0.92, 0.96, 1.0], np.float32)  # a slightly blue steel

    def save(path: Path, gray: np.ndarray):
        path.parent.mkdir(parents=True, exist_ok=True)
        rgb = np.clip(gray[:, :, None] * tint, 0, 1)
        cv2.imwrite(str(path), (rgb[:, :, ::-1] * 255 + 0.5).astype(np.uint8))

    for i in range(n_train):
        save(root / "train" / "good" / f"{i:03d}.png", _surface(rng, size))
    for i in range(n_good_test):
        save(root / "test" / "good" / f"{i:03d}.png", _surface(rng, size))
    for kind in DEFECTS:
        for i in range(n_per_defect):
            img = _surface(rng, size)
            m, shift = _defect(rng, kind, size)
            soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 0.7)
            save(root / "test" / kind / f"{i:03d}.png", np.clip(img + shift * soft, 0, 1))
            mp = root / "ground_truth" / kind / f"{i:03d}_mask.png"
            mp.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(mp), m * 255)
    return root
