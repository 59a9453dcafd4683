"""Backbone contract (every backbone against its declared taps), the default backbone's real
ImageNet weights, the map/score module, and that training lowers the loss."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfr_edge.backbones import SPECS, load_backbone  # noqa: E402
from hfr_edge.config import ModelConfig, TrainConfig  # noqa: E402
from hfr_edge.base.errors import HfrError  # noqa: E402
from hfr_edge.model import TOP_MAX, AnomalyMap, DeployModel, cosine_residual, map_score, top_count  # noqa: E402


@pytest.mark.parametrize("name", sorted(SPECS))
def test_backbone_matches_its_declared_taps(name):
    net = load_backbone(name, pretrained=(name == "efficientnet_lite0"))
    spec = SPECS[name]
    with torch.no_grad():
        taps, deep = net.features(torch.rand(2, 3, 64, 64))
    assert len(taps) == 3
    for f, tap in zip(taps, spec.taps):
        assert f.dtype == torch.float32
        assert tuple(f.shape) == (2, tap.channels, 64 // tap.stride, 64 // tap.stride)
    assert tuple(deep.shape) == (2, spec.deep.channels, 2, 2)
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training


def test_early_stride16_level_is_the_earlier_stage():
    """tap16="early" taps EfficientNet-Lite0 at the end of stage 4 (80 channels): the same weights,
    an earlier block, and the decoder's stride-16 head follows the declared channels."""
    from hfr_edge.model import HFRAE

    spec = SPECS["efficientnet_lite0"]
    late = load_backbone("efficientnet_lite0", tap16="late")
    early = load_backbone("efficientnet_lite0", tap16="early")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        (l4, l8, l16), ld = late.features(x)
        (e4, e8, e16), ed = early.features(x)
        ref = torch.nn.functional.relu6(late._bn0(late._conv_stem(x)))
        for b in late._blocks[:8]:
            ref = b(ref)
    assert [t.channels for t in spec.levels("early")] == [24, 40, 80]
    assert tuple(e16.shape) == (1, 80, 4, 4) and tuple(l16.shape) == (1, 112, 4, 4)
    assert torch.equal(e16, ref)  # block 7's output
    assert torch.equal(e4, l4) and torch.equal(e8, l8) and torch.equal(ed, ld)
    model = HFRAE(ModelConfig(image_size=64, decoder_widths=(16, 8, 4), tap16="early"))
    with torch.no_grad():
        enc, dec = model(x)
    assert [tuple(d.shape) for d in dec] == [tuple(e.shape) for e in enc]
    assert SPECS["resnet18"].levels("early") == SPECS["resnet18"].taps  # one stage at stride 16


def test_default_backbone_classifies_a_known_photo():
    skimage_data = pytest.importorskip("skimage.data")
    from hfr_edge.base.images import preprocess

    net = load_backbone("efficientnet_lite0")
    spec = SPECS["efficientnet_lite0"]
    x = torch.from_numpy(preprocess([skimage_data.chelsea()], 224))
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        top = int(net(x).argmax())
    assert 281 <= top <= 285, f"chelsea (a tabby cat) classified as ImageNet class {top}"


def test_weights_file_errors(tmp_path):
    with pytest.raises(HfrError, match="file not found"):
        load_backbone("resnet18", weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(HfrError, match="do not match"):
        load_backbone("resnet18", weights=str(bad))
    with pytest.raises(HfrError, match="unknown backbone"):
        ModelConfig(backbone="vgg16")


def test_resnet18_loads_a_torchvision_format_file(tmp_path):
    """Every tensor of the file ends up in the network, none is left at its initial value."""
    from hfr_edge.backbones import _make

    torch.manual_seed(1)
    sd = _make("resnet18").state_dict()  # same keys as torchvision's file
    sd["bn1.running_mean"] = torch.linspace(-1, 1, 64)  # values no initialisation gives
    sd["layer4.1.bn2.running_var"] = torch.linspace(0.5, 2, 512)
    f = tmp_path / "resnet18.pth"
    torch.save(sd, f)
    net = load_backbone("resnet18", weights=str(f))
    got = net.state_dict()
    assert got.keys() == sd.keys()
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    fresh = load_backbone("resnet18", pretrained=False)
    assert not torch.equal(fresh.state_dict()["conv1.weight"], got["conv1.weight"])
    assert not torch.equal(fresh.state_dict()["bn1.running_mean"], got["bn1.running_mean"])
    assert not net.training


def test_cosine_residual_and_map():
    a = torch.rand(2, 8, 4, 4)
    assert torch.allclose(cosine_residual(a, a), torch.zeros(2, 1, 4, 4), atol=1e-6)
    assert torch.allclose(cosine_residual(a, -a), torch.full((2, 1, 4, 4), 2.0), atol=1e-6)
    amap = AnomalyMap(64, sigma=4.0)
    enc = [torch.rand(1, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))]
    m, s = amap(enc, enc)
    assert m.shape == (1, 1, 64, 64) and s.shape == (1,)
    assert float(m.abs().max()) < 1e-5
    # a single bad feature pixel at stride 16 shows up around its location, and the score is the max
    dec = [e.clone() for e in enc]
    dec[2][0, :, 1, 2] = -dec[2][0, :, 1, 2]
    m, s = amap(enc, dec)
    y, x = np.unravel_index(int(m[0, 0].argmax()), (64, 64))
    assert abs(y - (16 + 8)) <= 8 and abs(x - (32 + 8)) <= 8
    assert torch.isclose(s[0], m.max())


def test_training_lowers_the_loss(syn_data):
    from hfr_edge.data import load_items, open_dataset
    from hfr_edge.train import fit

    x, _, _, _ = load_items(open_dataset(str(syn_data)).train, 64)
    _, stats, summary = fit(x, x[:0], ModelConfig(image_size=64, decoder_widths=(32, 16, 8)),
                            TrainConfig(epochs=6, batch_size=4, holdout=0), progress=False)
    hist = summary["loss_history"]
    assert hist[-1] < 0.8 * hist[0]
    assert stats.threshold > stats.low


def test_deploy_model_normalises(tiny_ckpt):
    """The checkpoint's statistics applied to the raw map and score: 0 at `low`, 0.5 at the threshold."""
    from hfr_edge.checkpoint import load_deploy_model
    from hfr_edge.model import amap_for

    module, cfg, stats = load_deploy_model(tiny_ckpt)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        m, s = module(x)
        raw_m, raw_s = amap_for(cfg, module.model)(*module.model(x))
    assert isinstance(module, DeployModel)
    assert m.shape == (3, 1, 64, 64) and s.shape == (3,)
    assert stats.low > 0 and stats.threshold > stats.low  # a formula without either term would differ
    assert torch.allclose(m, 0.5 * (raw_m - stats.low) / (stats.threshold - stats.low), atol=1e-6)
    assert torch.allclose(s, 0.5 * (raw_s - stats.low) / (stats.threshold - stats.low), atol=1e-6)
    assert torch.allclose(s, m.amax(dim=(1, 2, 3)), atol=1e-6)  # score "max": the normalised map's max


def test_mean_score_and_zero_weight_levels():
    enc = [torch.rand(2, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))]
    dec = [torch.rand_like(e) for e in enc]
    m, s = AnomalyMap(64, 4.0, (0.25, 1, 1), score="mean")(enc, dec)
    assert torch.allclose(s, m.mean(dim=(1, 2, 3)), atol=1e-6)
    # a level of weight 0 contributes nothing, whatever its features
    dec0 = [d.clone() for d in dec]
    dec0[0] = torch.rand_like(dec[0])
    a = AnomalyMap(64, 4.0, (0, 1, 1))
    assert torch.equal(a(enc, dec)[0], a(enc, dec0)[0])


def test_top_score_is_the_mean_of_the_highest_percent():
    assert (top_count(256 * 256), top_count(64 * 64), top_count(10)) == (655, 41, 1)
    assert top_count(2048 * 2048) == TOP_MAX == 1024  # TensorRT 8.5's TopK limit
    enc = [torch.rand(2, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))]
    dec = [torch.rand_like(e) for e in enc]
    m, s = AnomalyMap(64, 4.0, (0, 1, 1), score="top")(enc, dec)
    want = torch.sort(m.reshape(2, -1), dim=1, descending=True).values[:, :41].mean(1)
    assert torch.allclose(s, want, atol=1e-6)
    # one hot pixel moves the max fully, the top-1 % mean by 1/41 of it
    spike = torch.zeros(1, 1, 64, 64)
    spike[0, 0, 5, 7] = 41.0
    assert float(map_score(spike, "max")) == 41.0 and float(map_score(spike, "top")) == pytest.approx(1.0)
    assert float(map_score(spike, "mean")) == pytest.approx(41.0 / 4096)


def test_map_and_score_have_their_own_thresholds():
    from hfr_edge.config import NormStats
    from hfr_edge.train import norm_stats

    means = np.array([0.10, 0.12, 0.11])
    maxes = np.array([0.50, 0.60, 0.55])
    st = norm_stats(means, 0.0, maxes)
    assert st.threshold == pytest.approx(max(means.mean() + 3 * means.std(), means.max()))
    assert st.map_threshold == pytest.approx(max(maxes.mean() + 3 * maxes.std(), maxes.max()))
    assert st.map_scale < st.scale  # the map's boundary is higher than the mean score's
    assert NormStats.from_dict(st.to_dict()) == st
    old = NormStats.from_dict({"threshold": 1.0, "low": 0.0})  # a checkpoint from before map_threshold
    assert old.map_scale == old.scale == 0.5


@pytest.mark.parametrize("kw,match", [({"score": "median"}, "--score"), ({"level_weights": (0, 0, 0)}, "weights"),
                                      ({"level_weights": (1, -1, 1)}, "weights"), ({"up_kernel": 3}, "--up-kernel"),
                                      ({"bottleneck": -1}, "--bottleneck"), ({"tap16": "middle"}, "--tap16"),
                                      ({"decoder": "sparse"}, "--decoder")])
def test_model_config_refuses(kw, match):
    with pytest.raises(HfrError, match=match):
        ModelConfig(**kw)


def test_older_checkpoints_keep_the_decoder_they_were_built_with():
    old = ModelConfig.from_dict({"backbone": "efficientnet_lite0", "image_size": 64, "decoder_widths": [32, 16, 8],
                                 "sigma": 4.0, "level_weights": [0.25, 1, 1]})
    assert (old.decoder_convs, old.bottleneck, old.score, old.up_kernel, old.tap16) == (2, 0, "max", 2, "late")
    assert old.decoder == "dense"
    new = ModelConfig(image_size=64, decoder_widths=(32, 16, 8))
    assert ModelConfig.from_dict(new.to_dict()) == new


def test_separable_decoder_same_shapes_a_fraction_of_the_cost():
    from hfr_edge.model import HFRAE

    x = torch.rand(2, 3, 64, 64)
    outs, params = {}, {}
    for kind in ("dense", "separable"):
        torch.manual_seed(0)
        model = HFRAE(ModelConfig(image_size=64, decoder=kind, up_kernel=2)).eval()
        with torch.no_grad():
            enc, dec = model(x)
        outs[kind] = [tuple(d.shape) for d in dec]
        assert outs[kind] == [tuple(e.shape) for e in enc]
        params[kind] = sum(p.numel() for p in model.decoder.parameters())
        convs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
        assert all((m.groups == m.in_channels) == (kind == "separable") for m in convs)
    assert outs["dense"] == outs["separable"] and params["separable"] < params["dense"] / 3


def test_channel_sum_is_a_sum_over_channels():
    from hfr_edge.model import channel_sum

    x = torch.randn(2, 40, 8, 8)
    assert torch.allclose(channel_sum(x), x.sum(1, keepdim=True), atol=1e-5)


def matrix_blur(m, sigma):
    """blur(m) = B m B^T with the map's blur matrix (the map folds B into each level's upsampling)."""
    from hfr_edge.model import blur_matrix

    b = blur_matrix(int(m.shape[-1]), sigma)
    return torch.matmul(torch.matmul(b, m), b.t())


def test_matrix_blur_equals_renormalised_convolution():
    import torch.nn.functional as F

    from hfr_edge.model import gaussian_kernel1d

    for size, sigma in ((64, 4.0), (32, 4.0), (96, 2.5)):
        m = torch.rand(2, 1, size, size)
        k = gaussian_kernel1d(sigma)
        p = k.numel() // 2

        def conv_blur(t):
            t = F.conv2d(t, k.view(1, 1, 1, -1), padding=(0, p))
            return F.conv2d(t, k.view(1, 1, -1, 1), padding=(p, 0))

        ref = conv_blur(m) / conv_blur(torch.ones(1, 1, size, size))
        got = matrix_blur(m, sigma)
        assert torch.allclose(got, ref, atol=1e-6), (size, sigma)
    flat = matrix_blur(torch.full((1, 1, 64, 64), 0.3), 4.0)
    assert torch.allclose(flat, torch.full_like(flat, 0.3), atol=1e-6)  # no fading at the borders


def test_folded_upsampling_equals_resize_then_blur():
    """The map folds each level's bilinear upsampling into the blur (one (S, h) matrix per level and
    side): it must equal upsampling with F.interpolate, summing and blurring, to float precision."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    enc = [torch.rand(2, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))]
    dec = [torch.rand_like(e) for e in enc]
    amap = AnomalyMap(64, 4.0, (0.25, 1, 1))
    m, _ = amap(enc, dec)
    ref = sum(F.interpolate(cosine_residual(e, d), scale_factor=(float(s), float(s)), mode="bilinear",
                            align_corners=False) * w for w, s, e, d in zip((0.25, 1, 1), (4, 8, 16), enc, dec))
    assert torch.allclose(m, matrix_blur(ref, 4.0), atol=1e-6)


def test_level_sigmas_blur_each_level_by_its_own_width():
    """level_sigmas: each level's upsampled term blurred by its own width, then summed; the same
    widths everywhere equal one sigma; a width <= 0 or not three is refused in one line."""
    import torch.nn.functional as F

    torch.manual_seed(1)
    enc = [torch.rand(1, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))]
    dec = [torch.rand_like(e) for e in enc]
    m, _ = AnomalyMap(64, 4.0, (1, 1, 1), level_sigmas=(1.5, 4.0, 6.0))(enc, dec)
    ups = [F.interpolate(cosine_residual(e, d), scale_factor=(float(s), float(s)), mode="bilinear",
                         align_corners=False) for s, e, d in zip((4, 8, 16), enc, dec)]
    ref = sum(matrix_blur(u, sig) for sig, u in zip((1.5, 4.0, 6.0), ups))
    assert torch.allclose(m, ref, atol=1e-6)
    same, _ = AnomalyMap(64, 4.0, (1, 1, 1), level_sigmas=(4.0, 4.0, 4.0))(enc, dec)
    assert torch.equal(same, AnomalyMap(64, 4.0, (1, 1, 1))(enc, dec)[0])
    cfg = ModelConfig(level_sigmas=(2.0, 4.0, 4.0))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["level_sigmas"] == [2.0, 4.0, 4.0]
    assert ModelConfig.from_dict({"image_size": 64}).level_sigmas is None  # older artifacts: sigma everywhere
    for bad in ((2.0, 0.0, 4.0), (2.0, 4.0)):
        with pytest.raises(HfrError, match="level sigmas"):
            ModelConfig(level_sigmas=bad)
