"""The runner interface on ONNX Runtime (toy contract graph), the Detector, open_runner's and
default_artifact's choices and errors, and the runtime's freedom from torch and onnx."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hfr_edge.base.errors import HfrError
from hfr_edge.runtime import runner as runner_mod
from hfr_edge.runtime.detector import Detector
from hfr_edge.base.images import preprocess
from hfr_edge.runtime.runner import default_artifact, open_runner


def toy_expected(x):
    """What the toy graph computes: map = mean over RGB of |x - 0.5| * 2, score = its max."""
    amap = (np.abs(x - 0.5) * 2).mean(axis=1, keepdims=True)
    return amap, amap.reshape(len(x), -1).max(axis=1)


def rand_input(n, s=64, seed=0):
    return np.random.default_rng(seed).random((n, 3, s, s), dtype=np.float32)


def test_infer_shapes_dtypes_and_values(toy_onnx):
    x = rand_input(3)
    with open_runner(toy_onnx, provider="cpu") as r:
        assert r.backend.startswith("onnxruntime/")
        assert r.max_batch is None and r.meta.image_size == 64 and r.meta.precision == "fp32"
        out = r.infer({"image": x})
        assert set(out) == {"anomaly_map", "score"}
        assert out["anomaly_map"].shape == (3, 1, 64, 64) and out["anomaly_map"].dtype == np.float32
        assert out["score"].shape == (3,) and out["score"].dtype == np.float32
        amap, score = toy_expected(x)
        np.testing.assert_allclose(out["anomaly_map"], amap, atol=1e-6)
        np.testing.assert_allclose(out["score"], score, atol=1e-6)
        assert set(r.last_timings) == {"compute"} and r.last_timings["compute"] > 0
    assert not r.is_active


@pytest.mark.parametrize("feed, match", [
    ({"image": rand_input(1).astype(np.float64)}, r"input 'image': dtype float64, expected float32"),
    ({"image": rand_input(1, s=32)}, r"input 'image': shape \(1, 3, 32, 32\), expected float32 \(N, 3, 64, 64\)"),
    ({"image": rand_input(1)[:, :1]}, r"shape \(1, 1, 64, 64\)"),
    ({"image": np.zeros((0, 3, 64, 64), np.float32)}, r"shape \(0, 3, 64, 64\).*N >= 1"),
    ({"input": rand_input(1)}, r"feed \['input'\] must hold exactly one input named 'image'"),
    ({"image": rand_input(1), "extra": rand_input(1)}, r"exactly one input named 'image'"),
    ({"image": [[0.0]]}, r"a list, expected a numpy array"),
    ({"image": np.asfortranarray(rand_input(2))}, r"not C-contiguous"),
])
def test_infer_rejects_bad_feeds(toy_onnx, feed, match):
    with open_runner(toy_onnx) as r:
        with pytest.raises(HfrError, match=match):
            r.infer(feed)


def test_batch_above_max_batch_is_refused(toy_onnx):
    with open_runner(toy_onnx) as r:
        r.max_batch = 2  # as an engine's profile would say
        with pytest.raises(HfrError, match=r"batch 3 exceeds toy.onnx's maximum batch 2"):
            r.infer({"image": rand_input(3)})


def test_detector_predict_frames_of_any_size_and_type(toy_onnx):
    frames = [
        np.full((100, 80, 3), 255, np.uint8),  # white, larger than S: map 1 everywhere
        np.zeros((50, 50), np.uint8),  # gray, smaller than S: map 1 everywhere
        np.full((70, 90), 128 << 8, np.uint16),  # 16-bit gray -> 128: map |128/255 - 0.5| * 2
        np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8),  # already S x S
    ]
    with open_runner(toy_onnx) as r:
        det = Detector(r)
        assert det.size == 64 and det.threshold == 0.5
        maps, scores = det.predict(frames)
        assert maps.shape == (4, 64, 64) and maps.dtype == np.float32
        assert scores.shape == (4,) and scores.dtype == np.float32
        np.testing.assert_allclose(maps[0], 1.0, atol=1e-6)
        np.testing.assert_allclose(maps[1], 1.0, atol=1e-6)
        np.testing.assert_allclose(maps[2], abs(128 / 255 - 0.5) * 2, atol=1e-6)
        amap, score = toy_expected(preprocess(frames[3:], 64))
        np.testing.assert_allclose(maps[3], amap[0, 0], atol=1e-6)
        np.testing.assert_allclose(scores[3], score[0], atol=1e-6)
        np.testing.assert_allclose(scores, maps.reshape(4, -1).max(axis=1), atol=1e-6)
        empty_maps, empty_scores = det.predict([])
        assert empty_maps.shape == (0, 64, 64) and empty_scores.shape == (0,)


def test_detector_rejects_a_non_image_frame(toy_onnx):
    with open_runner(toy_onnx) as r:
        with pytest.raises(HfrError, match=r"frame 0: shape \(5,\) is not an image"):
            Detector(r).predict([np.zeros(5, np.uint8)])


def test_predict_batch_splits_into_chunks_of_max_batch(toy_onnx):
    x = rand_input(5, seed=2)
    with open_runner(toy_onnx) as r:
        det = Detector(r)
        whole_maps, whole_scores = det.predict_batch(x)
        r.max_batch = 2
        seen = []
        infer = r.infer

        def spy(feed):
            seen.append(feed["image"].shape[0])
            return infer(feed)

        r.infer = spy
        maps, scores = det.predict_batch(x)
        assert seen == [2, 2, 1]
        np.testing.assert_array_equal(maps, whole_maps)
        np.testing.assert_array_equal(scores, whole_scores)
        assert maps.shape == (5, 64, 64) and scores.shape == (5,)
        seen.clear()
        det.predict([np.zeros((10, 10, 3), np.uint8)] * 3)
        assert seen == [2, 1]
        with pytest.raises(HfrError, match=r"dtype float64"):
            det.predict_batch(x.astype(np.float64))


def test_truncated_onnx_file_is_named(toy_onnx, tmp_path):
    bad = tmp_path / "bad.onnx"
    data = toy_onnx.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    shutil.copy(str(toy_onnx) + ".json", str(bad) + ".json")
    with pytest.raises(HfrError, match=r"bad.onnx: not a valid ONNX file .*re-export it"):
        open_runner(bad)
    bad.write_text("not a graph at all")
    with pytest.raises(HfrError, match=r"bad.onnx: not a valid ONNX file"):
        open_runner(bad)


def test_graph_that_contradicts_its_metadata_is_refused(toy_onnx):
    side = toy_onnx.with_name(toy_onnx.name + ".json")
    meta = json.loads(side.read_text())
    meta["image_size"] = 128
    side.write_text(json.dumps(meta))
    with pytest.raises(HfrError, match=r"input 'image' has shape \['N', 3, 64, 64\], but its metadata says"):
        open_runner(toy_onnx)


def test_unavailable_or_unknown_provider(toy_onnx):
    import onnxruntime as ort

    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        pytest.skip("this onnxruntime has CUDA, so --provider cuda is available")
    with pytest.raises(HfrError, match=r"--provider cuda: CUDAExecutionProvider is not available .*available: "
                                       r".*CPUExecutionProvider"):
        open_runner(toy_onnx, provider="cuda")
    with pytest.raises(HfrError, match=r"--provider 'gpu' must be one of: auto, tensorrt, cuda, cpu"):
        open_runner(toy_onnx, provider="gpu")
    with open_runner(toy_onnx, provider="cpu") as r:
        assert r.backend == "onnxruntime/CPUExecutionProvider"


def test_open_runner_path_errors(tmp_path, toy_onnx):
    with pytest.raises(HfrError, match=r"missing.onnx: file not found"):
        open_runner(tmp_path / "missing.onnx")
    with pytest.raises(HfrError, match=r"is a folder, not a model"):
        open_runner(tmp_path)
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(HfrError, match=r"unknown artifact type '.bin'"):
        open_runner(other)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(HfrError, match=r"--provider cpu applies to .onnx graphs"):
        open_runner(engine, provider="cpu")


def test_engine_without_tensorrt_says_how_to_get_it(tmp_path, toy_onnx):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is importable here")
    except ImportError:
        pass
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    meta = json.loads((toy_onnx.parent / "toy.onnx.json").read_text())
    meta["kind"] = "engine"
    (tmp_path / "model.engine.json").write_text(json.dumps(meta))
    with pytest.raises(HfrError, match=r"TensorRT is not importable .*--system-site-packages"):
        open_runner(engine)


def test_default_artifact_choice_and_error(tmp_path, monkeypatch):
    with pytest.raises(HfrError, match=r"no model.engine or model.onnx in .*run `hfr-edge export ckpt.pt` first"):
        default_artifact(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"graph")
    monkeypatch.setattr(runner_mod, "tensorrt_usable", lambda: (False, "no TensorRT here"))
    path, why = default_artifact(tmp_path)
    assert path == tmp_path / "model.onnx" and why == f"using {path} (no TensorRT here)"
    (tmp_path / "model.engine").write_bytes(b"plan")
    path, why = default_artifact(tmp_path)
    assert path == tmp_path / "model.onnx" and "no TensorRT here" in why and "not model.engine" in why
    monkeypatch.setattr(runner_mod, "tensorrt_usable", lambda: (True, "TensorRT 10.3.0 on Orin"))
    path, why = default_artifact(tmp_path)
    assert path == tmp_path / "model.engine" and why == f"using {path} (TensorRT 10.3.0 on Orin)"
    (tmp_path / "model.onnx").unlink()
    monkeypatch.setattr(runner_mod, "tensorrt_usable", lambda: (False, "no GPU here"))
    with pytest.raises(HfrError, match=r"model.engine needs TensorRT, but there is no GPU here"):
        default_artifact(tmp_path)


def test_default_artifact_uses_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"graph")
    path, why = default_artifact()
    assert str(path) == "model.onnx" and why.startswith("using model.onnx (")


def test_runtime_imports_neither_torch_nor_onnx():
    code = ("import sys\n"
            "import hfr_edge.runtime, hfr_edge.runtime.runner, hfr_edge.runtime.detector, hfr_edge.runtime.onnxrt, "
            "hfr_edge.runtime.bench, hfr_edge.runtime.tensorrt, hfr_edge.runtime.cuda, hfr_edge.runtime.openvino\n"
            "print(sorted(m for m in ('torch', 'onnx', 'tensorrt', 'pycuda', 'cuda.bindings', 'openvino') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_physical_cores_from_cpuinfo(tmp_path, toy_onnx):
    """ONNX Runtime gets its thread count set explicitly (left at 0 it also pins threads to cores)."""
    import os

    from hfr_edge.runtime.onnxrt import physical_cores

    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ht = tmp_path / "ht"  # one core, two hyper-threads
    ht.write_text("processor\t: 0\nphysical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nphysical id\t: 0\ncore id\t\t: 0\n")
    assert physical_cores(str(ht)) == 1
    arm = tmp_path / "arm"  # no core ids (ARM, a Jetson): the logical count
    arm.write_text("processor\t: 0\nBogoMIPS\t: 62.50\n")
    assert physical_cores(str(arm)) == logical and physical_cores(str(tmp_path / "missing")) == logical
    with open_runner(toy_onnx, provider="cpu") as r:
        assert r._sess.get_session_options().intra_op_num_threads == physical_cores()
