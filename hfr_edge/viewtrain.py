"""Training through a view: the good images cut by the view (ROI, letterbox, tiles) into the inputs
the decoder learns from, then the held-out frames measured through the trained model (reference.py).
`hfr-edge train` calls this in place of loading images and calling fit() itself."""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

from .base import console
from .base.view import View
from .config import ModelConfig, TrainConfig
from .viewdata import ViewBatch, load_view_items

FALLBACK_FRAMES = 64  # no held-out images: statistics from this many training frames (biased low), as fit() does


def _head(b: ViewBatch, n: int) -> ViewBatch:
    n = min(n, len(b.counts))
    k = sum(b.counts[:n])
    return ViewBatch(b.x[:k], b.counts[:n], b.shapes[:n], b.kept[:n], [], None,
                     None if b.regions is None else b.regions[:n])


def fit_view(train_items: Sequence, hold_items: Sequence, view: View, mcfg: ModelConfig, tcfg: TrainConfig,
             weights: Optional[str] = None, progress: bool = True, warn: Callable[[str], None] = console.warn,
             what: str = "dataset"):
    """-> (model, NormStats, summary, extra for the checkpoint: the view and the reference of normal
    frames, kept items, skipped (key, reason))."""
    from .reference import holdout_reference  # noqa: PLC0415 - torch
    from .train import fit  # noqa: PLC0415

    t0 = time.time()
    b = load_view_items(train_items, view, mcfg.image_size, keep_regions=not hold_items, warn=warn)
    bh = load_view_items(hold_items, view, mcfg.image_size, keep_regions=True, warn=warn)
    skipped = b.skipped + bh.skipped
    console.say(f"data: {what}: {len(b.kept)} training + {len(bh.kept)} held-out normal images"
                f"{f', {len(skipped)} skipped' if skipped else ''} ({time.time() - t0:.1f} s)")
    if view.n_tiles > 1 or view.roi is not None:
        console.say(f"view: {view.describe()}: {len(b.x)} training inputs from {len(b.kept)} images")
    model, stats, summary = fit(b.x, bh.x, mcfg, tcfg, weights=weights, progress=progress)
    ref_batch = bh if bh.kept else _head(b, FALLBACK_FRAMES)
    stats, reference = holdout_reference(model, stats, ref_batch, view)
    summary.update(view=view.to_dict(), train_frames=len(b.kept), holdout_frames=len(bh.kept))
    extra = {"view": view.to_dict(), "reference": reference}
    return model, stats, summary, extra, b.kept + bh.kept, skipped
