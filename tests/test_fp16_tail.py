"""The fusion tail computed in float16, as a weakly typed TensorRT build may run it whatever the
graph's Casts say: no inf/NaN and the same ranking as float32, even with features 100x larger
than EfficientNet-Lite0's ReLU6 outputs (WideResNet-50's levels have up to 1,024 channels)."""

import pytest

torch = pytest.importorskip("torch")

from hfr_edge import model as model_mod  # noqa: E402
from hfr_edge.model import AnomalyMap, cosine_distance, cosine_residual  # noqa: E402

FP16_MAX = 65504.0


def _old_residual(a, b, eps=1e-6):
    """The formula before: the product of two squared norms, and eps * eps (0 in float16)."""
    dot = (a * b).sum(1, keepdim=True)
    na, nb = (a * a).sum(1, keepdim=True), (b * b).sum(1, keepdim=True)
    return 1.0 - dot / torch.sqrt(torch.clamp(na * nb, min=eps * eps))


def _features(seed, n=6, size=64):
    """Encoder-like (ReLU6, 24/40/112 channels) and decoder-like (signed) features for n images,
    each image with its own amount of reconstruction error."""
    g = torch.Generator().manual_seed(seed)
    enc, dec = [], []
    for c, s in ((24, size // 4), (40, size // 8), (112, size // 16)):
        e = torch.clamp(torch.randn(n, c, s, s, generator=g) * 3, 0, 6)
        noise = torch.randn(n, c, s, s, generator=g) * torch.linspace(0.1, 2.0, n).view(n, 1, 1, 1)
        enc.append(e)
        dec.append(e + noise)
    return enc, dec


def test_residual_float32_unchanged_and_float16_finite():
    enc, dec = _features(0)
    a, b = enc[2], dec[2]
    a[0, :, 0, 0] = 0  # a dead pixel: every channel 0
    assert (cosine_residual(a, b) - _old_residual(a, b)).abs().max() <= 1e-5
    big_a, big_b = (a * 100).half(), (b * 100).half()
    assert torch.isinf(big_a * big_a).any()  # 600^2 > 65,504: squaring these overflows float16
    assert not torch.isfinite(_old_residual(big_a, big_b)).all()  # the old formula's map goes NaN
    new = cosine_distance(big_a, big_b)
    assert new.dtype == torch.float16 and torch.isfinite(new).all()
    assert (new.float() - cosine_residual(a, b)).abs().max() <= 5e-3


def test_fp16_tail_with_features_x100_keeps_the_ranking(monkeypatch):
    enc, dec = _features(1)
    amap = AnomalyMap(64, sigma=4.0, level_weights=(0.25, 1.0, 1.0))
    with torch.no_grad():
        ref_map, ref_score = amap(enc, dec)
        # every tail op in float16: the residual without its float32 cast, the blur matrices in half
        monkeypatch.setattr(model_mod, "cosine_residual", cosine_distance)
        half = AnomalyMap(64, sigma=4.0, level_weights=(0.25, 1.0, 1.0)).half()
        m16, s16 = half([(e * 100).half() for e in enc], [(d * 100).half() for d in dec])
    assert m16.dtype == torch.float16 and torch.isfinite(m16).all() and m16.abs().max() < FP16_MAX
    assert torch.equal(torch.argsort(s16.float()), torch.argsort(ref_score))
    assert (m16.float() - ref_map).abs().max() <= 2e-2 * ref_map.abs().max()
