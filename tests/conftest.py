import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture
def toy_onnx(tmp_path):
    pytest.importorskip("onnx")
    from toy import make_toy_onnx

    return make_toy_onnx(tmp_path / "toy.onnx", size=64)


@pytest.fixture
def bottle_dir():
    d = DATASETS / "mvtec_ad" / "bottle"
    if not d.is_dir():
        pytest.skip(f"MVTec AD bottle not found at {d} (../shared/datasets beside the repo)")
    return d
