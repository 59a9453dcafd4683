"""The normal features' statistics (`stats`): the Gaussian's distance, its fusion with the residual,
the checkpoint and the exported graph (the distance lives in the float32 tail, never quantized)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfr_edge.config import ModelConfig, TrainConfig  # noqa: E402
from hfr_edge.base.errors import HfrError  # noqa: E402
from hfr_edge.model import FeatureGaussian  # noqa: E402


def _correlated(n, c, h, w, seed=0):
    mix = torch.randn(c, c, generator=torch.Generator().manual_seed(123))  # one distribution
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, h, w, c, generator=g) @ mix.T  # correlated channels
    return z.permute(0, 3, 1, 2).contiguous() + 3.0


@pytest.mark.parametrize("per_position", [False, True])
def test_distance_is_about_one_on_normals_and_large_off_distribution(per_position):
    f = _correlated(400, 8, 4, 4)
    g = FeatureGaussian([8], [(4, 4)], "position" if per_position else "shared")
    g.fit([f])
    assert g.mean0.shape == ((1, 8, 4, 4) if per_position else (1, 8, 1, 1))
    (d,) = g([_correlated(50, 8, 4, 4, seed=1)])  # new normals from the same distribution
    assert d.shape == (50, 1, 4, 4)
    assert 0.8 < float(d.mean()) < 1.3
    # a feature vector that breaks the channels' correlation (each value alone is typical)
    odd = _correlated(1, 8, 4, 4, seed=2)
    odd[0, :, 1, 1] = f[:, :, 1, 1].mean(0) + f[:, :, 1, 1].std(0) * torch.tensor([2.0, -2, 2, -2, 2, -2, 2, -2])
    (d_odd,) = g([odd])
    assert float(d_odd[0, 0, 1, 1]) > 5 * float(d.mean())


def test_local_statistics_tell_positions_apart():
    """A feature vector typical of one position is flagged at another where `local` keeps one
    covariance per position; `position` (one covariance for the level) cannot tell."""
    g0 = torch.Generator().manual_seed(0)
    n, c = 400, 4
    base = torch.randn(n, 1, c, generator=g0)
    f = torch.zeros(n, c, 2, 2)
    f[:, :, 0, 0] = base[:, 0] * torch.tensor([1.0, 1, 0.05, 0.05])  # position (0, 0): channels 0, 1 vary
    f[:, :, 1, 1] = base[:, 0] * torch.tensor([0.05, 0.05, 1, 1])  # position (1, 1): channels 2, 3 vary
    f[:, :, 0, 1] = torch.randn(n, c, generator=g0)
    f[:, :, 1, 0] = torch.randn(n, c, generator=g0)
    probe = torch.zeros(1, c, 2, 2)
    probe[0, :, 1, 1] = torch.tensor([2.0, 2.0, 0, 0])  # (0, 0)'s kind of vector at (1, 1)
    local, pos = FeatureGaussian([c], [(2, 2)], "local"), FeatureGaussian([c], [(2, 2)], "position")
    local.fit([f]), pos.fit([f])
    assert local.white0.shape == (4, c, c)
    (dl,), (dp,) = local([f]), pos([f])
    assert 0.7 < float(dl.mean()) < 1.3 and 0.7 < float(dp.mean()) < 1.3
    (pl,), (pp,) = local([probe]), pos([probe])
    assert float(pl[0, 0, 1, 1]) > 10 * float(dl[:, 0, 1, 1].mean())
    assert float(pl[0, 0, 1, 1]) > 3 * float(pp[0, 0, 1, 1])  # 8.5 vs 2.6 (the mix with the level's: LOCAL_MIX)


def test_whitening_matches_the_inverse_covariance():
    f = _correlated(300, 6, 3, 3)
    g = FeatureGaussian([6], [(3, 3)], "shared")
    g.fit([f], shrink=0.0)
    x = (f - f.mean((0, 2, 3), keepdim=True)).permute(0, 2, 3, 1).reshape(-1, 6).double()
    cov = x.T @ x / (len(x) - 1)
    cov = cov + 6 / len(x) * cov.diagonal().mean() * torch.eye(6, dtype=cov.dtype)  # the floor: channels / samples
    w = g.white0.view(6, 6).double()
    assert torch.allclose(w.T @ w, torch.linalg.inv(cov), rtol=1e-3, atol=1e-4)


def test_bad_stats_options_are_one_line_errors():
    with pytest.raises(HfrError, match="--stats 'pca' must be one of: none, shared, position, local"):
        ModelConfig(stats="pca")
    with pytest.raises(HfrError, match="--stats-weight -1"):
        ModelConfig(stats_weight=-1.0)


def test_old_configs_load_without_statistics():
    cfg = ModelConfig.from_dict({"backbone": "efficientnet_lite0", "image_size": 64})
    assert cfg.stats == "none"


@pytest.mark.slow
@pytest.mark.parametrize("stats", ["shared", "position", "local"])
def test_statistics_travel_through_checkpoint_and_graph(tmp_path, stats):
    from hfr_edge.checkpoint import load_deploy_model, save_checkpoint
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.train import fit

    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    x = rng.random((10, 3, 64, 64), dtype=np.float32)
    xh = rng.random((4, 3, 64, 64), dtype=np.float32)
    # every level in the graph, both terms
    cfg = ModelConfig(image_size=64, stats=stats, level_weights=(0.25, 1.0, 1.0), stats_level_weights=None,
                      aligned_level_weights=None, stats_dims=(0, 0, 0))
    model, norm, summary = fit(x, xh, cfg, TrainConfig(epochs=1, batch_size=4),
                               progress=False)
    # each level's residual and distance average 1 on the held-out normals once scaled
    assert model.gauss.level_scale.shape == (2, 3) and bool((model.gauss.level_scale > 0).all())
    ckpt = save_checkpoint(tmp_path / "c.pt", model, norm, summary)
    deploy, cfg, _ = load_deploy_model(ckpt)
    assert cfg.stats == stats
    assert torch.equal(deploy.model.gauss.white2, model.gauss.white2)  # fitted, not the identity it starts as
    assert not torch.equal(model.gauss.white2.reshape(-1, 112, 112)[0], torch.eye(112))
    with torch.no_grad():
        m, s = deploy(torch.from_numpy(xh))
    path = export_onnx(ckpt, tmp_path / "m.onnx")
    om, os_ = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": xh})
    assert np.abs(om - m.numpy()).max() < 1e-4 and np.abs(os_ - s.numpy()).max() < 1e-4
    # the distance's whitening (C x C: 1x1 convolutions, or one MatMul of per-position matrices for
    # "local") is in the fusion tail (outside /model/): fp16 and int8 leave it in fp32; the tail's other
    # convolutions are channel sums (one output channel)
    g = onnx.load(str(path)).graph
    inits = {i.name: i for i in g.initializer}
    tail = [n for n in g.node if n.op_type == "Conv" and not n.name.startswith("/model/")]
    whitening = [n.name for n in tail if inits[n.input[1]].dims[0] > 1]
    assert all(inits[n.input[1]].dims[0] == 1 for n in tail if n.name not in whitening)
    if stats == "local":
        per_position = [n for n in g.node if n.op_type == "MatMul" and n.input[1] in inits
                        and len(inits[n.input[1]].dims) == 3]
        assert not whitening and len(per_position) == 3
        assert all(not n.name.startswith("/model/") for n in per_position)
        assert [tuple(inits[n.input[1]].dims) for n in per_position] == [(256, 24, 24), (64, 40, 40), (16, 112, 112)]
    else:
        assert len(whitening) == 3


def test_presets_name_their_settings_and_bad_names_fail_in_one_line(tmp_path):
    import subprocess
    import sys

    from hfr_edge.config import PRESETS, preset_fields

    assert preset_fields("paper") == {"stats": "none", "score": "max", "level_weights": (0.25, 1.0, 1.0),
                                      "stats_level_weights": None, "aligned_level_weights": None,
                                      "part_level_weights": None, "part_residual_weights": None,
                                      "texture_stats_tile": None, "decoder": "dense", "decoder_convs": 1,
                                      "up_kernel": 4, "decoder_widths": (256, 128, 64), "level_sigmas": None,
                                      "part_decoder_widths": None}
    assert preset_fields(None) == {}
    assert {p: ModelConfig(**preset_fields(p)).stats for p in PRESETS} == {"paper": "none", "surface": "local",
                                                                           "light": "position"}
    assert ModelConfig(**preset_fields("surface")) == ModelConfig()  # the defaults are the surface preset
    out = tmp_path / "c.pt"
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "train", str(tmp_path), "-o", str(out), "--preset", "fancy"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "hfr-edge: error: --preset 'fancy' must be one of: surface, paper, light"
    assert not out.exists()


def test_a_level_of_weight_zero_leaves_the_graph_with_its_decoder_stage(tmp_path):
    """Level weights 0, 0.5, 1: the stride-4 level's decoder stage, residual and statistics are not in
    the exported graph (the decoder's most expensive stage: its cost is gone at inference). The
    default (residual 0, 0, 1; statistics 0, 0.5, 1) keeps the stride-8 distance and leaves out the
    stride-8 decoder stage too: one transposed convolution, the stride-16 stage's."""
    onnx = pytest.importorskip("onnx")
    from hfr_edge.config import NormStats
    from hfr_edge.model import HFRAE, DeployModel

    counts = {}
    weights = {"all": {"level_weights": (0.25, 1.0, 1.0), "stats_level_weights": None},
               "no stride 4": {"level_weights": (0.0, 0.5, 1.0), "stats_level_weights": None}, "default": {}}
    for name, kw in weights.items():
        cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats="local", stats_components=1, **kw)
        model = HFRAE(cfg, pretrained=False).eval()
        model.gauss.fit([torch.randn(12, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))])
        path = tmp_path / "m.onnx"
        torch.onnx.export(DeployModel(model, NormStats(threshold=1.0, low=0.0)), torch.rand(1, 3, 64, 64), str(path),
                          input_names=["image"], dynamo=False)
        g = onnx.load(str(path)).graph
        inits = {i.name for i in g.initializer}
        counts[name] = (sum(n.op_type == "ConvTranspose" for n in g.node),
                        sum(n.op_type == "MatMul" and n.input[1] in inits and "white" in n.input[1] for n in g.node),
                        any("/s4/" in n.name for n in g.node), any("/s8/" in n.name for n in g.node))
    assert counts == {"all": (3, 3, True, True), "no stride 4": (2, 2, False, True), "default": (1, 2, False, False)}


def test_a_statistics_only_level_keeps_its_distance_without_its_decoder_stage(tmp_path):
    """Residual weights 0, 0.5, 1 with statistics weights 0.25, 0.5, 1: the stride-4 level's distance
    is in the graph (its whitening MatMul), its decoder stage is not; the map does not move with the
    stride-4 decoder output, and it does with the stride-4 features."""
    onnx = pytest.importorskip("onnx")
    from hfr_edge.config import NormStats
    from hfr_edge.model import HFRAE, DeployModel, amap_for

    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats="local", level_weights=(0.0, 0.5, 1.0),
                      stats_level_weights=(0.25, 0.5, 1.0))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    model = HFRAE(cfg, pretrained=False).eval()
    model.gauss.fit([torch.randn(12, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))])
    amap = amap_for(cfg, model)
    enc = [torch.randn(2, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))]
    dec = [torch.randn_like(e) for e in enc]
    m = amap(enc, dec)[0]
    assert torch.equal(m, amap(enc, [torch.randn_like(dec[0])] + dec[1:])[0])  # no stride-4 residual
    assert not torch.equal(m, amap([enc[0] + 5.0] + enc[1:], dec)[0])  # the stride-4 distance
    path = tmp_path / "m.onnx"
    torch.onnx.export(DeployModel(model, NormStats(threshold=1.0, low=0.0)), torch.rand(1, 3, 64, 64), str(path),
                      input_names=["image"], dynamo=False)
    g = onnx.load(str(path)).graph
    inits = {i.name for i in g.initializer}
    assert sum(n.op_type == "MatMul" and n.input[1] in inits and "white" in n.input[1] for n in g.node) == 3
    assert sum(n.op_type == "ConvTranspose" for n in g.node) == 2 and not any("/s4/" in n.name for n in g.node)
    with pytest.raises(HfrError, match="--stats-level-weights"):
        ModelConfig(stats_level_weights=(0.25, -1.0, 1.0))


def test_pooled_statistics_average_each_neighbourhood_before_the_distance(tmp_path):
    """`stats_pool` 3 at a level: the distance is the unpooled Gaussian's on the 3x3 neighbourhood means (borders:
    the part inside the grid); a one-position spike moves its neighbours' distances too; the graph
    carries one AveragePool per level and the config round-trips (older artifacts read as pool 1)."""
    onnx = pytest.importorskip("onnx")
    import torch.nn.functional as F

    from hfr_edge.config import NormStats
    from hfr_edge.model import HFRAE, DeployModel

    f = _correlated(300, 6, 5, 5)
    pooled, plain = FeatureGaussian([6], [(5, 5)], "local", pool=(3,)), FeatureGaussian([6], [(5, 5)], "local")
    pooled.fit([f])
    mean3 = F.avg_pool2d(f, 3, stride=1, padding=1, count_include_pad=False)
    assert torch.allclose(mean3[:, :, 0, 0], f[:, :, :2, :2].mean((2, 3)), atol=1e-5)
    plain.fit([mean3])
    probe = _correlated(4, 6, 5, 5, seed=3)
    probe[:, :, 2, 2] += 20.0
    (dp,), (dq,) = pooled([probe]), plain([F.avg_pool2d(probe, 3, stride=1, padding=1, count_include_pad=False)])
    assert torch.allclose(dp, dq, rtol=1e-4, atol=1e-4)
    assert float(dp[:, 0, 1, 1].min()) > 5.0 and float(dp[:, 0, 2, 2].min()) > 5.0

    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats="local", stats_pool=(1, 3, 3))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["stats_pool"]
    assert ModelConfig.from_dict(old).stats_pool == (1, 1, 1)
    model = HFRAE(cfg, pretrained=False).eval()
    assert model.gauss.pool == [1, 3, 3]
    model.gauss.fit([torch.randn(12, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))])
    path = tmp_path / "m.onnx"
    torch.onnx.export(DeployModel(model, NormStats(threshold=1.0, low=0.0)), torch.rand(1, 3, 64, 64), str(path),
                      input_names=["image"], dynamo=False)
    pools = [n for n in onnx.load(str(path)).graph.node if n.op_type == "AveragePool"]
    assert len(pools) == 2  # the levels of weight 0.5 and 1; the stride-4 level is out of the graph
    assert all(next(a.i for a in n.attribute if a.name == "count_include_pad") == 0 for n in pools)
    with pytest.raises(HfrError, match="--stats-pool"):
        ModelConfig(stats_pool=(1, 2, 1))


def test_components_fit_each_kind_of_normal_and_take_the_nearest():
    """Normals of two kinds (two means, two scales): two components group the images by kind (k-means
    on the mean feature) and score each kind's normals near 1, where one Gaussian over both scores the
    tight kind far below 1 and a vector between the kinds as typical. The graph takes their Min."""
    from hfr_edge.model import image_groups

    g0 = torch.Generator().manual_seed(0)
    a = torch.randn(120, 6, 3, 3, generator=g0) + 3.0
    b = torch.randn(80, 6, 3, 3, generator=g0) * 0.3 - 3.0
    f = torch.cat([a, b])
    groups = image_groups(f, 2)
    assert sorted(len(g) for g in groups) == [80, 120]
    assert {int(g.min()) for g in groups} == {0, 120}
    one, two = FeatureGaussian([6], [(3, 3)], "local"), FeatureGaussian([6], [(3, 3)], "local", components=2)
    one.fit([f]), two.fit([f])
    assert two.mean0_1.shape == two.mean0.shape and two.white0_1.shape == two.white0.shape
    (d1,), (d2,) = one([b[:20]]), two([b[:20]])
    assert 0.6 < float(d2.mean()) < 1.6 and float(d1.mean()) < 0.5 * float(d2.mean())
    between = torch.zeros(1, 6, 3, 3)  # the mixture's mean: typical for one Gaussian, for neither kind
    (m1,), (m2,) = one([between]), two([between])
    assert float(m2.mean()) > 5 * float(m1.mean())
    with pytest.raises(ValueError, match="components"):
        image_groups(torch.cat([a[:1], b[:1]]), 2)


def test_components_round_trip_and_export(tmp_path):
    onnx = pytest.importorskip("onnx")
    from hfr_edge.config import NormStats
    from hfr_edge.model import HFRAE, DeployModel

    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats="local", stats_components=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    model = HFRAE(cfg, pretrained=False).eval()
    model.gauss.fit([torch.randn(12, c, 64 // s, 64 // s) + (torch.arange(12) % 2).view(-1, 1, 1, 1) * 4
                     for c, s in ((24, 4), (40, 8), (112, 16))])
    again = HFRAE(cfg, pretrained=False).eval()
    again.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 64, 64)
    dm = DeployModel(model, NormStats(threshold=1.0, low=0.0))
    assert torch.equal(dm(x)[0], DeployModel(again, NormStats(threshold=1.0, low=0.0))(x)[0])
    path = tmp_path / "m.onnx"
    torch.onnx.export(dm, x[:1], str(path), input_names=["image"], dynamo=False)
    g = onnx.load(str(path)).graph
    # strides 8 and 16 (the stride-4 level is out): the nearest component by one ReduceMin each
    assert sum(n.op_type == "ReduceMin" for n in g.node) == 2
    # the one product equals each component's distance, the nearest taken
    feats = [None, torch.randn(3, 40, 8, 8) + 4, torch.randn(3, 112, 4, 4)]
    loop = []
    for i in (1, 2):
        f = model.gauss._pooled(feats[i], i)
        d = [model.gauss._sq_distance(f, *model.gauss._component(i, k, f.dtype)) for k in range(2)]
        loop.append(torch.minimum(*d) / f.shape[1])
    got = model.gauss(feats)
    for a, b in zip(got[1:], loop):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    from hfr_edge.checkpoint import save_checkpoint
    from hfr_edge.export.onnx_export import export_onnx

    ckpt = save_checkpoint(tmp_path / "c.pt", model, NormStats(threshold=1.0, low=0.0), {"final_loss": 0.0})
    export_onnx(str(ckpt), str(tmp_path / "product.onnx"), batch=1)  # the TensorRT allow-list holds
    # per level two MatMuls whatever the count: the components' whitenings side by side (each m_k W_k
    # folded into a constant) and the sums of squares per component
    g = onnx.load(str(tmp_path / "product.onnx")).graph
    assert sum(n.op_type == "MatMul" and "gauss" in n.name for n in g.node) == 4
    with pytest.raises(HfrError, match="--stats-components"):
        ModelConfig(stats_components=9)


def _fitted_graph_computes_as_torch(model, out):
    """A 64 px HFRAE's statistics fitted on random features of two kinds, the model through a
    checkpoint (load_deploy_model equal to DeployModel) and exported to `out` (the TensorRT allow-list
    holds); its map on ONNX Runtime equal to PyTorch's. Returns the ONNX model."""
    onnx = pytest.importorskip("onnx")
    from hfr_edge.checkpoint import load_deploy_model, save_checkpoint
    from hfr_edge.config import NormStats
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.model import DeployModel

    model.gauss.fit([torch.randn(12, c, 64 // s, 64 // s) + (torch.arange(12) % 2).view(-1, 1, 1, 1) * 4
                     for c, s in ((24, 4), (40, 8), (112, 16))])
    ckpt = save_checkpoint(out.with_suffix(".pt"), model, NormStats(threshold=1.0, low=0.0), {"final_loss": 0.0})
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = DeployModel(model, NormStats(threshold=1.0, low=0.0))(img)[0]
        assert torch.allclose(load_deploy_model(ckpt)[0](img)[0], want)
    export_onnx(str(ckpt), str(out), batch="dynamic")
    ort = pytest.importorskip("onnxruntime")
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": img.numpy()})[0]
    assert np.allclose(got, want.numpy(), rtol=1e-3, atol=1e-3)
    return onnx.load(str(out))


@pytest.mark.parametrize("components", [1, 2])
def test_tiled_statistics_share_a_covariance_per_tile(tmp_path, components):
    """`stats_tile` t at a level: the t x t positions of a tile share one covariance (their sums about
    each position's own mean, pooled), each position keeps its mean; the distance equals the direct
    per-position computation with its tile's whitening, with one component or the nearest of several;
    the stored matrices shrink t^2-fold and the exported graph holds no transpose above 4-D."""
    pytest.importorskip("onnx")
    from hfr_edge.model import HFRAE

    f = _correlated(60, 5, 4, 4) + torch.linspace(0, 2, 16).view(1, 1, 4, 4)
    f[30:] -= 4.0  # two kinds of normals (two components)
    g = FeatureGaussian([5], [(4, 4)], "local", components=components, tile=(2,))
    g.fit([f], mix=0.0, shrink=0.0)
    assert g.white0.shape == (4, 5, 5) and g.mean0.shape == (1, 5, 4, 4)
    if components == 1:  # tile (0, 1): positions (0, 2), (0, 3), (1, 2), (1, 3)
        y = (f - f.mean(0, keepdim=True))[:, :, 0:2, 2:4].permute(0, 2, 3, 1).reshape(-1, 5).double()
        cov = y.T @ y / (4 * 59) + 5 / (60 * 16) * float(torch.diagonal(y.T @ y / (4 * 59)).mean()) * torch.eye(5)
        w = g.white0[1].double()
        assert torch.allclose(torch.linalg.inv(w @ w.T), cov, atol=1e-4)
    x = _correlated(3, 5, 4, 4, seed=4)
    (d,) = g([x])
    ref = torch.full((3, 4, 4), float("inf"))
    for k in range(components):
        sfx = f"_{k}" if k else ""
        m, w = getattr(g, f"mean0{sfx}"), getattr(g, f"white0{sfx}")
        for i in range(4):
            for j in range(4):
                z = (x[:, :, i, j] - m[0, :, i, j]) @ w[(i // 2) * 2 + j // 2]
                ref[:, i, j] = torch.minimum(ref[:, i, j], (z * z).sum(-1) / 5)
    assert torch.allclose(d[:, 0], ref, rtol=1e-4, atol=1e-4)
    assert all(np.isfinite(g.log_likelihood([x])))

    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats="local", stats_level_weights=(1.0, 0.5, 1.0),
                      stats_tile=(2, 4, 1), stats_components=components, stats_dims=(0, 0, 0))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["stats_tile"]
    assert ModelConfig.from_dict(old).stats_tile == (1, 1, 1)
    model = HFRAE(cfg, pretrained=False).eval()
    assert model.gauss.white0.shape == (64, 24, 24) and model.gauss.white1.shape == (4, 40, 40)
    graph = _fitted_graph_computes_as_torch(model, tmp_path / "t.onnx")
    assert all(len(next(a.ints for a in n.attribute if a.name == "perm")) <= 4
               for n in graph.graph.node if n.op_type == "Transpose")
    for bad in ((3, 1, 1), (1, 1, 4), (2, 1)):  # 4 does not divide the stride-16 grid at 96 px (6 x 6)
        with pytest.raises(HfrError, match="--stats-tile"):
            ModelConfig(image_size=96, stats_tile=bad)


def test_held_out_likelihood_prefers_the_components_the_normals_have():
    """Held-out normals of two kinds are likelier under two components, of one kind under one: the
    criterion `--stats-components auto` chooses by."""
    g0 = torch.Generator().manual_seed(1)
    def two_kinds(n):
        a = torch.randn(n, 6, 3, 3, generator=g0) + 3.0
        b = torch.randn(n, 6, 3, 3, generator=g0) * 0.3 - 3.0
        return torch.cat([a, b])
    def one_kind(n):
        return _correlated(2 * n, 6, 3, 3, seed=int(torch.randint(0, 1000, (1,), generator=g0)))
    for make, best in ((two_kinds, 2), (one_kind, 1)):
        train, hold = make(60), make(10)
        ll = {}
        for k in (1, 2):
            g = FeatureGaussian([6], [(3, 3)], "local", components=k)
            g.fit([train])
            ll[k] = g.log_likelihood([hold])[0]
        assert max(ll, key=ll.get) == best, (make.__name__, ll)


@pytest.mark.slow
def test_auto_components_resolve_in_training_and_travel_in_the_checkpoint(tmp_path):
    """stats_components 0 (auto): training fits 1, 2 and 3 components, keeps the likeliest on the
    held-out images, records the choice in the config (the checkpoint's) and the summary."""
    from hfr_edge.checkpoint import load_deploy_model, save_checkpoint
    from hfr_edge.train import fit

    rng = np.random.default_rng(0)
    x = rng.random((24, 3, 64, 64), dtype=np.float32)
    x[12:] = x[12:] * 0.2 + 0.7  # two kinds of normal image: noise, and bright, flat noise
    xh = np.concatenate([rng.random((3, 3, 64, 64), dtype=np.float32),
                         rng.random((3, 3, 64, 64), dtype=np.float32) * 0.2 + 0.7])
    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats_components=0)
    model, norm, summary = fit(x, xh, cfg, TrainConfig(epochs=1, batch_size=4), progress=False)
    chosen = summary["statistics"]
    assert model.cfg.stats_components == chosen["stats_components"] in (1, 2, 3)
    assert set(chosen["heldout_loglik"]) <= {"1", "2", "3"} and "1" in chosen["heldout_loglik"]
    best = max(chosen["heldout_loglik"], key=chosen["heldout_loglik"].get)
    assert int(best) == model.cfg.stats_components
    _, loaded, _ = load_deploy_model(save_checkpoint(tmp_path / "c.pt", model, norm, summary))
    assert loaded.stats_components == model.cfg.stats_components
    # without held-out images auto cannot judge: one component
    model1, _, summary1 = fit(x, xh[:0], cfg, TrainConfig(epochs=1, batch_size=4, holdout=0.0), progress=False)
    assert model1.cfg.stats_components == 1 and summary1["statistics"]["stats_components"] == 1


def test_bad_statistics_options_fail_in_one_line(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "c.pt"
    for opt, value, line in (("--stats-components", "many", "--stats-components 'many' must be auto or a count from 1 to 8"),
                             ("--stats-pool", "1,2,1", "--stats-pool 1,2,1 must be three of 1 (none), 3, 5 (strides 4, "
                                                       "8, 16; e.g. 1,1,3)"),
                             ("--stats-tile", "3,1,1", "--stats-tile 3,1,1 must be three of 1 (a covariance per "
                                                       "position), 2, 4, each dividing its level's grid at --image-size "
                                                       "256 (strides 4, 8, 16; e.g. 2,1,1)")):
        r = subprocess.run([sys.executable, "-m", "hfr_edge", "train", str(tmp_path), "-o", str(out), opt, value],
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.strip() == f"hfr-edge: error: {line}", r.stderr
        assert not out.exists()


def test_alignment_ratio_tells_a_placed_part_from_a_texture():
    """Between-position over within-position variance: about 1/N for features that do not depend on
    the position, far above 1 where every image has the same structure at the same place."""
    from hfr_edge.train import ALIGNED_RATIO, alignment_ratio

    g = torch.Generator().manual_seed(0)
    texture = torch.randn(40, 8, 16, 16, generator=g)
    placed = texture + 3.0 * torch.randn(1, 8, 16, 16, generator=g)  # one pattern, the same place each time
    assert alignment_ratio(texture) < 0.05 < ALIGNED_RATIO < 1.0 < alignment_ratio(placed)
    assert alignment_ratio(texture, pool=3) < ALIGNED_RATIO < alignment_ratio(placed, pool=3)
    # chunked accumulation (64 images at a time) gives the one-pass value
    many = torch.randn(150, 4, 8, 8, generator=g) + torch.randn(1, 4, 8, 8, generator=g)
    f = many.double()
    mu = f.mean(0)
    want = float(((mu - mu.mean((1, 2), keepdim=True)) ** 2).sum(0).mean() / ((f - mu) ** 2).sum(1).mean())
    assert alignment_ratio(many, border=0) == pytest.approx(want, rel=1e-9)
    # the border is left out: a frame of padding-like values at the edge does not make a texture aligned
    framed = texture.clone()
    framed[:, :, :2], framed[:, :, -2:], framed[:, :, :, :2], framed[:, :, :, -2:] = 5.0, -5.0, 5.0, -5.0
    assert alignment_ratio(framed, border=0) > 1.0 > alignment_ratio(framed) == pytest.approx(
        alignment_ratio(texture), rel=1e-9)


def test_aligned_training_images_take_the_aligned_statistics_weights():
    import dataclasses
    from types import SimpleNamespace

    from hfr_edge.train import ALIGNED_RATIO, PART_RATIO, alignment_kind, resolve_alignment

    g = torch.Generator().manual_seed(1)
    texture = [None, torch.randn(30, 8, 16, 16, generator=g), None]
    pattern = torch.randn(1, 8, 16, 16, generator=g)
    aligned = [None, texture[1] + 0.7 * pattern, None]  # a weak pattern at a fixed place (ELPV's cells)
    placed = [None, texture[1] + 3.0 * pattern, None]  # one part at one place (bottle)
    cfg = ModelConfig(image_size=64)
    assert (cfg.stats_level_weights, cfg.aligned_level_weights, cfg.part_level_weights) == (
        (0.0, 0.5, 1.0), (0.0, 1.0, 1.0), (1.0, 0.0, 0.0))
    m = SimpleNamespace(cfg=cfg)
    got = resolve_alignment(m, placed)
    assert got["aligned"] and got["kind"] == "part" and got["alignment_ratio"] >= PART_RATIO
    assert m.cfg.stats_level_weights == (1.0, 0.0, 0.0) and got["stats_level_weights"] == [1.0, 0.0, 0.0]
    assert m.cfg.stats_tile == (1, 1, 1)  # a part keeps a covariance per position
    # a part also takes its residual weights: the stride-8 residual beside the stride-16 one
    assert m.cfg.level_weights == (0.0, 2.0, 1.0) and got["level_weights"] == [0.0, 2.0, 1.0]
    # the measure pools the stride-8 features 3x3 whatever the statistics' pooling
    unpooled = SimpleNamespace(cfg=dataclasses.replace(cfg, stats_pool=(1, 1, 1)))
    assert resolve_alignment(unpooled, placed)["alignment_ratio"] == got["alignment_ratio"]
    m = SimpleNamespace(cfg=cfg)
    got = resolve_alignment(m, aligned)
    assert got["aligned"] and got["kind"] == "aligned" and ALIGNED_RATIO <= got["alignment_ratio"] < PART_RATIO
    assert m.cfg.stats_level_weights == (0.0, 1.0, 1.0)
    assert m.cfg.stats_tile == (1, 1, 1) and got["stats_tile"] == [1, 1, 1]  # aligned keeps a covariance per position
    m = SimpleNamespace(cfg=cfg)
    got = resolve_alignment(m, texture)
    assert not got["aligned"] and got["kind"] == "texture" and m.cfg.stats_level_weights == (0.0, 0.5, 1.0)
    assert got["stats_level_weights"] == [0.0, 0.5, 1.0]
    # a texture shares each covariance at strides 8 and 16 by 2 x 2 positions (texture_stats_tile)
    assert cfg.texture_stats_tile == (1, 2, 2) and m.cfg.stats_tile == (1, 2, 2) and got["stats_tile"] == [1, 2, 2]
    m = SimpleNamespace(cfg=dataclasses.replace(cfg, texture_stats_tile=None, stats_tile=(2, 1, 1)))
    assert resolve_alignment(m, texture)["stats_tile"] == [2, 1, 1] and m.cfg.stats_tile == (2, 1, 1)
    # part weights None: a part takes the aligned weights
    m = SimpleNamespace(cfg=dataclasses.replace(cfg, part_level_weights=None))
    got = resolve_alignment(m, placed)
    assert got["kind"] == "aligned" and m.cfg.stats_level_weights == (0.0, 1.0, 1.0) and m.cfg.stats_tile == (1, 1, 1)
    assert m.cfg.level_weights == (0.0, 0.0, 1.0)  # aligned and texture keep the residual's weights
    # part residual weights None: a part keeps the residual's weights
    m = SimpleNamespace(cfg=dataclasses.replace(cfg, part_residual_weights=None))
    got = resolve_alignment(m, placed)
    assert got["kind"] == "part" and m.cfg.level_weights == (0.0, 0.0, 1.0)
    assert got["level_weights"] == [0.0, 0.0, 1.0]
    assert [alignment_kind(r) for r in (0.05, 0.1, 2.99, 3.0)] == ["texture", "aligned", "aligned", "part"]
    assert alignment_kind(12.0, part=False) == "aligned"
    # None (the presets paper and light, weights given on the command line): no choice, nothing recorded
    m = SimpleNamespace(cfg=dataclasses.replace(cfg, aligned_level_weights=None))
    assert resolve_alignment(m, placed) == {} and m.cfg.stats_level_weights == (0.0, 0.5, 1.0)
    # an older checkpoint's config has none
    old = ModelConfig.from_dict({"backbone": "efficientnet_lite0", "image_size": 64})
    assert old.aligned_level_weights is None and old.part_level_weights is None and old.part_residual_weights is None
    assert old.texture_stats_tile is None and cfg.to_dict()["texture_stats_tile"] == [1, 2, 2]
    round_trip = ModelConfig.from_dict(cfg.to_dict())
    assert round_trip == cfg and cfg.to_dict()["aligned_level_weights"] == [0.0, 1.0, 1.0]
    assert cfg.to_dict()["part_level_weights"] == [1.0, 0.0, 0.0]
    assert cfg.to_dict()["part_residual_weights"] == [0.0, 2.0, 1.0]
    with pytest.raises(HfrError, match="part level weights"):
        ModelConfig(part_level_weights=(1.0, -1.0, 0.0))
    with pytest.raises(HfrError, match="part residual weights"):
        ModelConfig(part_residual_weights=(0.0, 2.0))
    with pytest.raises(HfrError, match="texture stats tile 1,3,2 must be"):
        ModelConfig(texture_stats_tile=(1, 3, 2))


def test_letterbox_bars_do_not_make_a_texture_aligned():
    """Bars at the same place in every image (one aspect ratio letterboxed) are left out of the
    measure, with the border margin around them: a texture stays a texture."""
    from hfr_edge.train import ALIGNED_RATIO, alignment_ratio, constant_cells

    rng = np.random.default_rng(2)
    x = rng.random((6, 3, 64, 64), dtype=np.float32)
    x[:, :, :16], x[:, :, 48:] = 0.5, 0.5  # bars: rows 0-15 and 48-63 of every image
    x[:, :, 20, :8] = 0.5  # constant in part of a cell only: that cell still has content
    cells = constant_cells(x, (8, 8))
    assert cells.tolist() == [[r in (0, 1, 6, 7)] * 8 for r in range(8)]
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(40, 8, 24, 16, generator=g)
    feats[:, :, :6], feats[:, :, -6:] = 4.0, -4.0  # the bars' features: the same in every image
    outside = torch.zeros(24, 16, dtype=torch.bool)
    outside[:6], outside[-6:] = True, True
    assert alignment_ratio(feats) > 1.0 > ALIGNED_RATIO > alignment_ratio(feats, outside=outside)
    assert alignment_ratio(feats, outside=torch.ones(24, 16, dtype=torch.bool)) == 0.0  # nothing left


def test_only_the_levels_the_map_weighs_keep_statistics(tmp_path):
    """A level whose statistics weight is 0 is neither fitted nor stored: fit_statistics fits the
    levels model.cfg weighs once the alignment has chosen (a part: stride 4 alone); the checkpoint
    holds no other level's Gaussian; an older checkpoint holding every level's loads as before; the
    map of the levels kept is unchanged; asking for a level left out fails in one line."""
    import dataclasses

    from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from hfr_edge.config import NormStats
    from hfr_edge.model import HFRAE, DeployModel
    from hfr_edge.train import _encode_all, fit_statistics

    rng = np.random.default_rng(0)
    x, xh = rng.random((8, 3, 64, 64), dtype=np.float32), rng.random((4, 3, 64, 64), dtype=np.float32)
    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats_components=1)
    model = HFRAE(cfg, pretrained=False).eval()
    assert model.gauss.used == [False, True, True]  # the texture weights 0, 0.5, 1 before any choice
    taps = _encode_all(model, x, torch.device("cpu"))[0]
    model.cfg = dataclasses.replace(cfg, stats_level_weights=(1.0, 0.0, 0.0))  # as the alignment chooses a part
    fit_statistics(model, taps, xh, torch.device("cpu"))
    assert model.gauss.used == [True, False, False]
    keys = [k for k in model.state_dict() if k.startswith("gauss.")]
    assert sorted(keys) == ["gauss.level_scale", "gauss.mean0", "gauss.proj0", "gauss.white0"]
    assert float(model.gauss.level_scale[1, 1]) == float(model.gauss.level_scale[1, 2]) == 1.0
    norm = NormStats(threshold=1.0, low=0.0)
    ckpt = save_checkpoint(tmp_path / "c.pt", model, norm, {})
    loaded = model_from_checkpoint(load_checkpoint(ckpt))
    xt = torch.from_numpy(xh)
    with torch.no_grad():
        want = DeployModel(model, norm)(xt)[0]
        assert torch.equal(DeployModel(loaded, norm)(xt)[0], want)
        # an older checkpoint: every level's statistics (here the identity), the map reads level 0 alone
        full = model.state_dict()
        for i, (c, s) in enumerate(((40, 8), (112, 16)), start=1):
            full[f"gauss.mean{i}"] = torch.zeros(1, c, 64 // s, 64 // s)
            full[f"gauss.white{i}"] = torch.eye(c).expand((64 // s) ** 2, c, c).clone()
        torch.save({**torch.load(ckpt, weights_only=True), "state_dict": full}, tmp_path / "old.pt")
        old = model_from_checkpoint(load_checkpoint(tmp_path / "old.pt"))
        assert torch.equal(DeployModel(old, norm)(xt)[0], want)
        with pytest.raises(ValueError, match="level 1 has no statistics"):
            model.gauss([None, taps[1][:1], None])


def test_projected_statistics_read_the_leading_principal_directions(tmp_path):
    """`stats_dims` k at a level: its Gaussian lives in the k leading principal directions of the
    training features (one 1x1 projection in front of the pooling): the distance equals that of a
    Gaussian fitted directly on the projected features; a departure along a kept direction is flagged,
    one along a dropped (low-variance) direction is not; configs round-trip and older ones read 0 (all
    channels); the exported graph computes what PyTorch does."""
    pytest.importorskip("onnx")
    from hfr_edge.model import HFRAE, feature_gaussian

    g0 = torch.Generator().manual_seed(0)
    big = torch.randn(80, 3, 4, 4, generator=g0) * torch.tensor([5.0, 4.0, 3.0]).view(1, 3, 1, 1)
    f = torch.cat([big, 0.01 * torch.randn(80, 3, 4, 4, generator=g0)], 1) + 1.0  # 3 strong, 3 weak channels
    g = FeatureGaussian([6], [(4, 4)], "local", dims=(3,))
    g.fit([f])
    p = g.proj0.view(3, 6)
    assert g.white0.shape == (16, 3, 3) and g.mean0.shape == (1, 3, 4, 4)
    assert torch.allclose(p @ p.T, torch.eye(3), atol=1e-5)  # orthonormal rows ...
    assert float(p[:, 3:].abs().max()) < 1e-2  # ... spanning the strong channels
    direct = FeatureGaussian([3], [(4, 4)], "local")
    direct.fit([torch.nn.functional.conv2d(f, g.proj0)])
    x = f[:4].clone()
    (d,) = g([x])
    (ref,) = direct([torch.nn.functional.conv2d(x, g.proj0)])
    assert torch.allclose(d, ref, rtol=1e-4, atol=1e-5)
    kept, dropped = x.clone(), x.clone()
    kept[:, 0] += 50.0  # ten sigma along the strongest channel
    dropped[:, 5] += 0.2  # twenty sigma along a weak one: outside what the Gaussian reads
    assert float(g([kept])[0].min()) > 5 * float(d.mean())
    assert torch.allclose(g([dropped])[0], d, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="dimensions"):
        FeatureGaussian([6], [(4, 4)], "local", dims=(7,))

    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats="local", stats_level_weights=(1.0, 0.5, 1.0),
                      stats_dims=(8, 16, 0), stats_components=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["stats_dims"]
    assert ModelConfig.from_dict(old).stats_dims == (0, 0, 0)
    for bad in ((-1, 0, 0), (12, 0)):
        with pytest.raises(HfrError, match="--stats-dims"):
            ModelConfig(stats_dims=bad)
    with pytest.raises(HfrError, match="24 channels"):
        feature_gaussian(ModelConfig(stats_dims=(25, 0, 0)))
    model = HFRAE(cfg, pretrained=False).eval()
    assert model.gauss.white0_1.shape == (256, 8, 8) and model.gauss.white1.shape == (64, 16, 16)
    assert model.gauss.white2.shape == (16, 112, 112) and model.gauss.proj1.shape == (16, 40, 1, 1)
    graph = _fitted_graph_computes_as_torch(model, tmp_path / "p.onnx")
    assert sum(n.op_type == "Conv" and "gauss" in n.name for n in graph.graph.node) == 2


def test_a_part_trains_the_part_decoder_as_if_its_widths_were_asked_for(syn_data, monkeypatch):
    """`part_decoder_widths`: where the training images read as one part at one place, the decoder is
    built with those widths before it trains (same seed: the very decoder `--decoder-widths` gives);
    a texture keeps `decoder_widths`; configs round-trip and older ones read None (no choice)."""
    from hfr_edge import train as T
    from hfr_edge.data import load_items, open_dataset

    x, _, _, _ = load_items(open_dataset(str(syn_data)).train, 64)
    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), part_decoder_widths=(16, 8, 8), stats_components=1)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["part_decoder_widths"]
    assert ModelConfig.from_dict(old).part_decoder_widths is None
    with pytest.raises(HfrError, match="part decoder widths"):
        ModelConfig(part_decoder_widths=(16, 0, 8))
    tcfg = TrainConfig(epochs=1, batch_size=4, seed=3)
    monkeypatch.setattr(T, "ALIGNED_RATIO", 0.0)
    monkeypatch.setattr(T, "PART_RATIO", 0.0)  # every set reads as a part
    part, _, summary = T.fit(x[:10], x[10:], cfg, tcfg, progress=False)
    assert summary["statistics"]["kind"] == "part" and summary["statistics"]["decoder_widths"] == [16, 8, 8]
    assert part.cfg.decoder_widths == (16, 8, 8) and part.cfg.part_decoder_widths == (16, 8, 8)
    asked, _, _ = T.fit(x[:10], x[10:], ModelConfig(image_size=64, decoder_widths=(16, 8, 8), part_decoder_widths=None,
                                                    stats_components=1), tcfg, progress=False)
    for (k, a), (_, b) in zip(part.decoder.state_dict().items(), asked.decoder.state_dict().items()):
        assert torch.equal(a, b), k
    monkeypatch.setattr(T, "ALIGNED_RATIO", 1e9)  # every set reads as a texture
    texture, _, summary = T.fit(x[:10], x[10:], cfg, tcfg, progress=False)
    assert summary["statistics"]["kind"] == "texture" and "decoder_widths" not in summary["statistics"]
    assert texture.cfg.decoder_widths == (32, 16, 8)


def test_memory_distances_are_the_nearest_training_features():
    from hfr_edge.model import FeatureMemory

    g = torch.Generator().manual_seed(0)
    level, deep = torch.randn(20, 8, 2, 2, generator=g), torch.randn(20, 5, 4, 4, generator=g)
    mem = FeatureMemory(8, (2, 2), 5, 4, 20, (1.0, 1.0))
    mem.fit(level, deep)
    ql, qd = torch.randn(6, 8, 2, 2, generator=g), torch.randn(6, 5, 4, 4, generator=g)
    ql[0], qd[0] = level[3], deep[3]  # a training image itself
    pos, img = mem.distances(ql, qd)
    # per position the nearest training image's feature there, the largest over positions
    per = torch.stack([torch.cdist(ql[:, :, i, j], level[:, :, i, j]).min(1).values for i in range(2) for j in range(2)])
    # (|q|^2 - 2 q.b + |b|^2 leaves a rounding of ~1e-6 under the root where q is b)
    assert torch.allclose(pos, per.max(0).values, atol=2e-3) and float(pos[0]) < 2e-3
    # the image's deepest features pooled to 2 x 2: the mean distance to its 3 nearest training images
    flat = lambda t: torch.nn.functional.avg_pool2d(t, 2).flatten(1)  # noqa: E731
    want = torch.cdist(flat(qd), flat(deep)).topk(3, largest=False).values.mean(1)
    assert torch.allclose(img, want, atol=1e-4)
    # cosine: each image's pooled features at unit length first; a training image scaled is no distance
    cos = FeatureMemory(8, (2, 2), 5, 4, 20, (0.0, 1.0), cosine=True)
    cos.fit(level, deep)
    qd[1] = 3.0 * deep[5]
    unit = lambda t: flat(t) / flat(t).norm(dim=1, keepdim=True)  # noqa: E731
    want = torch.cdist(unit(qd), unit(deep)).topk(3, largest=False).values.mean(1)
    got, far = cos.distances(ql, qd)[1], mem.distances(ql, qd)[1]  # the scaled image: cosine and euclidean
    assert torch.allclose(got, want, atol=1e-3) and float(far[1]) > 1.0 and float(far[1]) > 2.0 * float(got[1])
    assert float(torch.cdist(unit(qd[1:2]), unit(deep)).min()) < 1e-3
    only = FeatureMemory(8, (2, 2), 5, 4, 20, (0.0, 1.0))  # a weight of 0 keeps no bank for its term
    assert not hasattr(only, "bank") and only.distances(ql, qd)[0] is None


def test_memory_travels_through_checkpoint_and_graph(tmp_path):
    import dataclasses

    from hfr_edge.checkpoint import load_deploy_model, save_checkpoint
    from hfr_edge.model import amap_for
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.train import fit

    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    x = rng.random((10, 3, 64, 64), dtype=np.float32)
    xh = rng.random((4, 3, 64, 64), dtype=np.float32)
    cfg = ModelConfig(image_size=64, score="mean", memory_weight=0.5, image_memory_weight=0.5,
                      aligned_level_weights=None, part_level_weights=None)
    model, norm, summary = fit(x, xh, cfg, TrainConfig(epochs=1, batch_size=4), progress=False)
    assert model.cfg.memory_images == 10 and summary["statistics"]["memory_images"] == 10
    # each term standardised on the held-out normals: their memory term averages 0
    with torch.no_grad():
        enc, _, deep = model(torch.from_numpy(xh), True)
        assert abs(float(model.memory(enc[2], deep).mean())) < 1e-4
    ckpt = save_checkpoint(tmp_path / "c.pt", model, norm, summary)
    deploy, loaded, _ = load_deploy_model(ckpt)
    assert loaded.memory_images == 10 and torch.equal(deploy.model.memory.bank, model.memory.bank)
    assert loaded.image_memory_metric == "cosine" and deploy.model.memory.cosine
    # the nineteenth session's checkpoints recorded no metric: their image memory compared as euclidean
    old = {k: v for k, v in loaded.to_dict().items() if k != "image_memory_metric"}
    assert ModelConfig.from_dict(old).image_memory_metric == "euclidean"
    plain = amap_for(dataclasses.replace(loaded, memory_images=0), deploy.model)
    assert plain.memory is None and deploy.amap.memory is not None
    with torch.no_grad():
        m, s = deploy(torch.from_numpy(xh))
        levels = deploy.model(torch.from_numpy(xh), True)
        (m_raw, s_raw), (m_plain, s_plain) = deploy.amap(*levels), plain(*levels)
    assert torch.equal(m_raw, m_plain) and not torch.allclose(s_raw, s_plain)  # the score moves, never the map
    path = export_onnx(ckpt, tmp_path / "m.onnx")
    om, os_ = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": xh})
    assert np.abs(om - m.numpy()).max() < 1e-4 and np.abs(os_ - s.numpy()).max() < 1e-4
    # the fp16 graph: the exporter folds the memory's clamp at 0 and ReLU6's lower bound into one
    # initializer, which the encoder reads in float16 and the tail in float32
    half = export_onnx(ckpt, tmp_path / "m16.onnx", precision="fp16")
    _, hs = ort.InferenceSession(str(half), providers=["CPUExecutionProvider"]).run(None, {"image": xh})
    assert np.abs(hs - s.numpy()).max() < 0.05 * max(1.0, float(np.abs(s.numpy()).max()))
    # without held-out images there is nothing to scale the memory on: none is kept
    model, _, summary = fit(x, x[:0], cfg, TrainConfig(epochs=1, batch_size=4), progress=False)
    assert model.memory is None and model.cfg.memory_weight == 0 and "memory" in summary["statistics"]
