"""HFR-AE: frozen encoder, trained decoder, loss and anomaly-map generator as small modules.

Everything after the decoder (residuals, upsampling, sum, Gaussian smoothing, score,
normalisation) is torch ops in `AnomalyMap` / `DeployModel`, so it traces into the one
exported graph; `DeployModel` is the explicit export wrapper that fixes the I/O contract.
"""

from __future__ import annotations

import copy
import math
import re
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import SPECS, BackboneSpec, load_backbone
from .base.errors import HfrError
from .config import ModelConfig, NormStats


def _conv_bn_relu(cin, cout, k=3):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _separable(cin, cout, bias=False):
    """3x3 depthwise then 1x1 pointwise: a 3x3 convolution's reach at about 1/9 of its cost."""
    return [nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=bias)]


class _UpStage(nn.Module):
    """x2 upsampling (transposed conv) then `convs` 3x3 convs; a head maps to the level's channels.

    Kernel 4 (padding 1) overlaps neighbouring input pixels; kernel 2 maps each input pixel to its
    own 2x2 block, whose seams show up as a grid in the residuals of normal images unless a 3x3
    convolution follows. `separable`: the 3x3 convolutions of body and head are depthwise + pointwise
    (_separable), the dense decoder's cost cut by about 6x at equal widths."""

    def __init__(self, cin, width, cout, convs: int, up_kernel: int, separable: bool = False):
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, width, up_kernel, stride=2, padding=(up_kernel - 2) // 2,
                                                   bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        if separable:
            self.body = nn.Sequential(*[nn.Sequential(*_separable(width, width), nn.BatchNorm2d(width),
                                                      nn.ReLU(inplace=True)) for _ in range(convs)])
            self.head = nn.Sequential(*_separable(width, cout, bias=True))
        else:
            self.body = nn.Sequential(*[_conv_bn_relu(width, width) for _ in range(convs)])
            self.head = nn.Conv2d(width, cout, 3, padding=1)

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.body(self.up(x))
        return h, self.head(h)


class Decoder(nn.Module):
    """Mirror of the encoder: stride 32 -> 16 -> 8 -> 4, one output head per level."""

    def __init__(self, spec: BackboneSpec, widths: Sequence[int], convs: int, bottleneck: int, up_kernel: int,
                 tap16: str, separable: bool):  # no defaults: ModelConfig holds them
        super().__init__()
        w16, w8, w4 = widths
        c4, c8, c16 = (t.channels for t in spec.levels(tap16))
        cin = spec.deep.channels
        # optional 1x1 squeeze of the deepest features: less room to reconstruct what is not normal
        self.squeeze = _conv_bn_relu(cin, bottleneck, 1) if bottleneck else nn.Identity()
        self.s16 = _UpStage(bottleneck or cin, w16, c16, convs, up_kernel, separable)
        self.s8 = _UpStage(w16, w8, c8, convs, up_kernel, separable)
        self.s4 = _UpStage(w8, w4, c4, convs, up_kernel, separable)

    def forward(self, deep) -> List[torch.Tensor]:  # deep: (B, C32, H/32, W/32)
        h, r16 = self.s16(self.squeeze(deep))  # (B, C16, H/16, W/16)
        h, r8 = self.s8(h)  # (B, C8, H/8, W/8)
        _, r4 = self.s4(h)  # (B, C4, H/4, W/4)
        return [r4, r8, r16]


RESIDUAL_EPS = 1e-4  # a normal float16 number (1e-6 and its square are subnormal or 0 there)


def channel_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum along channels, (B, C, h, w) -> (B, 1, h, w), as a 1x1 convolution with a constant kernel of
    ones: the runtimes' convolution kernels do it in one blocked pass, where a ReduceSum across the
    channel axis of an NCHW tensor is a strided walk (ONNX Runtime: about 2 ms of the whole graph's 29)."""
    return F.conv2d(x, torch.ones(1, int(x.shape[1]), 1, 1, dtype=x.dtype, device=x.device))


def _peak(x: torch.Tensor, eps: float) -> torch.Tensor:
    """The largest |component| of each image, (B, 1, 1, 1); Neg + Max + ReduceMax (no Abs op)."""
    return torch.amax(torch.maximum(x, -x), dim=(1, 2, 3), keepdim=True).clamp(min=eps)


def cosine_distance(a: torch.Tensor, b: torch.Tensor, eps: float = RESIDUAL_EPS) -> torch.Tensor:
    """1 - cosine similarity along channels in the inputs' own precision: (B, C, h, w) x2 -> (B, 1, h, w).
    Overflow-free in float16, which a weakly typed TensorRT build may choose for the tail: each image is
    first divided by its largest |component| (cosine does not change), so every sum of squares is at
    most C, far below float16's 65,504 for any backbone here (WideResNet-50's 1,024 channels included);
    the three channel sums (a.b, a.a, b.b) are 1x1 convolutions (channel_sum)."""
    a, b = a / _peak(a, eps), b / _peak(b, eps)
    norms = torch.sqrt(channel_sum(a * a)).clamp(min=eps) * torch.sqrt(channel_sum(b * b)).clamp(min=eps)
    return 1.0 - channel_sum(a * b) / norms


def cosine_residual(a: torch.Tensor, b: torch.Tensor, eps: float = RESIDUAL_EPS) -> torch.Tensor:
    """cosine_distance in float32 (the graph's fusion tail is float32)."""
    return cosine_distance(a.float(), b.float(), eps)


LOCAL_MIX = 0.2  # `local`: share of the level's covariance (all positions') in each position's
_STATS_KEY = re.compile(r"(mean|white|proj)(\d+)(_\d+)?")  # a FeatureGaussian buffer: level, component


def neighbourhood_mean(f: torch.Tensor, k: int) -> torch.Tensor:
    """f (B, C, h, w) averaged over each position's k x k neighbourhood (borders: over the part inside
    the grid); k = 1: f. How the statistics pool a level's features (`stats_pool`)."""
    return f if k == 1 else F.avg_pool2d(f, k, stride=1, padding=k // 2, count_include_pad=False)


class FeatureGaussian(nn.Module):
    """The normal images' encoder features as one Gaussian per level, fitted after training, in one
    of three kinds: "shared" (one mean and one covariance for all positions), "position" (a mean per
    position, one covariance) or "local" (a mean and a covariance per position, as PaDiM's; each
    position's covariance mixed with the level's, LOCAL_MIX, since a few hundred images estimate a
    covariance per position poorly). Each covariance is shrunk towards a multiple of the identity and
    stored as its whitening matrix W (W W^T = its inverse). forward: levels -> per level the squared
    Mahalanobis distance over the channel count, (B, 1, h, w): about 1 on normal features. Where the
    decoder cannot reconstruct a texture, the texture's statistics still say what is normal, at the
    cost of one 1x1 convolution per level ("local": one (C, C) product per position).

    `tile` (per level, "local" only; `stats_tile`): the t x t positions that share one covariance, each
    keeping its own mean; t^2 fewer matrices to read per frame (tile_rows / untile order the positions).

    `used` (one flag per level; None: all) keeps statistics only for the levels the map weighs: a
    level left out is neither fitted nor stored (bottle's part map uses stride 4 alone, and its
    checkpoint was 110 MB, 58 of them the Gaussians of strides 8 and 16).

    `dims` (per level, `stats_dims`; 0: all channels): the Gaussian of the level's features projected
    on their k leading principal directions (over all training images and positions), one more 1x1
    convolution (k, C) in front of the pooling, fitted by `fit` with the rest."""

    KINDS = ("shared", "position", "local")

    def __init__(self, channels: Sequence[int], grids: Sequence[Tuple[int, int]], kind: str,
                 pool: Sequence[int] = (1, 1, 1), components: int = 1, used: Optional[Sequence[bool]] = None,
                 tile: Sequence[int] = (1, 1, 1), dims: Sequence[int] = (0, 0, 0)):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown statistics kind {kind!r}")
        # components 0 (auto, before training resolves it) holds one
        self.kind, self.levels, self.components = kind, len(channels), max(1, int(components))
        self.pool = [int(k) for k in pool]
        # "local": per level, the t x t positions that share one covariance (its mean stays per position)
        self.tile = [int(t) if kind == "local" else 1 for t in tile]
        for t, (h, w) in zip(self.tile, grids):
            if h % t or w % t:
                raise ValueError(f"a statistics tile of {t} does not divide a grid of {h} x {w}")
        self.used = [True] * self.levels if used is None else [bool(u) for u in used]
        self.dims = [int(k) for k in dims]
        self.variance_kept = {}  # per projected level, the share of its features' variance it keeps (set by fit)
        for i, (c, (h, w), t) in enumerate(zip(channels, grids, self.tile)):
            if not self.used[i]:
                continue
            if self.dims[i] > c:
                raise ValueError(f"statistics of {self.dims[i]} dimensions at a level of {c} channels")
            if self.dims[i]:  # the projection (a 1x1 convolution kernel); the Gaussian lives in its k dimensions
                self.register_buffer(f"proj{i}", torch.eye(c)[:self.dims[i]].view(self.dims[i], c, 1, 1).clone())
                c = self.dims[i]
            per_position = kind != "shared"
            for k in range(self.components):  # component 0 keeps the names of a one-component Gaussian
                sfx = f"_{k}" if k else ""
                self.register_buffer(f"mean{i}{sfx}", torch.zeros(1, c, h if per_position else 1, w if per_position else 1))
                # shared / position: a 1x1 convolution kernel (C_out, C_in, 1, 1) = W^T; local: per
                # position W, (h w, C, C), so z = y @ W for the row vector y of a position; with tiles
                # per tile, (h w / t^2, C, C), the tiles in row-major order
                white = (torch.eye(c).expand(h * w // (t * t), c, c).clone() if kind == "local"
                         else torch.eye(c).view(c, c, 1, 1))
                self.register_buffer(f"white{i}{sfx}", white)
        # per level, 1 / the mean residual and 1 / the mean distance on held-out normal images (set by train)
        self.register_buffer("level_scale", torch.ones(2, self.levels))

    @torch.no_grad()
    def fit(self, levels: Sequence[torch.Tensor], shrink: float = 0.01, mix: float = LOCAL_MIX,
            min_group: int = 2, group_by: Optional[torch.Tensor] = None) -> None:
        """levels: encoder features of the training images, (N, C, h, w) per level; every covariance
        shrunk towards a multiple of the identity by `shrink`, or by channels / samples where that is
        more (a level of 112 channels seen at 160 positions in all: 0.7; bottle's: 112 / 48,000, so
        0.01; for "local" the samples are the level's, after the mix with the level's covariance).
        With several components the images are first grouped (k-means on the deepest level's mean
        feature; `group_by`: other features of the same images to group them by) and each group gets its
        own Gaussian."""
        groups = image_groups(levels[-1] if group_by is None else group_by, self.components, min_group)
        for i, f in enumerate(levels):
            if not self.used[i]:
                continue
            if self.dims[i]:
                self._fit_projection(f, i)
            f = self._pooled(f, i).double()
            for k, idx in enumerate(groups):
                mean, white = self._fit_one(f[idx], shrink, mix, self.tile[i])
                sfx = f"_{k}" if k else ""
                getattr(self, f"mean{i}{sfx}").copy_(mean)
                getattr(self, f"white{i}{sfx}").copy_(white)

    def _fit_projection(self, f: torch.Tensor, i: int) -> None:
        """Level i's projection: the k leading eigenvectors of its pooled features' covariance over all
        images and positions, the largest first."""
        f = neighbourhood_mean(f.double(), self.pool[i])
        x = f.permute(1, 0, 2, 3).reshape(f.shape[1], -1)
        x = x - x.mean(1, keepdim=True)
        values, vectors = torch.linalg.eigh(x @ x.T)  # ascending
        k = self.dims[i]
        getattr(self, f"proj{i}").copy_(vectors[:, -k:].flip(1).T.reshape(k, -1, 1, 1))
        self.variance_kept[i] = float(values[-k:].sum() / values.sum().clamp_min(1e-30))

    def _fit_one(self, f: torch.Tensor, shrink: float, mix: float, t: int = 1):
        n, c, h, w = f.shape
        mean = f.mean((0, 2, 3), keepdim=True) if self.kind == "shared" else f.mean(0, keepdim=True)
        x = (f - mean).permute(2, 3, 0, 1).reshape(h * w, n, c)  # (positions, N, C)
        sums = x.transpose(1, 2) @ x  # per position, (P, C, C)
        cov = sums.sum(0, keepdim=True) / max(n * h * w - 1, 1)  # the level's (all positions'), (1, C, C)
        if self.kind == "local":  # per tile: its positions' sums about their own means, pooled
            sums = sums.reshape(h // t, t, w // t, t, c, c).sum((1, 3)).reshape(-1, c, c) if t > 1 else sums
            cov = (1.0 - mix) * sums / max(t * t * (n - 1), 1) + mix * cov
        # few samples per channel bias the smallest eigenvalues towards 0 (the whitening would then
        # magnify noise, int8 rounding included): shrink by at least channels / samples
        amount = max(shrink, c / max(n * h * w, 1))
        scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[:, None, None]
        cov = cov + amount * scale * torch.eye(c, dtype=cov.dtype)
        chol = torch.linalg.cholesky(torch.linalg.inv(cov))  # inv(cov) = L L^T: W = L, z = y L
        white = chol if self.kind == "local" else chol[0].T.contiguous().view(c, c, 1, 1)
        return mean.float(), white.float()

    def _component(self, i: int, k: int, dtype: torch.dtype):
        """Level i's component k: (mean, whitening), in `dtype`."""
        sfx = f"_{k}" if k else ""
        m, w = getattr(self, f"mean{i}{sfx}"), getattr(self, f"white{i}{sfx}")
        return (m, w) if m.dtype == dtype else (m.to(dtype), w.to(dtype))

    def _sq_distance(self, f: torch.Tensor, mean: torch.Tensor, white: torch.Tensor, t: int = 1) -> torch.Tensor:
        """Squared Mahalanobis distance (summed over channels) of the pooled features f (B, C, h, w)
        from one component: (B, 1, h, w); t: the level's tile."""
        y = f - mean
        h, w = (int(v) for v in y.shape[2:])
        if self.kind == "local":  # one (C, C) product per position (tile): (T, t^2 B, C) @ (T, C, C)
            z = torch.matmul(tile_rows(y, t), white)
            return untile((z * z).sum(-1), h, w, t)
        z = F.conv2d(y, white)  # (B, C, h, w)
        return channel_sum(z * z)

    @torch.no_grad()
    def log_likelihood(self, levels: Sequence[Optional[torch.Tensor]]) -> List[Optional[float]]:
        """Per level, the mean over images and positions of the log-density of `levels` (held-out
        normals' features) under the fitted Gaussian, up to the constant -C/2 log(2 pi); with several
        components, the likeliest one's (equal weights). None where a level is None."""
        out = []
        for i, f in enumerate(levels):
            if f is None or not self.used[i]:
                out.append(None)
                continue
            f = self._pooled(f.float(), i).double()
            h, w = (int(v) for v in f.shape[2:])
            best = None
            for k in range(self.components):
                mean, white = self._component(i, k, torch.float64)
                if self.kind == "local":  # log det of the inverse covariance per position, (1, 1, h, w)
                    t = self.tile[i]
                    logdet = 2.0 * torch.log(torch.diagonal(white, dim1=-2, dim2=-1)).sum(-1)  # per tile
                    logdet_inv = untile(logdet[:, None].expand(-1, t * t), h, w, t)
                else:
                    logdet_inv = 2.0 * torch.log(torch.diagonal(white[:, :, 0, 0])).sum()
                lk = 0.5 * (logdet_inv - self._sq_distance(f, mean, white, self.tile[i])) - math.log(self.components)
                best = lk if best is None else torch.maximum(best, lk)
            out.append(float(best.mean()))
        return out

    def _pooled(self, f: torch.Tensor, level: int) -> torch.Tensor:
        """A level's features as its Gaussian reads them: projected (`dims`), then pooled (`pool`)."""
        if self.dims[level]:
            p = getattr(self, f"proj{level}")
            f = F.conv2d(f, p if p.dtype == f.dtype else p.to(f.dtype))
        return neighbourhood_mean(f, self.pool[level])

    def without_unused(self, state: dict, prefix: str = "") -> dict:
        """A state dict (an older checkpoint's held every level's statistics) without the entries of
        the levels this Gaussian leaves out."""
        def unused(key: str) -> bool:
            m = key.startswith(prefix) and _STATS_KEY.fullmatch(key[len(prefix):])
            return bool(m) and not self.used[int(m.group(2))]
        return {k: v for k, v in state.items() if not unused(k)}

    def forward(self, levels: Sequence[Optional[torch.Tensor]]) -> List[Optional[torch.Tensor]]:
        out = []
        for i, f in enumerate(levels):
            if f is None:  # a level the map leaves out
                out.append(None)
                continue
            if not self.used[i]:
                raise ValueError(f"level {i} has no statistics: it was left out when they were fitted")
            f = self._pooled(f.float(), i)
            if self.kind == "local" and self.components > 1:
                d = self._nearest_local(f, i)
            else:
                d = None
                for k in range(self.components):  # the nearest component at each position
                    dk = self._sq_distance(f, *self._component(i, k, f.dtype), self.tile[i])
                    d = dk if d is None else torch.minimum(d, dk)
            out.append(d / int(f.shape[1]))
        return out

    def _nearest_local(self, f: torch.Tensor, i: int) -> torch.Tensor:
        """The nearest of several "local" components, their whitenings in ONE product per position:
        (f - m_k) W_k = f W_k - m_k W_k, so f (P, B, C) @ [W_1 .. W_K] (P, C, KC) minus the constant
        [m_k W_k] (folded at export), then a ReduceMin over the components: one batched MatMul of
        C x KC where there were K of C x C (ONNX Runtime pays per small product: K = 3 at stride 4
        took 14 % of the whole graph's time in three). Equal to the per-component loop within float
        rounding (the features and m_k W_k are of the size of a few units)."""
        c, h, w = (int(v) for v in f.shape[1:])
        t = self.tile[i]
        comps = [self._component(i, k, f.dtype) for k in range(self.components)]
        white = torch.cat([wk for _, wk in comps], dim=2)  # (T, C, K C)
        shift = torch.cat([torch.matmul(tile_rows(mk, t), wk) for mk, wk in comps], dim=2)  # (T, t^2, K C)
        z = torch.matmul(tile_rows(f, t), white)  # (T, t^2 B, K C)
        if t > 1:  # each position's own shift, (T, t^2, B, K C) - (T, t^2, 1, K C), then a row per position
            # again: OpenVINO took 0.69 ms for the ReduceMin below on a (T, t^2, B, K) tensor, 0.04 on (P, B, K)
            kc = shift.shape[2]
            z = (z.reshape(h * w // (t * t), t * t, -1, kc) - shift.unsqueeze(2)).reshape(h * w, -1, kc)
        else:
            z = z - shift
        # each component's sum of squares as one more product with a constant (K C, K) of blocks of ones:
        # a reduction over the innermost C (a ReduceSum) cost OpenVINO 3.5 ms at stride 4, this 0.3 ms
        blocks = torch.kron(torch.eye(self.components, dtype=f.dtype), torch.ones(c, 1, dtype=f.dtype))
        d = torch.matmul(z * z, blocks).amin(-1)  # (P, B), the positions in tile_rows' order
        return untile(d, h, w, t)


def tile_rows(f: torch.Tensor, t: int) -> torch.Tensor:
    """(B, C, h, w) -> (h w / t^2, t^2 B, C): the row vectors of each t x t tile's positions (and the
    batch), tiles in row-major order; t = 1: (h w, B, C), a position per tile. Two 4-D transposes:
    a 6-D one (B, C, h/t, t, w/t, t) -> (h/t, w/t, t, t, B, C) cost ONNX Runtime as much as the product
    it feeds (0.39 ms at stride 4); the second moves blocks of t B C contiguous values."""
    c, h, w = (int(v) for v in f.shape[1:])
    y = f.permute(2, 3, 0, 1)  # (h, w, B, C)
    if t > 1:  # (h/t, t, w/t, t B C) -> (h/t, w/t, t, t B C)
        y = y.reshape(h // t, t, w // t, -1).transpose(1, 2)
    return y.reshape(h * w // (t * t), -1, c)


def untile(d: torch.Tensor, h: int, w: int, t: int) -> torch.Tensor:
    """Per-row values in tile_rows' order, (h w / t^2, t^2 B) or (h w, B) -> (B, 1, h, w)."""
    if t > 1:  # (h/t, w/t, t, t B) -> (h/t, t, w/t, t B) -> (h w, B): positions in row-major order
        d = d.reshape(h // t, w // t, t, -1).transpose(1, 2).reshape(h * w, -1)
    return d.t().reshape(-1, 1, h, w)


@torch.no_grad()
def image_groups(f: torch.Tensor, k: int, min_size: int = 2, iters: int = 50) -> List[torch.Tensor]:
    """Indices of the images in each of k groups: k-means (farthest-point start, deterministic) on the
    images' mean features f (N, C, h, w), channels standardised. k = 1: one group of all."""
    n = f.shape[0]
    if k == 1:
        return [torch.arange(n)]
    x = f.double().mean((2, 3))
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
    centres = [x.mean(0)]
    for _ in range(k):  # farthest point from the centres so far; the first (the mean) is replaced
        d = torch.cdist(x, torch.stack(centres)).min(1).values
        centres.append(x[int(d.argmax())])
    c = torch.stack(centres[1:])
    for _ in range(iters):
        label = torch.cdist(x, c).argmin(1)
        new = torch.stack([x[label == j].mean(0) if (label == j).any() else c[j] for j in range(k)])
        if torch.equal(new, c):
            break
        c = new
    label = torch.cdist(x, c).argmin(1)
    groups = [torch.nonzero(label == j).flatten() for j in range(k)]
    if min(len(g) for g in groups) < min_size:
        raise ValueError(f"{k} statistics components need at least {min_size} training images each; "
                         f"groups of {', '.join(str(len(g)) for g in groups)}: use fewer components")
    return groups


class ReconstructionLoss(nn.Module):
    """Sum over levels of the mean over pixels of 1 - cos(encoder, decoder)."""

    def forward(self, enc: Sequence[torch.Tensor], dec: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(cosine_residual(e, d).mean() for e, d in zip(enc, dec))


def gaussian_kernel1d(sigma: float) -> torch.Tensor:
    radius = int(math.ceil(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """(n, n) matrix of the 1-D Gaussian blur with zero padding, each row divided by its sum."""
    k = gaussian_kernel1d(sigma).double()
    r = k.numel() // 2
    i = torch.arange(n).view(-1, 1)
    d = torch.arange(n).view(1, -1) - i + r  # kernel index of input j for output i
    m = torch.where((d >= 0) & (d < k.numel()), k[d.clamp(0, k.numel() - 1)], torch.zeros((), dtype=k.dtype))
    return (m / m.sum(1, keepdim=True)).float()


def upsample_matrix(n: int, factor: int) -> torch.Tensor:
    """(n * factor, n) matrix of 1-D linear upsampling as F.interpolate(bilinear, align_corners=False)
    does it along one axis: up(r) = U r U^T for an (n, n) map."""
    eye = torch.eye(n, dtype=torch.float64).view(n, 1, n)
    return F.interpolate(eye, scale_factor=float(factor), mode="linear", align_corners=False)[:, 0, :].t().float()


TOP_SHARE = 0.01  # score "top": the mean of the map's highest 1 % of pixels
TOP_MAX = 1024  # at most this many (TensorRT 8.5's TopK takes k <= 1024)


class FeatureMemory(nn.Module):
    """The training images' features kept as they are (ModelConfig.memory_weight, image_memory_weight),
    for the image score: per stride-16 position the distance to the nearest training image's feature
    at that position, the largest over the positions (PatchCore's nearest patch, with the position
    kept); and the mean distance of the image's deepest features, pooled to 2 x 2 and flattened (and
    scaled to unit length where `cosine`), to its IMAGE_K nearest training images' (SPADE's image kNN).
    forward -> (B,) the weighted sum of the two,
    each standardised on held-out normals (`coef`, `offset`, set by train.fit_memory).
    Squared distances as |q|^2 - 2 q.b + |b|^2: batched MatMuls against constant banks, then
    ReduceMin / TopK, all in the float32 tail of the graph."""

    IMAGE_K = 3

    def __init__(self, channels: int, grid: Tuple[int, int], deep_channels: int, deep_grid: int, images: int,
                 weights: Tuple[float, float], cosine: bool = False):
        super().__init__()
        self.weights = [float(w) for w in weights]
        self.cosine = bool(cosine)
        self.pool = max(1, deep_grid // 2)  # the deepest features pooled to 2 x 2 (1 x 1 below 64 px)
        p, d = grid[0] * grid[1], deep_channels * (deep_grid // self.pool) ** 2
        self.positions, self.channels, self.dim = p, int(channels), d  # constant shapes: no Shape/Flatten in the graph
        n = max(int(images), 1)
        if self.weights[0]:  # per position: (P, C, N) and |b|^2 (P, 1, N)
            self.register_buffer("bank", torch.zeros(p, channels, n))
            self.register_buffer("bank_sq", torch.zeros(p, 1, n))
        if self.weights[1]:  # whole images: (D, N) and (1, N)
            self.register_buffer("image_bank", torch.zeros(d, n))
            self.register_buffer("image_sq", torch.zeros(1, n))
        self.register_buffer("coef", torch.zeros(2))
        self.register_buffer("offset", torch.zeros(2))

    @property
    def bytes_per_image(self) -> int:
        """float32 bytes one training image takes in the banks this memory keeps."""
        return 4 * ((self.positions * self.channels if self.weights[0] else 0) + (self.dim if self.weights[1] else 0))

    def image_features(self, deep: torch.Tensor) -> torch.Tensor:
        v = (F.avg_pool2d(deep, self.pool) if self.pool > 1 else deep).reshape(-1, self.dim)
        return v / (v * v).sum(1, keepdim=True).clamp_min(1e-12).sqrt() if self.cosine else v

    @torch.no_grad()
    def fit(self, level: torch.Tensor, deep: torch.Tensor) -> None:
        """level (N, C, h, w) stride-16 and deep (N, C', h', w') features of the training images kept."""
        if self.weights[0]:
            b = level.float().reshape(-1, self.channels, self.positions).permute(2, 1, 0).contiguous()  # (P, C, N)
            self.bank.copy_(b)
            self.bank_sq.copy_((b * b).sum(1, keepdim=True))
        if self.weights[1]:
            v = self.image_features(deep.float())
            self.image_bank.copy_(v.t())
            self.image_sq.copy_((v * v).sum(1)[None])

    def distances(self, level: torch.Tensor, deep: torch.Tensor) -> List[Optional[torch.Tensor]]:
        """[(B,) nearest-position distance, (B,) image kNN distance], None where a weight is 0."""
        out: List[Optional[torch.Tensor]] = [None, None]
        if self.weights[0]:
            q = level.reshape(-1, self.channels, self.positions).permute(2, 0, 1)  # (P, B, C)
            d2 = (q * q).sum(-1, keepdim=True) - 2.0 * torch.matmul(q, self.bank) + self.bank_sq  # (P, B, N)
            nearest = torch.amin(d2, dim=2).clamp_min(0.0).sqrt()  # (P, B)
            out[0] = torch.amax(nearest, dim=0)
        if self.weights[1]:
            v = self.image_features(deep)
            d2 = (v * v).sum(1, keepdim=True) - 2.0 * torch.matmul(v, self.image_bank) + self.image_sq  # (B, N)
            k = min(self.IMAGE_K, int(self.image_bank.shape[1]))
            near = -torch.topk(-d2, k, dim=1).values  # the k smallest
            out[1] = near.clamp_min(0.0).sqrt().mean(1)
        return out

    def forward(self, level: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
        total = None
        for i, d in enumerate(self.distances(level, deep)):
            if d is not None:
                t = (d - self.offset[i]) * self.coef[i]
                total = t if total is None else total + t
        return total


def feature_memory(cfg: ModelConfig) -> Optional[FeatureMemory]:
    """An unfitted FeatureMemory sized for `cfg` (None where it keeps no memory)."""
    if not cfg.uses_memory:
        return None
    spec = SPECS[cfg.backbone]
    level = spec.levels(cfg.tap16)[2]
    g = cfg.image_size // level.stride
    return FeatureMemory(level.channels, (g, g), spec.deep.channels, cfg.image_size // spec.deep.stride,
                         cfg.memory_images, (cfg.memory_weight, cfg.image_memory_weight),
                         cosine=cfg.image_memory_metric == "cosine")


def top_count(pixels: int) -> int:
    """How many of a map's `pixels` the "top" score averages: 1 % of them, 1 to TOP_MAX (655 at 256x256)."""
    return max(1, min(TOP_MAX, round(TOP_SHARE * pixels)))


def map_score(amap: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, 1, H, W) map -> (B,) image score: its maximum ("max"), the mean of its highest 1 % of
    pixels ("top": a defect of a few pixels still counts, one noisy pixel of a texture counts less)
    or its mean ("mean": the whole image is of another kind)."""
    if kind == "max":
        return torch.amax(amap, dim=(1, 2, 3))
    if kind == "top":
        pixels = int(amap.shape[2]) * int(amap.shape[3])
        flat = amap.reshape(-1, pixels)  # a constant shape: no Shape/Flatten in the graph
        return torch.topk(flat, top_count(pixels), dim=1).values.mean(1)
    return amap.mean(dim=(1, 2, 3))


class AnomalyMap(nn.Module):
    """Per-level residuals -> bilinear upsample to the input size -> weighted sum -> Gaussian
    smoothing (fixed separable Gaussian; borders renormalised so the map does not fade towards the
    image edge; upsampling and blur folded into one constant matrix per level and side) -> raw map
    (B, 1, H, W) and raw image score (B,): map_score's "max", "top" (the mean of its highest 1 %) or
    "mean". A level of weight 0 is left out of the graph; a level whose residual weight is 0 leaves its
    decoder stage out of it.

    With a `FeatureGaussian` (`stats` shared, position or local), each level's term is its residual plus
    `stats_weight` times its Mahalanobis distance, each divided by its mean on held-out normal images
    (`level_scale`: 2 x levels, fitted after training), so the two kinds of evidence add on one scale;
    the distance weighed per level by `stats_level_weights` where given (else `level_weights`)."""

    def __init__(self, image_size: int, sigma: float, level_weights: Sequence[float] = (1.0, 1.0, 1.0),
                 strides: Sequence[int] = (4, 8, 16), score: str = "max",
                 gauss: Optional["FeatureGaussian"] = None, stats_weight: float = 1.0,
                 level_scale: Optional[torch.Tensor] = None,
                 stats_level_weights: Optional[Sequence[float]] = None,
                 level_sigmas: Optional[Sequence[float]] = None, memory: Optional[FeatureMemory] = None):
        super().__init__()
        self.score = score
        self.memory = memory
        self.strides = [int(s) for s in strides]
        self.weights = [float(w) for w in level_weights]
        self.gauss = gauss
        if gauss is not None:
            scale = torch.ones(2, len(self.weights)) if level_scale is None else level_scale.detach().float().cpu()
            sw = self.weights if stats_level_weights is None else [float(w) for w in stats_level_weights]
            # constants of the graph: residual and distance factors per level, level weight folded in
            self.rec_w = [w * float(a) for w, a in zip(self.weights, scale[0])]
            self.stat_w = [w * stats_weight * float(b) for w, b in zip(sw, scale[1])]
        # the separable blur as one constant matrix B per side, rows renormalised at the borders:
        # blur(m) = B m B^T, the same as two zero-padded 1-D convolutions divided by the blur of ones
        b = blur_matrix(image_size, sigma)
        # bilinear upsampling is separable too (up(r) = U r U^T), so blur(up(r)) = (B U) r (B U)^T: one
        # constant (S, h) matrix per level, no (S, S) intermediate per level and no Resize in the graph;
        # so each level may have its own blur width (`level_sigmas`) at no cost
        sigmas = [sigma] * len(self.strides) if level_sigmas is None else [float(v) for v in level_sigmas]
        for s, sig in zip(self.strides, sigmas):
            bu = (b if sig == sigma else blur_matrix(image_size, sig)) @ upsample_matrix(image_size // s, s)
            self.register_buffer(f"bu{s}", bu, persistent=False)
            self.register_buffer(f"bu{s}_t", bu.t().contiguous(), persistent=False)

    def level_terms(self, enc: Sequence[torch.Tensor], dec: Sequence[torch.Tensor]) -> List[Optional[torch.Tensor]]:
        """Each level's weighted term at its own resolution (B, 1, h, w); None where its weight is 0."""
        if self.gauss is None:
            return [None if w == 0.0 else (cosine_residual(e, d) * w if w != 1.0 else cosine_residual(e, d))
                    for w, e, d in zip(self.weights, enc, dec)]
        dist = self.gauss([e if b != 0.0 else None for e, b in zip(enc, self.stat_w)])
        out = []
        for a, b, e, d, m in zip(self.rec_w, self.stat_w, enc, dec, dist):
            terms = ([cosine_residual(e, d) * a] if a != 0.0 else []) + ([m * b] if b != 0.0 else [])
            out.append(None if not terms else terms[0] if len(terms) == 1 else terms[0] + terms[1])
        return out

    def forward(self, enc: Sequence[torch.Tensor], dec: Sequence[torch.Tensor],
                deep: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """deep: the encoder's deepest output, which a `memory` reads (else unused)."""
        amap = None
        for s, r in zip(self.strides, self.level_terms(enc, dec)):
            if r is None:
                continue
            r = torch.matmul(torch.matmul(getattr(self, f"bu{s}"), r), getattr(self, f"bu{s}_t"))  # blur(up(r))
            amap = r if amap is None else amap + r
        # amap: (B, 1, H, W)
        score = map_score(amap, self.score)  # (B,)
        if self.memory is not None:
            score = score + self.memory(enc[2], deep)
        return amap, score


def amap_for(cfg: ModelConfig, model: Optional["HFRAE"] = None) -> AnomalyMap:
    """The map generator of a config; with feature statistics it takes a copy of the model's fitted
    Gaussian, so the exported graph has it in the float32 tail, outside the quantized encoder/decoder."""
    gauss = None
    if cfg.stats != "none":
        if model is None or getattr(model, "gauss", None) is None:
            raise ValueError("a model with feature statistics is needed for its anomaly map")
        gauss = copy.deepcopy(model.gauss)
    memory = None
    if cfg.uses_memory and model is not None and getattr(model, "memory", None) is not None:
        memory = copy.deepcopy(model.memory)
    return AnomalyMap(cfg.image_size, cfg.sigma, cfg.level_weights, score=cfg.score, gauss=gauss,
                      stats_weight=cfg.stats_weight, level_scale=None if gauss is None else gauss.level_scale,
                      stats_level_weights=cfg.stats_level_weights, level_sigmas=cfg.level_sigmas, memory=memory)


def stats_levels(cfg: ModelConfig) -> List[bool]:
    """Per level, whether `cfg`'s map weighs its statistics."""
    return [w != 0.0 for w in cfg.stats_weights]


def feature_gaussian(cfg: ModelConfig) -> FeatureGaussian:
    """An unfitted FeatureGaussian of `cfg`'s kind, sized for its backbone's levels and input size,
    with statistics for the levels its map weighs only."""
    levels = SPECS[cfg.backbone].levels(cfg.tap16)
    for k, t in zip(cfg.stats_dims, levels):  # every level: the kind of surface chooses which ones are read
        if k > t.channels:
            raise HfrError(f"--stats-dims {','.join(map(str, cfg.stats_dims))}: {cfg.backbone}'s stride-{t.stride} "
                           f"level has {t.channels} channels; give at most that many (0: all)")
    return FeatureGaussian([t.channels for t in levels],
                           [(cfg.image_size // t.stride, cfg.image_size // t.stride) for t in levels], kind=cfg.stats,
                           pool=cfg.stats_pool, components=cfg.stats_components, used=stats_levels(cfg),
                           tile=cfg.stats_tile, dims=cfg.stats_dims)


class HFRAE(nn.Module):
    """Frozen encoder + trainable decoder. `forward` returns (encoder levels, decoder levels)."""

    def __init__(self, cfg: ModelConfig, weights: Optional[str] = None, pretrained: bool = True,
                 statistics: bool = True):
        super().__init__()
        self.cfg = cfg
        self.spec = SPECS[cfg.backbone]
        self.encoder = load_backbone(cfg.backbone, weights, pretrained, cfg.tap16)
        self.decoder = Decoder(self.spec, cfg.decoder_widths, cfg.decoder_convs, cfg.bottleneck, cfg.up_kernel,
                               cfg.tap16, cfg.decoder == "separable")
        # the normal features' statistics (fitted after the decoder; in the checkpoint's state dict);
        # `statistics` False: none yet (training fits them after the alignment's choice of levels)
        self.gauss = None if cfg.stats == "none" or not statistics else feature_gaussian(cfg)
        # the training images' features (fitted with the statistics; train.fit_memory)
        self.memory = feature_memory(cfg) if statistics else None
        self.register_buffer("mean", torch.tensor(self.spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.spec.std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: BatchNorm statistics never move
        return self

    def encode(self, image01: torch.Tensor):
        """image01: (B, 3, H, W) RGB in [0, 1] -> ([levels at strides 4, 8, 16], deepest)."""
        return self.encoder.features((image01 - self.mean) / self.std)

    def forward(self, image01, with_deep: bool = False):
        """-> (encoder levels, decoder levels), and the deepest output where `with_deep`."""
        taps, deep = self.encode(image01)
        return (taps, self.decoder(deep), deep) if with_deep else (taps, self.decoder(deep))


class DeployModel(nn.Module):
    """The export wrapper and the inference path of `eval`: image (B, 3, H, W) RGB float in [0, 1]
    -> anomaly_map (B, 1, H, W) and score (B,), both normalised (0.5 = threshold)."""

    def __init__(self, model: HFRAE, stats: NormStats):
        super().__init__()
        self.model = model.eval()
        self.amap = amap_for(model.cfg, model)
        self.low = float(stats.low)
        self.scale = float(stats.scale)
        self.map_scale = float(stats.map_scale)

    def forward(self, image):
        enc, dec, deep = self.model(image, True)
        amap, score = self.amap(enc, dec, deep)
        return (amap - self.low) * self.map_scale, (score - self.low) * self.scale
