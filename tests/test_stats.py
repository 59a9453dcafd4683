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
    cfg = ModelConfig(image_size=64, stats=stats, level_weights=(0.25, 1.0, 1.0))  # every level in the graph
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

    assert preset_fields("paper") == {"stats": "none", "level_weights": (0.25, 1.0, 1.0), "decoder": "dense",
                                      "decoder_convs": 1, "up_kernel": 4, "decoder_widths": (256, 128, 64)}
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
    the exported graph (the decoder's most expensive stage: its cost is gone at inference)."""
    onnx = pytest.importorskip("onnx")
    from hfr_edge.config import NormStats
    from hfr_edge.model import HFRAE, DeployModel

    counts = {}
    for lw in ((0.25, 1.0, 1.0), (0.0, 0.5, 1.0)):
        cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats="local", level_weights=lw)
        model = HFRAE(cfg, pretrained=False).eval()
        model.gauss.fit([torch.randn(12, c, 64 // s, 64 // s) for c, s in ((24, 4), (40, 8), (112, 16))])
        path = tmp_path / f"m{lw[0]}.onnx"
        torch.onnx.export(DeployModel(model, NormStats(threshold=1.0, low=0.0)), torch.rand(1, 3, 64, 64), str(path),
                          input_names=["image"], dynamo=False)
        g = onnx.load(str(path)).graph
        inits = {i.name for i in g.initializer}
        counts[lw[0]] = (sum(n.op_type == "ConvTranspose" for n in g.node),
                         sum(n.op_type == "MatMul" and n.input[1] in inits and "white" in n.input[1] for n in g.node),
                         any("/s4/" in n.name for n in g.node))
    assert counts == {0.25: (3, 3, True), 0.0: (2, 2, False)}


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
