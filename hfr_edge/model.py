"""HFR-AE: frozen encoder, trained decoder, loss and anomaly-map generator as small modules.

Everything after the decoder (residuals, upsampling, sum, Gaussian smoothing, score,
normalisation) is torch ops in `AnomalyMap` / `DeployModel`, so it traces into the one
exported graph; `DeployModel` is the explicit export wrapper that fixes the I/O contract.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import SPECS, BackboneSpec, load_backbone
from .config import ModelConfig, NormStats


def _conv_bn_relu(cin, cout, k=3):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _UpStage(nn.Module):
    """x2 upsampling (transposed conv) then `convs` 3x3 convs; a head maps to the level's channels.

    Kernel 4 (padding 1) overlaps neighbouring input pixels; kernel 2 maps each input pixel to its
    own 2x2 block, whose seams show up as a grid in the residuals of normal images."""

    def __init__(self, cin, width, cout, convs: int = 2, up_kernel: int = 2):
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, width, up_kernel, stride=2, padding=(up_kernel - 2) // 2,
                                                   bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.body = nn.Sequential(*[_conv_bn_relu(width, width) for _ in range(convs)])
        self.head = nn.Conv2d(width, cout, 3, padding=1)

    def forward(self, x) -> Tuple[torch.Tensor, torch.Tensor]:
        h = self.body(self.up(x))
        return h, self.head(h)


class Decoder(nn.Module):
    """Mirror of the encoder: stride 32 -> 16 -> 8 -> 4, one output head per level."""

    def __init__(self, spec: BackboneSpec, widths: Sequence[int], convs: int = 2, bottleneck: int = 0,
                 up_kernel: int = 2, tap16: str = "late"):
        super().__init__()
        w16, w8, w4 = widths
        c4, c8, c16 = (t.channels for t in spec.levels(tap16))
        cin = spec.deep.channels
        # optional 1x1 squeeze of the deepest features: less room to reconstruct what is not normal
        self.squeeze = _conv_bn_relu(cin, bottleneck, 1) if bottleneck else nn.Identity()
        self.s16 = _UpStage(bottleneck or cin, w16, c16, convs, up_kernel)
        self.s8 = _UpStage(w16, w8, c8, convs, up_kernel)
        self.s4 = _UpStage(w8, w4, c4, convs, up_kernel)

    def forward(self, deep) -> List[torch.Tensor]:  # deep: (B, C32, H/32, W/32)
        h, r16 = self.s16(self.squeeze(deep))  # (B, C16, H/16, W/16)
        h, r8 = self.s8(h)  # (B, C8, H/8, W/8)
        _, r4 = self.s4(h)  # (B, C4, H/4, W/4)
        return [r4, r8, r16]


RESIDUAL_EPS = 1e-4  # a normal float16 number (1e-6 and its square are subnormal or 0 there)


def _unit(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / ||x|| along channels without ever squaring a large value: x is first divided by its
    largest |component|, so the sum of squares is at most C, far below float16's 65,504 for any
    backbone here (WideResNet-50's 1,024 channels included)."""
    peak = torch.amax(torch.maximum(x, -x), dim=1, keepdim=True).clamp(min=eps)  # Neg + Max: no Abs op
    x = x / peak
    return x / torch.sqrt((x * x).sum(1, keepdim=True)).clamp(min=eps)


def cosine_distance(a: torch.Tensor, b: torch.Tensor, eps: float = RESIDUAL_EPS) -> torch.Tensor:
    """1 - cosine similarity along channels in the inputs' own precision: (B, C, h, w) x2 -> (B, 1, h, w).
    Overflow-free in float16, which a weakly typed TensorRT build may choose for the tail."""
    return 1.0 - (_unit(a, eps) * _unit(b, eps)).sum(1, keepdim=True)


def cosine_residual(a: torch.Tensor, b: torch.Tensor, eps: float = RESIDUAL_EPS) -> torch.Tensor:
    """cosine_distance in float32 (the graph's fusion tail is float32)."""
    return cosine_distance(a.float(), b.float(), eps)


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


class AnomalyMap(nn.Module):
    """Per-level residuals -> bilinear upsample to the input size -> weighted sum -> Gaussian
    smoothing (fixed separable Gaussian, built once as two matrices; borders renormalised so the map
    does not fade towards the image edge) -> raw map (B, 1, H, W) and raw image score (B,) = its maximum
    (or its mean, `score="mean"`). A level of weight 0 is left out of the graph."""

    def __init__(self, image_size: int, sigma: float, level_weights: Sequence[float] = (1.0, 1.0, 1.0),
                 strides: Sequence[int] = (4, 8, 16), score: str = "max"):
        super().__init__()
        self.score = score
        self.strides = [int(s) for s in strides]
        self.weights = [float(w) for w in level_weights]
        # the separable blur as two constant matrices, rows renormalised at the borders:
        # blur(m) = B m B^T, the same as two zero-padded 1-D convolutions divided by the blur of ones,
        # as two MatMuls (fast on every backend, unlike one-channel convolutions on a CPU)
        b = blur_matrix(image_size, sigma)
        self.register_buffer("blur_rows", b, persistent=False)
        self.register_buffer("blur_cols_t", b.t().contiguous(), persistent=False)

    def _blur(self, m):
        return torch.matmul(torch.matmul(self.blur_rows, m), self.blur_cols_t)

    def forward(self, enc: Sequence[torch.Tensor], dec: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        amap = None
        for w, s, e, d in zip(self.weights, self.strides, enc, dec):
            if w == 0.0:
                continue
            # a constant scale (not a size) keeps Shape ops out of the exported Resize
            f = float(s)
            r = F.interpolate(cosine_residual(e, d), scale_factor=(f, f), mode="bilinear", align_corners=False,
                              recompute_scale_factor=False)
            r = r * w if w != 1.0 else r
            amap = r if amap is None else amap + r
        amap = self._blur(amap)  # (B, 1, H, W)
        score = torch.amax(amap, dim=(1, 2, 3)) if self.score == "max" else amap.mean(dim=(1, 2, 3))  # (B,)
        return amap, score


def amap_for(cfg: ModelConfig) -> AnomalyMap:
    return AnomalyMap(cfg.image_size, cfg.sigma, cfg.level_weights, score=cfg.score)


class HFRAE(nn.Module):
    """Frozen encoder + trainable decoder. `forward` returns (encoder levels, decoder levels)."""

    def __init__(self, cfg: ModelConfig, weights: Optional[str] = None, pretrained: bool = True):
        super().__init__()
        self.cfg = cfg
        self.spec = SPECS[cfg.backbone]
        self.encoder = load_backbone(cfg.backbone, weights, pretrained, cfg.tap16)
        self.decoder = Decoder(self.spec, cfg.decoder_widths, cfg.decoder_convs, cfg.bottleneck, cfg.up_kernel,
                               cfg.tap16)
        self.register_buffer("mean", torch.tensor(self.spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.spec.std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: BatchNorm statistics never move
        return self

    def encode(self, image01: torch.Tensor):
        """image01: (B, 3, H, W) RGB in [0, 1] -> ([levels at strides 4, 8, 16], deepest)."""
        return self.encoder.features((image01 - self.mean) / self.std)

    def forward(self, image01):
        taps, deep = self.encode(image01)
        return taps, self.decoder(deep)


class DeployModel(nn.Module):
    """The export wrapper and the inference path of `eval`: image (B, 3, H, W) RGB float in [0, 1]
    -> anomaly_map (B, 1, H, W) and score (B,), both normalised (0.5 = threshold)."""

    def __init__(self, model: HFRAE, stats: NormStats):
        super().__init__()
        self.model = model.eval()
        self.amap = amap_for(model.cfg)
        self.low = float(stats.low)
        self.scale = float(stats.scale)
        self.map_scale = float(stats.map_scale)

    def forward(self, image):
        enc, dec = self.model(image)
        amap, score = self.amap(enc, dec)
        return (amap - self.low) * self.map_scale, (score - self.low) * self.scale
