"""Backbone contract (every backbone against its declared taps), the default backbone's real
ImageNet weights, the map/score module, and that training lowers the loss."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfr_edge.backbones import SPECS, load_backbone  # noqa: E402
from hfr_edge.config import ModelConfig, TrainConfig  # noqa: E402
from hfr_edge.errors import HfrError  # noqa: E402
from hfr_edge.model import AnomalyMap, DeployModel, cosine_residual  # noqa: E402


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


def test_default_backbone_classifies_a_known_photo():
    skimage_data = pytest.importorskip("skimage.data")
    from hfr_edge.runtime.processing import preprocess

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
    from hfr_edge.backbones import _make

    f = tmp_path / "resnet18.pth"
    torch.save(_make("resnet18").state_dict(), f)  # same keys as torchvision's file
    net = load_backbone("resnet18", weights=str(f))
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
    from hfr_edge.checkpoint import load_deploy_model

    module, cfg, stats = load_deploy_model(tiny_ckpt)
    with torch.no_grad():
        m, s = module(torch.rand(3, 3, 64, 64))
        enc, dec = module.model(torch.rand(1, 3, 64, 64))
    assert m.shape == (3, 1, 64, 64) and s.shape == (3,)
    assert torch.allclose(s, m.amax(dim=(1, 2, 3)), atol=1e-6)
    assert isinstance(module, DeployModel)
