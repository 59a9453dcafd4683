"""The TensorRT runner against ONNX Runtime on the same inputs: a tiny engine is built from the toy
contract graph with the builder API of the installed TensorRT (8.5 / 8.6 bindings or 10+ names).

Needs tensorrt, a CUDA binding (pycuda or cuda-python) and an NVIDIA GPU; skipped, with the reason,
anywhere else. Marked gpu: `pytest -m gpu` runs these on the GPU machine.
"""

import hashlib
import json

import numpy as np
import pytest

from hfr_edge.base.errors import HfrError

pytestmark = pytest.mark.gpu

S = 64  # toy graph side
MAX_BATCH = 4  # engine profile: min 1, opt 2, max 4


def _require_tensorrt_and_gpu():
    pytest.importorskip("tensorrt", reason="TensorRT's Python bindings (tensorrt) are not installed here")
    from hfr_edge.runtime.cuda import binding_available
    from hfr_edge.runtime.trtinfo import gpu_info

    if binding_available() is None:
        pytest.skip("no CUDA binding (pycuda or cuda-python) is installed here")

    if gpu_info() is None:
        pytest.skip("no NVIDIA GPU here")


def _onnx_for_this_tensorrt(onnx_path, major):
    """The toy graph is opset 18; TensorRT 8.x parsers stop at opset 17 (Reduce* axes as attributes)."""
    if major >= 10:
        return onnx_path.read_bytes()
    import onnx
    from onnx import version_converter

    return version_converter.convert_version(onnx.load(str(onnx_path)), 17).SerializeToString()


def _build_engine(onnx_path, engine_path):
    import tensorrt as trt

    from hfr_edge.base.artifact import ArtifactMeta, load_meta, write_meta
    from hfr_edge.runtime.trtinfo import engine_fingerprint

    major = int(trt.__version__.split(".")[0])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(_onnx_for_this_tensorrt(onnx_path, major)):
        pytest.fail("TensorRT could not parse the toy graph: "
                    + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 28)
    profile = builder.create_optimization_profile()
    profile.set_shape("image", (1, 3, S, S), (2, 3, S, S), (MAX_BATCH, 3, S, S))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT failed to build the toy engine"
    with open(engine_path, "wb") as f:
        f.write(plan)
    src = load_meta(onnx_path)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    fp = engine_fingerprint("fp32", [1, 2, MAX_BATCH], S, sha, src.norm)
    write_meta(engine_path, ArtifactMeta(kind="engine", precision="fp32", image_size=S, model=src.model,
                                         norm=src.norm, extra={"fingerprint": fp}))
    return engine_path


@pytest.fixture(scope="module")
def toy_pair(tmp_path_factory):
    """(toy.onnx, toy.engine built from it on this device)."""
    _require_tensorrt_and_gpu()
    pytest.importorskip("onnx")
    from toy import make_toy_onnx

    d = tmp_path_factory.mktemp("trt")
    onnx_path = make_toy_onnx(d / "toy.onnx", size=S)
    return onnx_path, _build_engine(onnx_path, d / "toy.engine")


def test_tensorrt_matches_onnxruntime(toy_pair):
    from hfr_edge.runtime.runner import open_runner

    onnx_path, engine_path = toy_pair
    x = np.random.default_rng(0).random((3, 3, S, S), dtype=np.float32)
    with open_runner(onnx_path, provider="cpu") as ort_r:
        want = ort_r.infer({"image": x})
    with open_runner(engine_path) as trt_r:
        assert trt_r.backend.startswith("tensorrt ") and trt_r.max_batch == MAX_BATCH
        for n in (3, 1, MAX_BATCH, 2):  # shapes change between calls within the profile
            xn = np.random.default_rng(n).random((n, 3, S, S), dtype=np.float32) if n != 3 else x
            got = trt_r.infer({"image": xn})
            assert got["anomaly_map"].shape == (n, 1, S, S) and got["anomaly_map"].dtype == np.float32
            assert got["score"].shape == (n,) and got["score"].dtype == np.float32
            if n == 3:
                np.testing.assert_allclose(got["anomaly_map"], want["anomaly_map"], atol=1e-3)
                np.testing.assert_allclose(got["score"], want["score"], atol=1e-3)
        assert set(trt_r.last_timings) == {"h2d", "compute", "d2h"}
        assert all(v >= 0 for v in trt_r.last_timings.values())
        with pytest.raises(HfrError, match=rf"batch {MAX_BATCH + 1} exceeds toy.engine's maximum batch {MAX_BATCH}"):
            trt_r.infer({"image": np.zeros((MAX_BATCH + 1, 3, S, S), np.float32)})
    assert not trt_r.is_active


def test_detector_on_tensorrt_matches_onnxruntime(toy_pair):
    from hfr_edge.runtime.detector import Detector
    from hfr_edge.runtime.runner import open_runner

    onnx_path, engine_path = toy_pair
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48 + 8 * i, 80, 3), dtype=np.uint8) for i in range(MAX_BATCH + 2)]
    with open_runner(onnx_path, provider="cpu") as ort_r:
        want_maps, want_scores = Detector(ort_r).predict(frames)
    for _ in range(2):  # a second open after close: everything was freed and is made anew
        with open_runner(engine_path) as trt_r:
            assert trt_r.input_buffer(2).shape == (2, 3, S, S)  # pinned: predict fills it in place
            maps, scores = Detector(trt_r).predict(frames)  # chunks of 4 + 2
            np.testing.assert_allclose(maps, want_maps, atol=1e-3)
            np.testing.assert_allclose(scores, want_scores, atol=1e-3)


def test_bench_on_tensorrt_reports_copy_times(toy_pair):
    from hfr_edge.runtime.bench import bench

    rep = bench(toy_pair[1], batch=2, iterations=10, warmup=2)
    assert rep["backend"].startswith("tensorrt ") and rep["precision"] == "fp32"
    assert rep["h2d_ms"] >= 0 and rep["d2h_ms"] >= 0 and rep["compute_ms"] >= 0
    assert rep["p50_ms"] <= rep["p90_ms"] <= rep["p99_ms"]


def test_engine_with_foreign_fingerprint_is_refused(toy_pair, tmp_path):
    from hfr_edge.runtime.runner import open_runner

    engine = tmp_path / "other.engine"
    engine.write_bytes(toy_pair[1].read_bytes())
    meta = json.loads(toy_pair[1].with_name("toy.engine.json").read_text())
    meta["fingerprint"]["tensorrt"] = "1.0.0"
    (tmp_path / "other.engine.json").write_text(json.dumps(meta))
    with pytest.raises(HfrError, match=r"other.engine: built for .*rebuild on this device"):
        open_runner(engine)
