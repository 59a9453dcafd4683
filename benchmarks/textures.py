"""The texture suite: scikit-image's bundled photographs brick, grass and gravel (512x512 grayscale,
inside the wheel, no download) cut into crops in MVTec AD layout, with painted defects and masks.

    python benchmarks/textures.py [--out DIR] [--seed 0]      # default DIR: ~/.cache/hfr-edge/textures

Per texture: the left columns of the photograph give the training crops, the right columns (after
a gap) the test crops, so no test pixel was seen in training (a left/right split, since brick's
perspective changes the scale from top to bottom, not from side to side). Crops have a random side of 112-176 px,
a third square, a third 4:3, a third 3:4, and 30 % carry a random colour tint (the same
distribution in train and test). Test defects (10 crops each): scratch, crack (random-walk
polyline), blob (dark or bright ellipse), patch (pasted from another texture), blur, stain
(semi-transparent colour); contrast and size vary, some are small, and a defect that changes its
region by less than MIN_CHANGE (mean absolute difference, e.g. a blur on a flat brick) is redrawn.
Fixed seed, deterministic, seconds to write; the data is never committed.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

TEXTURES = ("brick", "grass", "gravel")
DEFECTS = ("scratch", "crack", "blob", "patch", "blur", "stain")
N_TRAIN, N_GOOD, N_PER_DEFECT = 120, 30, 10
TRAIN_COLS, TEST_COLS = (0, 248), (264, 512)  # disjoint bands of the 512-column photograph
SIDE = (112, 176)
TINT_P = 0.3
MIN_CHANGE = 0.04  # on the [0, 1] scale: a painted defect must be visible
VERSION = 2  # bump when the generator changes, so cached suites are rewritten
DEFAULT_OUT = Path.home() / ".cache" / "hfr-edge" / "textures"


def photos() -> dict:
    import skimage.data

    return {n: getattr(skimage.data, n)().astype(np.float32) / 255.0 for n in TEXTURES}


def crop_box(rng, cols, height=512):
    s = int(rng.integers(SIDE[0], SIDE[1] + 1))
    h, w = [(s, s), (s, s * 4 // 3), (s, s * 3 // 4)][int(rng.integers(3))]
    y = int(rng.integers(0, height - h + 1))
    x = int(rng.integers(cols[0], cols[1] - w + 1))
    return y, x, h, w


def random_tint(rng):
    """An RGB multiplier, or None (grayscale crop): a random hue at saturation 0.15-0.5."""
    if rng.random() >= TINT_P:
        return None
    import colorsys

    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.15, 0.5), 1.0), np.float32)


def to_rgb(gray, tint):
    rgb = np.repeat(gray[..., None], 3, axis=2)
    return rgb if tint is None else rgb * tint


def ellipse_mask(rng, h, w, a_range):
    import cv2

    m = np.zeros((h, w), np.uint8)
    a, b = (int(rng.integers(*a_range)) for _ in range(2))
    cy, cx = int(rng.integers(a, max(a + 1, h - a))), int(rng.integers(b, max(b + 1, w - b)))
    cv2.ellipse(m, (cx, cy), (b, a), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def polyline(rng, h, w, steps, step_len, turn):
    """A random walk from a random point: (N, 2) int32 points (x, y), clipped to the crop."""
    p = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
    ang = rng.uniform(0, 2 * np.pi)
    pts = [p.copy()]
    for _ in range(steps):
        ang += rng.normal(0, turn)
        p = p + step_len * np.array([np.cos(ang), np.sin(ang)])
        pts.append(np.clip(p, 0, [w - 1, h - 1]))
    return np.round(pts).astype(np.int32)


def draw_lines(h, w, pts, thickness):
    import cv2

    m = np.zeros((h, w), np.uint8)
    cv2.polylines(m, [pts.reshape(-1, 1, 2)], False, 1, int(thickness), cv2.LINE_8)
    return m.astype(bool)


def shade(img, mask, target, alpha):
    """Blend `target` (a level or RGB colour) into img where mask, with opacity alpha."""
    out = img.copy()
    out[mask] = (1 - alpha) * img[mask] + alpha * np.asarray(target, np.float32)
    return out


def paint(rng, kind, img, tint, donor):
    """img: (H, W, 3) float in [0, 1] -> (defective image, bool mask)."""
    import cv2

    h, w = img.shape[:2]
    side = min(h, w)
    if kind == "scratch":  # a thin, nearly straight line, bright or dark
        pts = polyline(rng, h, w, 6, side * rng.uniform(0.04, 0.12), 0.08)
        m = draw_lines(h, w, pts, rng.integers(1, 3))
        return shade(img, m, float(rng.random() < 0.5), rng.uniform(0.4, 0.9)), m
    if kind == "crack":  # a dark, wandering random walk
        pts = polyline(rng, h, w, int(rng.integers(8, 25)), side * rng.uniform(0.02, 0.05), 0.6)
        m = draw_lines(h, w, pts, rng.integers(1, 4))
        return shade(img, m, 0.0, rng.uniform(0.45, 0.85)), m
    if kind == "blob":  # a filled ellipse, dark or bright; small ones included
        m = ellipse_mask(rng, h, w, (3, max(4, side // 7)))
        return shade(img, m, float(rng.random() < 0.5), rng.uniform(0.3, 0.7)), m
    if kind == "patch":  # a piece of another texture, same tint as the crop
        m = ellipse_mask(rng, h, w, (6, max(7, side // 5))) if rng.random() < 0.5 else rect_mask(rng, h, w, side)
        y, x = int(rng.integers(0, donor.shape[0] - h)), int(rng.integers(0, donor.shape[1] - w))
        src = to_rgb(donor[y:y + h, x:x + w], tint)
        out = img.copy()
        out[m] = src[m]
        return out, m
    if kind == "blur":  # a region smoothed away
        m = ellipse_mask(rng, h, w, (8, max(9, side // 4)))
        blurred = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(2.0, 5.0)))
        out = img.copy()
        out[m] = blurred[m]
        return out, m
    if kind == "stain":  # a soft, semi-transparent coloured blot
        import colorsys

        m = ellipse_mask(rng, h, w, (6, max(7, side // 4)))
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 2.0)
        colour = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.3, 0.9)), np.float32)
        a = rng.uniform(0.25, 0.55) * soft[..., None]
        return (1 - a) * img + a * colour, soft > 0.5
    raise ValueError(kind)


def rect_mask(rng, h, w, side):
    m = np.zeros((h, w), bool)
    rh, rw = (int(rng.integers(10, max(11, side // 3))) for _ in range(2))
    y, x = int(rng.integers(0, h - rh)), int(rng.integers(0, w - rw))
    m[y:y + rh, x:x + rw] = True
    return m


def save(path: Path, img, gray: bool):
    from PIL import Image

    a = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    Image.fromarray(a[..., 0] if gray else a).save(path)


def write_texture(root: Path, name: str, pics: dict, rng) -> None:
    photo = pics[name]
    donors = [pics[n] for n in TEXTURES if n != name]
    for sub in ["train/good", "test/good"] + [f"test/{d}" for d in DEFECTS] + [f"ground_truth/{d}" for d in DEFECTS]:
        (root / sub).mkdir(parents=True)

    def crop(cols):
        y, x, h, w = crop_box(rng, cols)
        tint = random_tint(rng)
        return to_rgb(photo[y:y + h, x:x + w], tint), tint

    for i in range(N_TRAIN):
        img, tint = crop(TRAIN_COLS)
        save(root / "train/good" / f"{i:03d}.png", img, tint is None)
    for i in range(N_GOOD):
        img, tint = crop(TEST_COLS)
        save(root / "test/good" / f"{i:03d}.png", img, tint is None)
    for d in DEFECTS:
        for i in range(N_PER_DEFECT):
            img, tint = crop(TEST_COLS)
            for _ in range(20):
                bad, m = paint(rng, d, img, tint, donors[int(rng.integers(len(donors)))])
                if m.any() and np.abs(bad - img)[m].mean() >= MIN_CHANGE:
                    break
            gray = tint is None and d != "stain"  # a stain brings colour into a gray crop
            save(root / f"test/{d}" / f"{i:03d}.png", bad, gray)
            save(root / f"ground_truth/{d}" / f"{i:03d}_mask.png", m[..., None].astype(np.float32), True)


def make_textures(out=DEFAULT_OUT, seed: int = 0) -> dict:
    """Write (or reuse, when written by this version and seed) the suite: {texture: category folder}."""
    out = Path(out).expanduser()
    stamp = f"textures v{VERSION} seed {seed}\n"
    paths = {n: out / n for n in TEXTURES}
    if (out / "STAMP").is_file() and (out / "STAMP").read_text() == stamp and all(p.is_dir() for p in paths.values()):
        return paths
    pics = photos()
    out.mkdir(parents=True, exist_ok=True)
    (out / "STAMP").unlink(missing_ok=True)
    for k, name in enumerate(TEXTURES):
        tmp = out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        write_texture(tmp, name, pics, np.random.default_rng([seed, k]))
        shutil.rmtree(paths[name], ignore_errors=True)
        tmp.rename(paths[name])
    (out / "STAMP").write_text(stamp)
    return paths


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for n, p in make_textures(args.out, args.seed).items():
        print(f"textures-{n}: {p}")
