import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("HFR_EDGE_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture
def toy_onnx(tmp_path):
    pytest.importorskip("onnx")
    from toy import make_toy_onnx

    return make_toy_onnx(tmp_path / "toy.onnx", size=64)


@pytest.fixture
def bottle_dir():
    d = DATASETS / "mvtec_ad" / "bottle"
    if not d.is_dir():
        pytest.skip(f"MVTec AD bottle not found at {d} (set HFR_EDGE_DATASETS)")
    return d


@pytest.fixture(scope="session")
def syn_data(tmp_path_factory):
    """A tiny synthetic MVTec-layout dataset (64 px)."""
    from hfr_edge.synthetic import make_dataset

    return make_dataset(tmp_path_factory.mktemp("syn") / "parts", size=64, n_train=12, n_good_test=4, n_per_defect=2)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory, syn_data):
    """A checkpoint trained for 2 epochs at 64 px with a narrow decoder (seconds on a CPU), `--preset
    paper` (dense decoder, no statistics): 10 images cannot estimate the statistics' covariances (112
    channels seen at 160 positions), and the accuracy bounds of the pipeline tests were set on it; the
    defaults (statistics) and the separable decoder train in test_model, test_stats, test_calibrate and
    the CLI tests."""
    pytest.importorskip("torch")
    from hfr_edge.checkpoint import save_checkpoint
    from hfr_edge.config import ModelConfig, TrainConfig, preset_fields
    from hfr_edge.data import load_items, open_dataset
    from hfr_edge.train import fit

    PAPER = preset_fields("paper")
    ds = open_dataset(str(syn_data))
    x, _, _, _ = load_items(ds.train, 64)
    model, stats, summary = fit(x[:10], x[10:], ModelConfig(**{**PAPER, "image_size": 64, "decoder_widths": (32, 16, 8)}),
                                TrainConfig(epochs=2, batch_size=4), progress=False)
    summary.update(data=str(syn_data), format="mvtec")
    path = tmp_path_factory.mktemp("ckpt") / "ckpt.pt"
    save_checkpoint(path, model, stats, summary)
    return path


@pytest.fixture(scope="session")
def tiny_model_onnx(tmp_path_factory, tiny_ckpt):
    """The tiny checkpoint exported as model.onnx (fp32)."""
    from hfr_edge.export.onnx_export import export_onnx

    return export_onnx(str(tiny_ckpt), str(tmp_path_factory.mktemp("onnx") / "model.onnx"))
