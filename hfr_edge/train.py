"""`hfr-edge train`: fit the decoder on normal images; the encoder stays frozen.

The encoder is frozen and there is no augmentation, so each image's encoder features are the
same every epoch: they are computed once, and an epoch costs only the decoder's forward and
backward. Held-out normal images then give the normalisation statistics.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from .config import NO_ALIGNMENT_CHOICE, SCORES, ModelConfig, NormStats, TrainConfig
from .base import console
from .base.errors import HfrError

FEATURE_CACHE_BYTES = 6 << 30  # keep encoder features in memory up to this size


def pick_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise HfrError("--device cuda: no CUDA GPU visible to PyTorch; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def split_holdout(n: int, share: float, seed: int) -> tuple:
    """Indices (train, holdout): a seeded shuffle; at least one image each way when n >= 2."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    k = 0 if share <= 0 or n < 2 else min(n - 1, max(1, round(n * share)))
    return sorted(idx[k:]), sorted(idx[:k])


def _threshold(values: np.ndarray) -> float:
    return max(float(values.mean()) + 3.0 * float(values.std()), float(values.max()))


@np.errstate(all="ignore")
def norm_stats(scores: np.ndarray, map_min: float, map_max: Optional[np.ndarray] = None) -> NormStats:
    """Threshold = mean + 3 std of held-out normal scores (at least their max); low = smallest map
    value. `map_max` (each held-out map's max) gives the pixel threshold by the same rule where the
    image score is not the map's max."""
    scores = np.asarray(scores, np.float64)
    mean, std, mx = float(scores.mean()), float(scores.std()), float(scores.max())
    thr = _threshold(scores)
    low = min(float(map_min), thr * 0.5)
    if thr <= low:
        thr = low + 1e-6
    mthr = None
    if map_max is not None:
        mthr = max(_threshold(np.asarray(map_max, np.float64)), low + 1e-6)
    return NormStats(threshold=thr, low=low, map_threshold=mthr, score_mean=mean, score_std=std, score_max=mx,
                     n_images=len(scores))


class _Progress:
    """A progress bar with loss and images/s (rich when attached to a terminal, else plain lines)."""

    def __init__(self, epochs: int, enabled: bool = True):
        self.epochs, self.enabled, self.bar = epochs, enabled, None
        if enabled and console.console().is_terminal:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total} epochs"),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False,
                                console=console.console())
            self.task = self.bar.add_task("train", total=epochs, info="")
            self.bar.start()

    def update(self, epoch: int, loss: float, ips: float):
        info = f"loss {loss:.4f}  {ips:.0f} img/s"
        if self.bar is not None:
            self.bar.update(self.task, completed=epoch, info=info)
        elif self.enabled:
            console.say(f"epoch {epoch}/{self.epochs}  {info}")

    def close(self):
        if self.bar is not None:
            self.bar.stop()


def _encode_all(model, x: np.ndarray, device, batch: int = 32):
    """Encoder features of every image, once: (levels list, deepest), stored on `device`."""
    import torch

    taps, deeps = [[], [], []], []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            t, d = model.encode(torch.from_numpy(x[i:i + batch]).to(device))
            for lvl, f in zip(taps, t):
                lvl.append(f)
            deeps.append(d)
    return [torch.cat(l) for l in taps], torch.cat(deeps)


def raw_maps(model, amap_module, x: np.ndarray, device, batch: int = 32):
    """Raw (un-normalised) anomaly maps and scores of float32 images (N, 3, S, S)."""
    import torch

    maps, scores = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            enc, dec, deep = model(torch.from_numpy(x[i:i + batch]).to(device), True)
            m, s = amap_module(enc, dec, deep)
            maps.append(m.cpu().numpy()[:, 0])
            scores.append(s.cpu().numpy())
    return np.concatenate(maps), np.concatenate(scores)


FEW_HELD_OUT = 30  # below this many held-out images, train says the threshold is a rough guess (the texture
# suite's 12: seed 0's threshold flags 17 of 30 good brick crops from another part of the photograph, 0 of 30 gravel)


def reference_images(x_train: np.ndarray, x_hold: np.ndarray) -> np.ndarray:
    """The normal images the normalisation (and the statistics' scale) is fitted on: the held-out
    ones, else the first 64 training images (biased low: the summary says so)."""
    return x_hold if len(x_hold) else x_train[: min(len(x_train), 64)]


def reference_stats(model, mcfg: ModelConfig, ref: np.ndarray, device) -> NormStats:
    """The normalisation of `mcfg`'s map (its fusion, level weights, score) on the reference normals."""
    from .model import amap_for

    amap = amap_for(mcfg, model).to(device)
    maps, scores = raw_maps(model, amap, ref, device)
    return norm_stats(scores, float(maps.min()), None if mcfg.score == "max" else maps.reshape(len(maps), -1).max(1))


AUTO_COMPONENTS = (1, 2, 3)  # `--stats-components auto` chooses among these
ALIGNED_RATIO = 0.1  # ModelConfig.aligned_level_weights: bottle 12, ELPV 0.31, textures 0.010-0.013
PART_RATIO = 3.0  # ModelConfig.part_level_weights: one part at one place (bottle 12.4, shifted +-8 px 5.8,
# +-16 px 2.2 where the part's weights no longer pay; ELPV's cells 0.31)
ALIGN_BORDER = 2  # grid cells left out at each edge (zero padding makes the border position-specific anyway)
# the stride-8 features are pooled 3x3 before the measure, whatever `stats_pool` says: the ratios
# above were measured so (unpooled, bottle reads 3.04 / 3.00 on the suite's two training splits, at
# the part's threshold, where 3x3 reads 12.4 / 12.3)
ALIGN_POOL = 3


def alignment_ratio(feats, pool: int = 1, border: int = ALIGN_BORDER, outside=None) -> float:
    """How much the training images' features depend on the position: (N, C, h, w) features (pooled
    k x k first; training pools 3x3, ALIGN_POOL) -> the variance of the per-position means across the
    positions over the variance of the images around their position's mean. About 1/N for a stationary
    texture, far above for the same part at the same place. Left out: `border` cells at each edge
    where the grid has more than 2 x border + 1 cells a side, and cells within `border` of `outside`
    ((h, w) bool: where no image has content, e.g. letterbox bars at the same place in every image);
    0 where nothing is left."""
    import torch
    import torch.nn.functional as F

    from .model import neighbourhood_mean

    h, w = int(feats.shape[2]), int(feats.shape[3])
    b = border if min(h, w) > 2 * border + 1 else 0
    keep = torch.zeros(h, w, dtype=torch.bool)
    keep[b:h - b, b:w - b] = True
    if outside is not None and bool(outside.any()):
        near = F.max_pool2d(outside.float()[None, None], 2 * b + 1, stride=1, padding=b)[0, 0] > 0
        keep &= ~near
    if not bool(keep.any()):
        return 0.0

    def chunks():
        for i in range(0, len(feats), 64):
            yield neighbourhood_mean(feats[i:i + 64].double(), pool)[:, :, keep]  # (n, C, kept cells)

    mu = sum(f.sum(0) for f in chunks()) / len(feats)  # (C, P)
    between = ((mu - mu.mean(1, keepdim=True)) ** 2).sum(0).mean()
    within = sum(float(((f - mu) ** 2).sum(1).mean(1).sum()) for f in chunks()) / len(feats)
    return float(between) / max(within, 1e-12)


def constant_cells(images: np.ndarray, grid):
    """(h, w) bool tensor: the grid cells whose every pixel has the same value in all `images` (N, 3, S, S):
    what no image shows, such as letterbox bars of frames that share one aspect ratio."""
    import torch

    same = np.ones(images.shape[2:], bool)
    for i in range(1, len(images), 64):
        same &= (images[i:i + 64] == images[0]).all(axis=(0, 1))
    h, w = grid
    cells = same.reshape(h, same.shape[0] // h, w, same.shape[1] // w).all(axis=(1, 3))
    return torch.from_numpy(cells)


def alignment_kind(ratio: float, part: bool = True) -> str:
    """"texture" below ALIGNED_RATIO, "part" from PART_RATIO (where `part`), else "aligned"."""
    return "texture" if ratio < ALIGNED_RATIO else "part" if part and ratio >= PART_RATIO else "aligned"


def resolve_alignment(model, taps, images: Optional[np.ndarray] = None) -> dict:
    """ModelConfig.aligned_level_weights / part_level_weights: from the training images' cached
    stride-8 features, aligned images take the aligned statistics weights, one part at one place the
    part's and its residual weights (`part_residual_weights`), a texture `texture_stats_tile` (model.cfg
    records them); returns what was measured and chosen, for the training summary ({} where the config
    asks for no such choice).
    `images` (the training images) let the measure leave out what none of them shows (letterbox bars)."""
    import dataclasses

    cfg = model.cfg
    if cfg.aligned_level_weights is None or cfg.stats == "none" or len(taps[1]) < 2:
        return {}
    outside = None if images is None else constant_cells(images, tuple(int(v) for v in taps[1].shape[2:]))
    ratio = alignment_ratio(taps[1], ALIGN_POOL, outside=outside)
    kind = alignment_kind(ratio, cfg.part_level_weights is not None)
    if kind != "texture":
        chosen = cfg.part_level_weights if kind == "part" else cfg.aligned_level_weights
        model.cfg = dataclasses.replace(cfg, stats_level_weights=tuple(chosen))
    if kind == "part" and cfg.part_residual_weights is not None:
        model.cfg = dataclasses.replace(model.cfg, level_weights=tuple(cfg.part_residual_weights))
    if kind == "texture" and cfg.texture_stats_tile is not None:
        model.cfg = dataclasses.replace(model.cfg, stats_tile=tuple(cfg.texture_stats_tile))
    return {"alignment_ratio": round(ratio, 4), "aligned": kind != "texture", "kind": kind,
            "stats_level_weights": list(model.cfg.stats_weights), "level_weights": list(model.cfg.level_weights),
            "stats_tile": list(model.cfg.stats_tile)}


MIN_GROUP = 8  # training images per component at least


def fit_statistics(model, taps, ref: np.ndarray, device, batch: int = 32, held_out: bool = True) -> dict:
    """The normal features' Gaussian from the training images' cached encoder features, then each
    level's residual and distance scaled to a mean of 1 on the reference (held-out) normal images.
    `stats_components` 0 (auto): the count of AUTO_COMPONENTS whose fit gives the held-out normals the
    highest log-likelihood (summed over the map's levels); model.cfg then records it. Without held-out
    images (`held_out` False) auto takes 1. Returns what was chosen, for the training summary."""
    import dataclasses

    import torch

    from .model import cosine_residual, feature_gaussian, stats_levels

    choice, ready = {}, False
    with torch.inference_mode():  # the reference images encoded once: for auto's likelihoods and for the scales
        coded = [model.encode(torch.from_numpy(ref[i:i + batch]).to(device)) for i in range(0, len(ref), batch)]
    if model.cfg.stats_components == 0:
        scores, fitted = {}, {}
        if held_out:
            hold = [torch.cat([t[lvl] for t, _ in coded]) if u else None
                    for lvl, u in enumerate(stats_levels(model.cfg))]
            for k in AUTO_COMPONENTS:
                g = feature_gaussian(dataclasses.replace(model.cfg, stats_components=k)).to(device)
                try:
                    g.fit(taps, min_group=MIN_GROUP)
                except ValueError:  # too few images for k groups
                    break
                scores[k], fitted[k] = sum(v for v in g.log_likelihood(hold) if v is not None), g
        k = max(scores, key=scores.get) if scores else 1
        model.cfg = dataclasses.replace(model.cfg, stats_components=k)
        ready = k in fitted  # the chosen count's fit, kept
        if ready:
            model.gauss = fitted[k]
        choice = {"stats_components": k, "heldout_loglik": {str(c): round(v, 3) for c, v in scores.items()}
                  if scores else "no held-out images: 1"}
    if not ready:  # for the levels model.cfg weighs now (the alignment's choice may have moved them)
        model.gauss = feature_gaussian(model.cfg).to(device)
        model.gauss.fit(taps)
    used = model.gauss.used
    if model.gauss.variance_kept:  # per level, [directions, channels, share of the variance they keep]
        channels = [int(t.shape[1]) for t in taps]
        choice["stats_dims"] = {str(4 << i): [model.gauss.dims[i], channels[i], round(v, 4)]
                                for i, v in sorted(model.gauss.variance_kept.items())}
    rec, dist = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    with torch.inference_mode():
        for enc, deep in coded:
            dec = model.decoder(deep)
            dists = model.gauss([e if u else None for e, u in zip(enc, used)])
            for lvl, (e, d, m) in enumerate(zip(enc, dec, dists)):
                rec[lvl] += float(cosine_residual(e, d).mean()) * len(e)
                dist[lvl] += float(m.mean()) * len(e) if m is not None else len(e)  # unused: scale 1
    means = torch.stack([rec, dist]) / len(ref)
    model.gauss.level_scale.copy_((1.0 / means.clamp_min(1e-12)).float())
    return choice


# the one-class formats' memory weights (ModelConfig.memory_weight, image_memory_weight): whole images of
# another class, where a memory of the training images ranks a rare normal shape better than a Gaussian
ONE_CLASS_MEMORY = {"memory_weight": 0.5, "image_memory_weight": 0.75}
MEMORY_BYTES = 32 << 20  # at most this much memory in the graph: beyond, evenly spaced training images


def fit_memory(model, taps, deep, ref: np.ndarray, device, held_out: bool = True, batch: int = 32) -> dict:
    """ModelConfig.memory_weight / image_memory_weight: keep the training images' stride-16 and deepest
    features (`taps`, `deep`: all of them, or as many as MEMORY_BYTES allow), then scale each distance
    on the reference (held-out) normals: its mean off, its spread to the map's score's spread, times its
    weight. Without held-out images the memory is left out (its own images would read as distance 0).
    Returns what was kept, for the training summary."""
    import dataclasses

    import torch

    from .model import amap_for, feature_memory

    cfg = model.cfg
    weights = (cfg.memory_weight, cfg.image_memory_weight)
    if not any(weights):
        return {}
    if not held_out:
        model.cfg, model.memory = dataclasses.replace(cfg, memory_weight=0.0, image_memory_weight=0.0), None
        return {"memory": "no held-out images to scale it on: none"}
    n = len(deep)
    per_image = feature_memory(dataclasses.replace(cfg, memory_images=1)).bytes_per_image
    keep = min(n, max(1, MEMORY_BYTES // per_image))
    idx = torch.linspace(0, n - 1, keep).round().long().to(deep.device)
    model.cfg = dataclasses.replace(cfg, memory_images=keep)
    memory = feature_memory(model.cfg).to(device)
    memory.fit(taps[2][idx], deep[idx])
    plain = amap_for(dataclasses.replace(model.cfg, memory_images=0), model).to(device)  # the map's score alone
    scores, dists = [], [[], []]
    with torch.inference_mode():
        for i in range(0, len(ref), batch):
            enc, dec, d = model(torch.from_numpy(ref[i:i + batch]).to(device), True)
            scores.append(plain(enc, dec, d)[1].double())
            for out, v in zip(dists, memory.distances(enc[2], d)):
                if v is not None:
                    out.append(v.double())
    spread = float(torch.cat(scores).std(unbiased=False))
    for i, (w, v) in enumerate(zip(weights, dists)):
        if w:
            v = torch.cat(v)
            memory.offset[i] = float(v.mean())
            memory.coef[i] = w * spread / max(float(v.std(unbiased=False)), 1e-12)
    model.memory = memory
    return {"memory_images": keep}


def refit_statistics(model, int8_levels, x: np.ndarray, device="cpu", components: Optional[int] = None) -> None:
    """The statistics fitted again on the features an int8 graph computes for the training images x
    (float32 (N, 3, S, S)): `int8_levels` holds them per level, (N, C, h, w), None where the statistics
    do not read a level. Their smallest-variance directions then allow for the int8 encoder's rounding,
    which they would otherwise magnify (docs/benchmarks.md, Speed, "Twelfth session"). The images are grouped by
    their float stride-16 features, as training grouped them, and each level's distance keeps its
    scale: the refitted one on the int8 features of x has the mean the trained one has on their float
    features (both fitted on these images, so the two means are alike in kind). `components`: that
    many Gaussians per level instead of the checkpoint's (model.cfg then records the count)."""
    import dataclasses

    import torch

    from .model import feature_gaussian

    trained = g = model.gauss
    if components is not None and components != g.components:
        cfg = dataclasses.replace(model.cfg, stats_components=int(components))
        g = feature_gaussian(cfg).to(device)
        g.level_scale.copy_(trained.level_scale)
    if any(u and q is None for q, u in zip(int8_levels, g.used)):
        raise ValueError("int8 features missing for a level the statistics read")
    floats = _encode_all(model, x, device)[0]
    levels = [torch.from_numpy(q).to(device) if u else f for f, q, u in zip(floats, int8_levels, g.used)]
    with torch.inference_mode():
        before = trained([f if u else None for f, u in zip(floats, g.used)])
    try:
        g.fit(levels, group_by=floats[-1])
    except ValueError:
        raise HfrError(f"{len(x)} frames are too few to refit {g.components} groups of statistics; "
                       f"give more frames (-n) of the training images") from None
    with torch.inference_mode():
        after = g([f if u else None for f, u in zip(levels, g.used)])
        for lvl, (b, a) in enumerate(zip(before, after)):
            if b is not None:
                g.level_scale[1, lvl] *= float(b.mean()) / max(float(a.mean()), 1e-12)
    if g is not trained:
        model.gauss, model.cfg = g, dataclasses.replace(model.cfg, stats_components=g.components)


def fit(x_train: np.ndarray, x_hold: np.ndarray, mcfg: ModelConfig, tcfg: TrainConfig,
        weights: Optional[str] = None, progress: bool = True):
    """Train the decoder on float32 images (N, 3, S, S); returns (model, NormStats, summary)."""
    import torch

    from .model import HFRAE, ReconstructionLoss

    torch.manual_seed(tcfg.seed)
    device = pick_device(tcfg.device)
    model = HFRAE(mcfg, weights=weights, statistics=False).to(device)  # fit_statistics makes them
    t0 = time.time()
    est = x_train.nbytes * 1.2  # feature maps are about the size of the images
    if est > FEATURE_CACHE_BYTES:
        raise HfrError(f"{len(x_train)} training images at {mcfg.image_size}px need about {est / 2**30:.1f} GiB of "
                       f"cached features; lower --image-size or use fewer images")
    taps, deep = _encode_all(model, x_train, device)
    # the kind of surface, from the encoder's features (frozen: the same after training): the statistics'
    # levels and, on one part at one place, the part's decoder, built as if its widths had been asked for
    chosen = resolve_alignment(model, taps, x_train) if model.cfg.stats != "none" else {}
    if chosen.get("kind") == "part" and mcfg.part_decoder_widths is not None:
        widths = tuple(mcfg.part_decoder_widths)
        chosen["decoder_widths"] = list(widths)
        if widths != tuple(mcfg.decoder_widths):
            torch.manual_seed(tcfg.seed)
            model = HFRAE(replace(model.cfg, decoder_widths=widths), weights=weights,
                          statistics=False).to(device)
    t_enc = time.time() - t0
    opt = torch.optim.Adam(model.decoder.parameters(), lr=tcfg.lr, betas=tuple(tcfg.betas))
    steps_per_epoch = max(1, len(x_train) // min(tcfg.batch_size, len(x_train)))
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tcfg.epochs * steps_per_epoch)
             if tcfg.schedule == "cosine" else None)
    loss_fn = ReconstructionLoss()
    n, bs = len(x_train), min(tcfg.batch_size, len(x_train))
    gen = torch.Generator().manual_seed(tcfg.seed)
    bar = _Progress(tcfg.epochs, progress)
    model.train()
    loss_hist: List[float] = []
    try:
        for epoch in range(1, tcfg.epochs + 1):
            te, tot, seen = time.time(), 0.0, 0
            perm = torch.randperm(n, generator=gen).to(device)
            for i in range(0, n - bs + 1, bs):  # drop the ragged last batch (BatchNorm on 1 image)
                b = perm[i:i + bs]
                dec = model.decoder(deep[b])
                loss = loss_fn([t[b] for t in taps], dec)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                tot += float(loss.detach()) * len(b)
                seen += len(b)
            loss_hist.append(tot / max(seen, 1))
            if not math.isfinite(loss_hist[-1]):
                raise HfrError(f"training diverged at epoch {epoch} (loss {loss_hist[-1]}); lower --lr (now {tcfg.lr})", 1)
            bar.update(epoch, loss_hist[-1], seen / max(time.time() - te, 1e-9))
    finally:
        bar.close()
    model.eval()
    ref = reference_images(x_train, x_hold)
    if model.cfg.stats != "none":
        chosen.update(fit_statistics(model, taps, ref, device, held_out=len(x_hold) > 0))
    chosen.update(fit_memory(model, taps, deep, ref, device, held_out=len(x_hold) > 0))
    t_train = time.time() - t0
    stats = reference_stats(model, model.cfg, ref, device)  # model.cfg: with what auto chose
    summary = {"epochs": tcfg.epochs, "final_loss": loss_hist[-1], "loss_history": loss_hist,
               "train_images": int(n), "holdout_images": int(len(x_hold)),
               "stats_from": "holdout" if len(x_hold) else "training images (no holdout: biased low)",
               "encode_seconds": round(t_enc, 2), "train_seconds": round(t_train, 2), "device": str(device),
               "train_config": tcfg.to_dict(), **({"statistics": chosen} if chosen else {})}
    return model.cpu(), stats, summary


def auto_score(fmt: str, local: str = "top") -> str:
    """The one-class formats' anomalies are whole images of another class: the map's mean ranks
    them better than its max (benchmarks/oneclass.py); defects are local: `local`, the config's
    ("top" by default, "max" under `--preset paper`)."""
    from .data import ONE_CLASS_FORMATS

    return "mean" if fmt in ONE_CLASS_FORMATS else local if local in ("max", "top") else "top"


def parse_components(text: str) -> int:
    """--stats-components: "auto" -> 0, else a count 1-8."""
    if text.strip().lower() == "auto":
        return 0
    try:
        k = int(text)
    except ValueError:
        k = -1
    if not 1 <= k <= 8:
        raise HfrError(f"--stats-components {text!r} must be auto or a count from 1 to 8")
    return k


def parse_memory(text: str) -> Optional[dict]:
    """--memory: "auto" -> None (the one-class formats keep one), "none" -> weights 0, "A,B" -> the
    nearest-position and image weights."""
    t = text.strip().lower()
    if t == "auto":
        return None
    if t == "none":
        return {"memory_weight": 0.0, "image_memory_weight": 0.0}
    try:
        a, b = (float(v) for v in t.split(","))
    except ValueError:
        a = b = -1.0
    if not (a >= 0 and b >= 0):
        raise HfrError(f"--memory {text!r} must be auto, none or two weights >= 0 separated by a comma, e.g. 0.5,0.5")
    return {"memory_weight": a, "image_memory_weight": b}


def parse_triple(text: str, option: str, kind=float):
    try:
        w = tuple(kind(v) for v in text.split(","))
    except ValueError:
        w = ()
    if len(w) != 3:
        example = "0.25,1,1" if kind is float else "256,128,64"
        raise HfrError(f"{option} {text!r} must be three {'numbers' if kind is float else 'integers'} separated by "
                       f"commas, e.g. {example}")
    return w


def train_checkpoint(data: str, output: str, mcfg: ModelConfig, tcfg: TrainConfig, score: str = "auto",
                     fmt: str = "auto", normal_class: Optional[str] = None, test: Optional[str] = None,
                     weights: Optional[str] = None, view=None, memory: str = "auto") -> Tuple[NormStats, dict]:
    """`hfr-edge train`: open the dataset, fit on its normal images, write the checkpoint to `output`.
    score "auto" picks the image score from the dataset's format (auto_score); else mcfg.score stands.
    memory "auto": the one-class formats keep a memory of the training images (ONE_CLASS_MEMORY); else
    (or any other value: the weights were given) mcfg's memory weights stand.
    `view` (base.view.View): where in each image the model looks; default: the whole image, squashed."""
    from .base.view import View
    from .checkpoint import save_checkpoint
    from .data import ONE_CLASS_FORMATS, open_dataset

    if score not in ("auto",) + SCORES:
        raise HfrError(f"--score {score!r} must be auto, {', '.join(SCORES)}")
    out = Path(output)
    if out.is_dir():
        raise HfrError(f"-o {out}: is a folder; give a file name such as {out / 'ckpt.pt'}")
    if not out.parent.is_dir():
        raise HfrError(f"-o {out}: folder {out.parent} does not exist; create it first")
    ds = open_dataset(data, fmt, normal_class=normal_class, test_dir=test)
    if score == "auto":
        mcfg = replace(mcfg, score=auto_score(ds.format, mcfg.score))
    if ds.format in ONE_CLASS_FORMATS:  # whole images of another class: the one-class protocol's weights stand
        mcfg = replace(mcfg, **NO_ALIGNMENT_CHOICE)
        if memory == "auto":
            mcfg = replace(mcfg, **ONE_CLASS_MEMORY)
    tr_idx, ho_idx = split_holdout(len(ds.train), tcfg.holdout, tcfg.seed)
    t0 = time.time()
    model, stats, summary, extra, kept, skipped = fit_view(
        [ds.train[i] for i in tr_idx], [ds.train[i] for i in ho_idx], view or View(), mcfg, tcfg, weights,
        what=f"{ds.format} {ds.root}")
    summary.update(data=str(Path(data).resolve()), format=ds.format, normal_class=ds.normal_class,
                   skipped=[k for k, _ in skipped], seed=tcfg.seed, total_seconds=round(time.time() - t0, 2))
    save_checkpoint(out, model, stats, summary, extra=extra)
    console.say(f"wrote {out}: loss {summary['final_loss']:.4f}, threshold {stats.threshold:.4f} "
                f"({stats.n_images} held-out normals: mean {stats.score_mean:.4f}, max {stats.score_max:.4f}), "
                f"{summary['total_seconds']:.0f} s")
    if stats.n_images < FEW_HELD_OUT:
        console.say(f"threshold: mean + 3 std of {stats.n_images} held-out images is a rough guess at the tail of good "
                    f"images; check what it flags with `hfr-edge eval {out} DATA` on labelled images (it also "
                    f"prints the F1-max threshold) and give `run --threshold` where it misses")
    chosen = summary.get("statistics", {})
    if "memory_images" in chosen:
        console.say(f"memory: the features of {chosen['memory_images']} training images, for the image score "
                    f"(weights {mcfg.memory_weight:g} / {mcfg.image_memory_weight:g}; --memory)")
    if "stats_components" in chosen:
        k = chosen["stats_components"]
        console.say(f"statistics: {k} Gaussian{'s' if k > 1 else ''} per level (--stats-components auto)")
    for stride, (k, c, share) in chosen.get("stats_dims", {}).items():
        console.say(f"statistics: stride {stride} in its {k} leading directions of {c} channels "
                    f"({share:.0%} of the variance; --stats-dims)")
    if "aligned" in chosen:
        kind = {"texture": "a texture", "aligned": "aligned", "part": "one part at one place"}[chosen["kind"]]
        weights = ",".join(f"{w:g}" for w in chosen["stats_level_weights"])
        part = f", a part from {PART_RATIO:g}" if mcfg.part_level_weights is not None else ""
        residual = (f", the residual's {','.join(f'{w:g}' for w in chosen['level_weights'])}"
                    if chosen["kind"] == "part" and mcfg.part_residual_weights is not None else "")
        tiles = (f", covariances shared by tiles of {','.join(map(str, chosen['stats_tile']))}"
                 if chosen["kind"] == "texture" and mcfg.texture_stats_tile is not None else "")
        decoder = (f", the decoder {','.join(map(str, chosen['decoder_widths']))}" if "decoder_widths" in chosen else "")
        options = (["--stats-level-weights"] + (["--level-weights"] if residual else []) + (["--stats-tile"] if tiles else [])
                   + (["--decoder-widths"] if decoder else []))
        console.say(f"statistics: the training images read as {kind} (alignment {chosen['alignment_ratio']:.3g}; "
                    f"aligned from {ALIGNED_RATIO:g}{part}): level weights {weights}{residual}{tiles}{decoder} "
                    f"({', '.join(options[:-1]) + ' and ' + options[-1] if len(options) > 1 else options[0]} set them)")
    return stats, summary


# -- training through a view (base/view.py): ROI, letterbox, tiles; then the reference of normal frames ----
FALLBACK_FRAMES = 64  # no held-out images: the reference from this many training frames (biased low), as fit() does


def normalised_outputs(model, stats: NormStats, x: np.ndarray, batch: int = 32) -> Tuple[np.ndarray, np.ndarray]:
    """Normalised maps (N, S, S) and scores (N,) through DeployModel, as the exported graph gives them."""
    import torch

    from .model import DeployModel

    deploy = DeployModel(model, stats).eval()
    maps, scores = [], []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            m, s = deploy(torch.from_numpy(x[i:i + batch]))
            maps.append(m.numpy()[:, 0])
            scores.append(s.numpy())
    return np.concatenate(maps), np.concatenate(scores)


def frame_norm_stats(stats: NormStats, maps: np.ndarray, scores: np.ndarray, counts: List[int],
                     score_kind: str) -> NormStats:
    """Tile statistics -> frame statistics: the threshold from held-out FRAME scores (each its largest
    tile's), so a normal frame of many tiles is not flagged for its noisiest tile. Other fields stay."""
    from .viewdata import frame_scores

    raw = frame_scores(stats.low + np.asarray(scores, np.float64) / stats.scale, counts).astype(np.float64)
    map_max = None
    if score_kind != "max":
        tile_max = stats.low + maps.reshape(len(maps), -1).max(1).astype(np.float64) / stats.map_scale
        map_max = frame_scores(tile_max, counts).astype(np.float64)
    new = norm_stats(raw, stats.low, map_max)
    return replace(stats, threshold=new.threshold, low=new.low, map_threshold=new.map_threshold,
                   score_mean=new.score_mean, score_std=new.score_std, score_max=new.score_max, n_images=new.n_images)


def fit_view(train_items, hold_items, view, mcfg: ModelConfig, tcfg: TrainConfig, weights: Optional[str] = None,
             progress: bool = True, what: str = "dataset"):
    """Load the good images through `view` (its inputs: what the decoder learns from), fit(), then measure
    the held-out frames through the trained model: frame statistics where a frame is several tiles, and
    the reference of normal frames (scores, scene statistics) the drift watch compares a camera with.
    -> (model, NormStats, summary, extra for the checkpoint, kept items, skipped (key, reason))."""
    from .base import scene
    from .viewdata import frame_scores, head, load_view_items, mixed_letterbox, squashed_note

    t0 = time.time()
    b = load_view_items(train_items, view, mcfg.image_size, keep_regions=not hold_items)
    bh = load_view_items(hold_items, view, mcfg.image_size, keep_regions=True)
    skipped = b.skipped + bh.skipped
    console.say(f"data: {what}: {len(b.kept)} training + {len(bh.kept)} held-out normal images"
                f"{f', {len(skipped)} skipped' if skipped else ''} ({time.time() - t0:.1f} s)")
    if view.n_tiles > 1 or view.roi is not None:
        console.say(f"view: {view.describe()}: {len(b.x)} training inputs from {len(b.kept)} images")
    shapes = b.shapes + bh.shapes
    mixed, squashed = mixed_letterbox(view, shapes), squashed_note(view, shapes)
    if mixed:
        console.warn(mixed)
    if squashed:
        console.say(squashed)
    model, stats, summary = fit(b.x, bh.x, mcfg, tcfg, weights=weights, progress=progress)
    ref = bh if bh.kept else head(b, FALLBACK_FRAMES)
    maps, scores = normalised_outputs(model, stats, ref.x)
    if view.n_tiles > 1:
        stats = frame_norm_stats(stats, maps, scores, ref.counts, mcfg.score)
        maps, scores = normalised_outputs(model, stats, ref.x)
    reference = scene.reference(ref.regions, frame_scores(scores, ref.counts), scene.analysis_side(view, mcfg.image_size))
    summary.update(view=view.to_dict(), train_frames=len(b.kept), holdout_frames=len(bh.kept))
    return model, stats, summary, {"view": view.to_dict(), "reference": reference}, b.kept + bh.kept, skipped
