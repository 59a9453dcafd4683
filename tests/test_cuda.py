"""The CUDA session and the TensorRT runner without a GPU: cuda-python's runtime replaced by a fake
with the real functions' parameters (checked against the installed cuda-python where there is one)
and real host memory, TensorRT by the strict fake of 8.5.3 / 10.3.0 (bindings / tensor names), the
engine computing the toy graph on that memory. What the GPU machine's test_tensorrt_runtime.py
proves on hardware, this proves for the wiring: copies, shapes, pinned-buffer lifetime, errors."""

import gc
import importlib
import inspect
import json
import re

import numpy as np
import pytest

import fake_cuda
import fake_trt
from hfr_edge.base.artifact import ArtifactMeta, write_meta
from hfr_edge.base.errors import HfrError
from hfr_edge.runtime import trtinfo
from hfr_edge.runtime.cuda import CudaSession, binding_available

S = fake_trt.S


def _params(doc_line: str):
    """'cudaMemcpyAsync(dst, src, size_t count, kind: cudaMemcpyKind, stream)' -> ('dst', 'src', 'count', ...)."""
    inside = doc_line[doc_line.index("(") + 1:doc_line.rindex(")")]
    return tuple(p.split(":")[0].split()[-1] for p in inside.split(",") if p.strip())


def test_fake_runtime_has_the_real_signatures():
    for name, params in fake_cuda.SIGNATURES.items():
        fake = getattr(fake_cuda.FakeRuntime, name)
        assert tuple(inspect.signature(fake).parameters)[1:] == params, name
    try:
        real = importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        pytest.skip("cuda-python is not installed: compared with the recorded signatures only")
    for name, params in fake_cuda.SIGNATURES.items():
        assert _params(getattr(real, name).__doc__.strip().splitlines()[0]) == params, name
    assert int(real.cudaMemcpyKind.cudaMemcpyHostToDevice) == fake_cuda.cudaMemcpyKind.cudaMemcpyHostToDevice


@pytest.fixture
def cuda(monkeypatch):
    return fake_cuda.install(monkeypatch)


def test_session_copies_through_pinned_buffers_and_frees_everything(cuda):
    assert binding_available() == "cuda.bindings"
    s = CudaSession(0)
    with s.active():
        x = s.allocate("x", (2, 3), np.float32)
        y = s.allocate("y", (2, 3), np.float32)
    assert len(cuda.pinned) == 2 and len(cuda.device_mem) == 2
    x[...] = np.arange(6, dtype=np.float32).reshape(2, 3)

    def launch(stream):  # a "kernel": y = 2 * x on the device
        cuda.device_array(s.device_ptr("y"), 6)[:] = 2 * cuda.device_array(s.device_ptr("x"), 6)

    with s.active():
        timings = s.run({"x": x.nbytes}, launch, {"y": y.nbytes})
    np.testing.assert_array_equal(y, 2 * x)
    assert set(timings) == {"h2d", "compute", "d2h"}
    s.close()
    s.close()  # twice is fine
    assert not cuda.device_mem and not cuda.streams and not cuda.events
    assert len(cuda.pinned) == 2  # x and y are still viewed here: their memory stays
    x[0, 0] = 7.0  # and stays usable
    del x, y
    gc.collect()
    assert not cuda.pinned and len(cuda.freed_pinned) == 2


def test_session_errors_are_one_line(cuda, monkeypatch):
    with pytest.raises(HfrError, match=r"--device 2: this machine has 1 CUDA device\(s\), numbered 0..0"):
        CudaSession(2)
    cuda.devices = 0
    with pytest.raises(HfrError, match="no CUDA device found"):
        CudaSession(0)
    cuda.devices = 1
    s = CudaSession(0)
    cuda.fail["cudaMalloc"] = fake_cuda.cudaError_t.cudaErrorMemoryAllocation
    with pytest.raises(HfrError, match=r"CUDA error while allocating 24 bytes on the GPU: cudaMalloc failed: "
                                       r"cudaErrorMemoryAllocation") as e:
        with s.active():
            s.allocate("x", (2, 3), np.float32)
    assert e.value.exit_code == 1
    s.close()
    with pytest.raises(HfrError, match="used after it was closed"):
        with s.active():
            pass


def test_no_cuda_binding_says_how_to_get_one(monkeypatch):
    for name in ("pycuda", "pycuda.driver", "cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(__import__("sys").modules, name, None)
    assert binding_available() is None
    with pytest.raises(HfrError, match=r"no CUDA binding is importable \(pycuda or cuda-python\); pip install "
                                       r"cuda-python"):
        CudaSession(0)


def test_real_cuda_python_without_a_gpu_is_one_line():
    rt = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python is not installed here")
    if int(rt.cudaGetDeviceCount()[0]) == 0:
        pytest.skip("this machine has a working CUDA driver")
    with pytest.raises(HfrError, match=r"^CUDA error while initialising CUDA: cudaGetDeviceCount failed: cudaError\w+$"):
        CudaSession(0, binding="cuda.bindings")


# --- the TensorRT runner on the fakes ------------------------------------------------------------


@pytest.fixture(params=["8.5.3", "10.3.0"])
def engine(request, cuda, monkeypatch, tmp_path):
    rec = fake_trt.install(monkeypatch, request.param)
    rec.cuda = cuda
    monkeypatch.setattr(trtinfo, "gpu_info", lambda: {"name": "Fake GPU", "compute_capability": "8.7"})
    path = tmp_path / "toy.engine"
    path.write_bytes(b"ENGINE-BYTES")
    fp = trtinfo.engine_fingerprint("fp32", [1, 2, fake_trt.MAX_BATCH], S, "0" * 64, {"threshold": 1.0, "low": 0.0})
    write_meta(path, ArtifactMeta("engine", "fp32", S, {"backbone": "toy"}, {"threshold": 1.0, "low": 0.0},
                                  {"fingerprint": fp}))
    return path, rec


def test_trt_runner_matches_the_toy_graph(engine):
    from hfr_edge.runtime.runner import open_runner

    path, rec = engine
    x = np.random.default_rng(0).random((3, 3, S, S), dtype=np.float32)
    with open_runner(path) as r:
        assert r.backend == f"tensorrt {rec.version}" and r.max_batch == fake_trt.MAX_BATCH
        out = r.infer({"image": x})
        amap, score = fake_trt._toy(x)
        np.testing.assert_allclose(out["anomaly_map"], amap, atol=1e-6)
        np.testing.assert_allclose(out["score"], score, atol=1e-6)
        assert set(r.last_timings) == {"h2d", "compute", "d2h"}
        assert ("execute", 3, int(next(iter(rec.cuda.streams)))) in rec.calls
        with pytest.raises(HfrError, match=r"batch 5 exceeds toy.engine's maximum batch 4"):
            r.infer({"image": np.zeros((5, 3, S, S), np.float32)})


def test_input_buffer_outlives_close(engine):
    """A view from input_buffer() stays valid memory after close(); the pinned buffer is freed with it."""
    from hfr_edge.runtime.detector import Detector
    from hfr_edge.runtime.runner import open_runner

    path, rec = engine
    frames = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in range(6)]
    with open_runner(path) as r:
        buf = r.input_buffer(2)
        assert buf.shape == (2, 3, S, S) and r.input_buffer(fake_trt.MAX_BATCH + 1) is None
        maps, scores = Detector(r).predict(frames)  # chunks of 4 + 2, pre-processed into pinned memory
        buf[:] = 0.5  # as `run` fills it between frames
        r.infer({"image": buf})
    assert r.input_buffer(1) is None
    live = [p for p in rec.cuda.pinned]
    assert any(p <= buf.ctypes.data < p + rec.cuda.pinned[p].nbytes for p in live)  # not freed under the view
    buf[:] = 0.25
    assert float(buf.mean()) == 0.25 and not rec.cuda.device_mem
    del buf
    gc.collect()
    assert not rec.cuda.pinned  # the last view gone: every pinned buffer freed
    assert maps.shape == (6, S, S) and np.isfinite(scores).all()


def test_engine_of_another_tensorrt_build_is_refused(engine):
    from hfr_edge.runtime.runner import open_runner

    path, rec = engine
    meta = json.loads(path.with_name("toy.engine.json").read_text())
    meta["fingerprint"]["tensorrt"] = re.sub(r"\d+$", lambda m: str(int(m.group()) + 1), rec.version)
    path.with_name("toy.engine.json").write_text(json.dumps(meta))
    with pytest.raises(HfrError, match=r"toy.engine: built for Fake GPU cc 8.7 with TensorRT .* rebuild on this device"):
        open_runner(path)
    assert not rec.cuda.device_mem and not rec.cuda.pinned
