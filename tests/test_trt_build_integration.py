"""Where TensorRT and a GPU exist: `hfr-edge build` makes fp16 and int8 engines from an exported model
that agree with ONNX Runtime on the fp32 graph: fp16 anomaly maps within 1e-2 (normalised units),
int8 image AUROC on MVTec bottle within 0.005. Skipped (with the reason) elsewhere.

Set HFR_EDGE_TEST_ONNX to an exported bottle model.onnx to skip the short training run."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATASETS
from hfr_edge.runtime.trtinfo import gpu_info, trt_version

BOTTLE = DATASETS / "mvtec_ad" / "bottle"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.gpu,
    pytest.mark.skipif(trt_version() is None, reason="tensorrt is not installed (it needs an NVIDIA GPU machine)"),
    pytest.mark.skipif(trt_version() is not None and gpu_info() is None, reason="no NVIDIA GPU found"),
    pytest.mark.skipif(not BOTTLE.is_dir(), reason=f"MVTec AD bottle not found at {BOTTLE}"),
]


def _hfr(args, cwd, timeout=1800):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "hfr_edge", *args], cwd=cwd, capture_output=True, text=True,
                       env=env, timeout=timeout)
    if r.returncode != 0:
        pytest.fail(f"hfr-edge {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt_build")
    given = os.environ.get("HFR_EDGE_TEST_ONNX")
    if given:
        shutil.copy(given, d / "model.onnx")
        shutil.copy(given + ".json", d / "model.onnx.json")
    else:
        _hfr(["train", str(BOTTLE), "--epochs", "5", "-o", "ckpt.pt"], d)
        _hfr(["export", "ckpt.pt", "-o", "model.onnx"], d)
    return d


def _test_set(size):
    from hfr_edge.base.images import preprocess, read_image

    paths = sorted((BOTTLE / "test").glob("*/*.png"))
    labels = np.array([p.parent.name != "good" for p in paths])
    return preprocess([read_image(p) for p in paths], size), labels


def _predict(artifact, x, batch=8):
    from hfr_edge.runtime.runner import open_runner

    maps, scores = [], []
    with open_runner(str(artifact)) as r:
        for i in range(0, len(x), batch):
            out = r.infer({"image": np.ascontiguousarray(x[i:i + batch])})
            maps.append(out["anomaly_map"])
            scores.append(out["score"])
    return np.concatenate(maps), np.concatenate(scores)


def _auroc(scores, labels):
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


@pytest.fixture(scope="module")
def reference(workdir):
    from hfr_edge.base.artifact import load_meta

    x, labels = _test_set(load_meta(workdir / "model.onnx").image_size)
    maps, scores = _predict(workdir / "model.onnx", x)
    return x, labels, maps, scores


def test_fp16_engine_matches_onnxruntime(workdir, reference):
    _hfr(["build", "model.onnx", "--fp16", "--batch", "1:8:8", "-o", "model.fp16.engine",
          "--timing-cache", "timing.cache"], workdir)
    from hfr_edge.base.artifact import load_meta

    meta = load_meta(workdir / "model.fp16.engine")
    assert meta.kind == "engine" and meta.precision == "fp16"
    assert meta.extra["fingerprint"]["tensorrt"] == trt_version() and (workdir / "timing.cache").stat().st_size > 0
    x, _, maps32, _ = reference
    maps16, _ = _predict(workdir / "model.fp16.engine", x)
    assert np.abs(maps16 - maps32).max() <= 1e-2


def test_int8_engine_keeps_image_auroc(workdir, reference):
    _hfr(["build", "model.onnx", "--int8", "--calib", str(BOTTLE / "train" / "good"), "-n", "200",
          "--batch", "1:8:8", "-o", "model.int8.engine"], workdir)
    from hfr_edge.base.artifact import load_meta

    assert load_meta(workdir / "model.int8.engine").precision == "int8"
    assert (workdir / "model.int8.onnx").is_file()  # the Q/DQ graph the engine was built from
    x, labels, _, scores32 = reference
    _, scores8 = _predict(workdir / "model.int8.engine", x)
    auc32, auc8 = _auroc(scores32, labels), _auroc(scores8, labels)
    assert abs(auc8 - auc32) <= 0.005, (auc32, auc8)


def test_engine_file_is_what_the_metadata_says(workdir):
    engine = workdir / "model.fp16.engine"
    if not engine.is_file():
        pytest.skip("the fp16 build test did not run")
    trt = pytest.importorskip("tensorrt")
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    assert runtime.deserialize_cuda_engine(Path(engine).read_bytes()) is not None
