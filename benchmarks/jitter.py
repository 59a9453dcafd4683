"""How far a part may move before the statistics chosen for ONE PART AT ONE PLACE stop paying: suite.py
on a set (bottle by default) with every image (training, held-out, test, and the test masks with
them) shifted by a seeded random offset of up to +-J pixels (wrapping), scored under the fusions
given (`--fusion`, as suite.py's). Prints suite.py's table; rows go to --json (default
benchmarks/results/jitterJ.json).

    JITTER=16 python benchmarks/jitter.py --sets bottle --seeds 0 --tag narrow --models DIR \
        --fusion "aligned:score=top;part_level_weights=none" --fusion "part:score=top" \
        --json benchmarks/results/jitter16.json

(`train.alignment_ratio` of bottle's training images at 256 px: 12.4 unshifted, 9.3 / 5.8 / 2.2 /
0.77 shifted by up to 4 / 8 / 16 / 32 px; docs/benchmarks.md.)
"""

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

J = int(os.environ.get("JITTER", "8"))
_load = suite.load_set


def shifted(x: np.ndarray, rng, masks=None):
    """x (N, 3, S, S) and masks (N, S, S) each rolled by one offset per image in [-J, J]^2."""
    y = np.empty_like(x)
    m = None if masks is None else np.empty_like(masks)
    for i in range(len(x)):
        dy, dx = (int(v) for v in rng.integers(-J, J + 1, 2))
        y[i] = np.roll(x[i], (dy, dx), axis=(1, 2))
        if m is not None:
            m[i] = np.roll(masks[i], (dy, dx), axis=(0, 1))
    return y, m


def load_set(*a, **k):
    d = _load(*a, **k)
    rng = np.random.default_rng(123)
    xt, _ = shifted(d.x_train, rng)
    xh, _ = shifted(d.x_hold, rng)
    xs, ms = shifted(d.x_test, rng, d.masks)
    return dataclasses.replace(d, x_train=xt, x_hold=xh, x_test=xs, masks=ms)


if __name__ == "__main__":
    suite.load_set = load_set
    argv = sys.argv[1:]
    if "--json" not in argv:
        argv += ["--json", str(Path(__file__).resolve().parent / "results" / f"jitter{J}.json")]
    sys.argv = ["suite.py"] + argv
    suite.main()
