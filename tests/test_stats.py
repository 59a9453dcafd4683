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
    g = FeatureGaussian([8], [(4, 4)], per_position)
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


def test_whitening_matches_the_inverse_covariance():
    f = _correlated(300, 6, 3, 3)
    g = FeatureGaussian([6], [(3, 3)], per_position=False)
    g.fit([f], shrink=0.0)
    x = (f - f.mean((0, 2, 3), keepdim=True)).permute(0, 2, 3, 1).reshape(-1, 6).double()
    cov = x.T @ x / (len(x) - 1)
    cov = cov + 6 / len(x) * cov.diagonal().mean() * torch.eye(6, dtype=cov.dtype)  # the floor: channels / samples
    w = g.white0.view(6, 6).double()
    assert torch.allclose(w.T @ w, torch.linalg.inv(cov), rtol=1e-3, atol=1e-4)


def test_bad_stats_options_are_one_line_errors():
    with pytest.raises(HfrError, match="--stats 'pca' must be one of: none, shared, position"):
        ModelConfig(stats="pca")
    with pytest.raises(HfrError, match="--stats-weight -1"):
        ModelConfig(stats_weight=-1.0)


def test_old_configs_load_without_statistics():
    cfg = ModelConfig.from_dict({"backbone": "efficientnet_lite0", "image_size": 64})
    assert cfg.stats == "none"


@pytest.mark.slow
@pytest.mark.parametrize("stats", ["shared", "position"])
def test_statistics_travel_through_checkpoint_and_graph(tmp_path, stats):
    from hfr_edge.checkpoint import load_deploy_model, save_checkpoint
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.train import fit

    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    rng = np.random.default_rng(0)
    x = rng.random((10, 3, 64, 64), dtype=np.float32)
    xh = rng.random((4, 3, 64, 64), dtype=np.float32)
    model, norm, summary = fit(x, xh, ModelConfig(image_size=64, stats=stats), TrainConfig(epochs=1, batch_size=4),
                               progress=False)
    # each level's residual and distance average 1 on the held-out normals once scaled
    assert model.gauss.level_scale.shape == (2, 3) and bool((model.gauss.level_scale > 0).all())
    ckpt = save_checkpoint(tmp_path / "c.pt", model, norm, summary)
    deploy, cfg, _ = load_deploy_model(ckpt)
    assert cfg.stats == stats
    assert torch.equal(deploy.model.gauss.white2, model.gauss.white2)  # fitted, not the identity it starts as
    assert not torch.equal(model.gauss.white2.view(112, 112), torch.eye(112))
    with torch.no_grad():
        m, s = deploy(torch.from_numpy(xh))
    path = export_onnx(ckpt, tmp_path / "m.onnx")
    om, os_ = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": xh})
    assert np.abs(om - m.numpy()).max() < 1e-4 and np.abs(os_ - s.numpy()).max() < 1e-4
    # the distance's 1x1 convolutions (C x C whitening) are in the fusion tail (outside /model/): fp16 and
    # int8 leave them in fp32; the tail's other convolutions are channel sums (one output channel)
    g = onnx.load(str(path)).graph
    inits = {i.name: i for i in g.initializer}
    tail = [n for n in g.node if n.op_type == "Conv" and not n.name.startswith("/model/")]
    whitening = [n.name for n in tail if inits[n.input[1]].dims[0] > 1]
    assert len(whitening) == 3 and all(inits[n.input[1]].dims[0] == 1 for n in tail if n.name not in whitening)


def test_presets_name_their_settings_and_bad_names_fail_in_one_line(tmp_path):
    import subprocess
    import sys

    from hfr_edge.config import PRESETS, preset_fields

    assert preset_fields("paper") == {"stats": "none", "decoder": "dense", "decoder_convs": 1, "up_kernel": 4}
    assert preset_fields(None) == {}
    assert {p: ModelConfig(**preset_fields(p)).stats for p in PRESETS} == {"paper": "none", "surface": "position",
                                                                           "light": "position"}
    assert ModelConfig(**preset_fields("surface")) == ModelConfig()  # the defaults are the surface preset
    out = tmp_path / "c.pt"
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "train", str(tmp_path), "-o", str(out), "--preset", "fancy"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "hfr-edge: error: --preset 'fancy' must be one of: surface, paper, light"
    assert not out.exists()
