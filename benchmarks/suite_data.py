"""The sets of the suite (issue 13), loaded the same way for hfr-edge (suite.py) and the peers
(peers.py), so every method sees the same images at the same resolution:

- bottle (MVTec AD), textures-brick|grass|gravel (textures.py): 256 px, pixel masks; hfr-edge's
  training normals and held-out normals split as `hfr-edge train` does (10 %, by the seed);
- elpv: as benchmarks/elpv.py with --train 300 (300 training cells, 40 held-out normals taken
  from the rest, image labels only), 256 px;
- mnist-C, fashion-mnist-C: the one-class protocol of benchmarks/oneclass.py (1000 training
  images of class C evenly sampled, 10 % held out; the whole test set), 64 px.
Peers fit on every normal image hfr-edge uses in training: its training split plus its held-out
normals (which hfr-edge uses for its score normalisation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from common import DATASETS

SETS = ["bottle", "elpv", "textures-brick", "textures-grass", "textures-gravel",
        "mnist-0", "mnist-1", "mnist-2", "fashion-mnist-0", "fashion-mnist-1", "fashion-mnist-2"]
SIZE_MVTEC, SIZE_ONECLASS = 256, 64
ELPV_TRAIN, ELPV_HOLD = 300, 40
ONECLASS_TRAIN = 1000


@dataclass
class SetData:
    name: str
    kind: str  # "mvtec" (pixel masks), "elpv" (image labels), "oneclass" (image labels)
    size: int
    x_train: np.ndarray  # float32 (N, 3, S, S) in [0, 1]: hfr-edge's training images
    x_hold: np.ndarray  # hfr-edge's held-out normals
    x_test: np.ndarray
    labels: np.ndarray  # (M,) 0 good, 1 anomalous
    defects: List[str]
    masks: Optional[np.ndarray]  # bool (M, S, S) or None


def check_names(names: List[str]) -> List[str]:
    bad = [n for n in names if n not in SETS]
    if bad:
        raise SystemExit(f"--sets: unknown {', '.join(bad)}; choose from {', '.join(SETS)}")
    return names


def load_set(name: str, seed: int = 0, size: Optional[int] = None, textures: Optional[str] = None) -> SetData:
    """`size` overrides the set's resolution (then the peers' rows are at another resolution)."""
    from hfr_edge.data import load_items, open_dataset
    from hfr_edge.train import split_holdout

    if name == "elpv":
        return _elpv(size or SIZE_MVTEC)
    if name == "bottle" or name.startswith("textures-"):
        if name == "bottle":
            path = DATASETS / "mvtec_ad" / "bottle"
        else:
            from textures import make_textures

            path = (make_textures(textures) if textures else make_textures())[name.split("-", 1)[1]]
        s = size or SIZE_MVTEC
        ds = open_dataset(str(path), "mvtec")
        tr, ho = split_holdout(len(ds.train), 0.1, seed)
        x, _, _, _ = load_items([ds.train[i] for i in tr], s)
        xh, _, _, _ = load_items([ds.train[i] for i in ho], s)
        xt, masks, kept, _ = load_items(ds.test, s, with_masks=True)
        return SetData(name, "mvtec", s, x, xh, xt, np.array([it.label for it in kept]), [it.defect for it in kept],
                       masks)
    fmt, _, c = name.rpartition("-")
    s = size or SIZE_ONECLASS
    ds = open_dataset(str(DATASETS / fmt), fmt, normal_class=c)
    items = ds.train[:: max(1, len(ds.train) // ONECLASS_TRAIN)][:ONECLASS_TRAIN]
    tr, ho = split_holdout(len(items), 0.1, seed)
    x, _, _, _ = load_items([items[i] for i in tr], s)
    xh, _, _, _ = load_items([items[i] for i in ho], s)
    xt, _, kept, _ = load_items(ds.test, s)
    return SetData(name, "oneclass", s, x, xh, xt, np.array([it.label for it in kept]), [it.defect for it in kept],
                   None)


def _elpv(s: int) -> SetData:
    from elpv_dataset.utils import load_dataset

    from hfr_edge.base.images import preprocess

    images, probs, _ = load_dataset()
    normal = np.where(probs == 0)[0]
    anom = np.where(probs >= 2 / 3)[0]
    tr = normal[:: max(1, len(normal) // ELPV_TRAIN)][:ELPV_TRAIN]
    rest = np.setdiff1d(normal, tr)
    hold = rest[::10][:ELPV_HOLD]
    test_norm = np.setdiff1d(rest, hold)
    test = np.concatenate([test_norm, anom])
    labels = np.r_[np.zeros(len(test_norm), int), np.ones(len(anom), int)]
    x = preprocess([images[i] for i in tr], s)
    xh = preprocess([images[i] for i in hold], s)
    xt = preprocess([images[i] for i in test], s)
    return SetData("elpv", "elpv", s, x, xh, xt, labels, ["good" if v == 0 else "defect" for v in labels], None)


def score(d: SetData, scores: np.ndarray, maps: Optional[np.ndarray]) -> dict:
    """The suite's metrics with hfr_edge.metrics: image AUROC; pixel AUROC and AUPRO where masks exist."""
    from hfr_edge.metrics import auroc, pixel_metrics

    pix, pro = (None, None) if d.masks is None else pixel_metrics(d.masks, maps)
    return {"image_auroc": auroc(d.labels, scores), "pixel_auroc": pix, "aupro": pro}
