"""ONNX Runtime's GPU providers, on a fake session factory (no GPU here): the options each provider
gets from the graph's metadata, the engine cache beside the model, and what a failing provider does.
The fake accepts only TensorRT provider options that ONNX Runtime 1.16 knows (ORT raises "Unknown
provider option" for any other) and computes on the real CPU provider."""

import sys
import types

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from hfr_edge.base.errors import HfrError  # noqa: E402
from hfr_edge.runtime import onnxrt, trtinfo  # noqa: E402
from hfr_edge.runtime.runner import open_runner  # noqa: E402

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
# The TensorRT provider's options in ONNX Runtime's docs before 1.16 (docs/execution-providers/
# TensorRT-ExecutionProvider.md), so valid in every version the project allows (>= 1.16);
# trt_timing_cache_path and trt_engine_cache_prefix came with 1.17.
ORT_TRT_OPTIONS = {
    "device_id", "trt_max_workspace_size", "trt_max_partition_iterations", "trt_min_subgraph_size", "trt_fp16_enable",
    "trt_int8_enable", "trt_int8_calibration_table_name", "trt_int8_use_native_calibration_table", "trt_dla_enable",
    "trt_dla_core", "trt_engine_cache_enable", "trt_engine_cache_path", "trt_dump_subgraphs",
    "trt_force_sequential_engine_build", "trt_context_memory_sharing_enable", "trt_layer_norm_fp32_fallback",
    "trt_timing_cache_enable", "trt_force_timing_cache", "trt_detailed_build_log", "trt_build_heuristics_enable",
    "trt_sparsity_enable", "trt_builder_optimization_level", "trt_auxiliary_streams", "trt_tactic_sources",
    "trt_extra_plugin_lib_paths", "trt_profile_min_shapes", "trt_profile_max_shapes", "trt_profile_opt_shapes",
}
CUDA_OPTIONS = {"device_id", "gpu_mem_limit", "arena_extend_strategy", "cudnn_conv_algo_search",
                "do_copy_in_default_stream"}


class EPFail(Exception):
    """onnxruntime.capi.onnxruntime_pybind11_state.EPFail: not a RuntimeError, so ORT's own
    session-creation fallback does not catch it."""


class Fail(Exception):
    pass


class FakeOrt(types.SimpleNamespace):
    def __init__(self, available, fail_open=None, fail_run=None):
        calls = []
        real = ort

        class InferenceSession:
            def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
                names = [p[0] if isinstance(p, tuple) else p for p in providers]
                for p in providers:
                    if isinstance(p, tuple):
                        allowed = ORT_TRT_OPTIONS if p[0] == TRT else CUDA_OPTIONS
                        unknown = set(p[1]) - allowed
                        if unknown:
                            raise Fail(f"Unknown provider option: {sorted(unknown)[0]}")
                calls.append(("open", providers))
                if names[0] in (fail_open or {}):
                    raise fail_open[names[0]]
                self._names, self._fail_run = names, dict(fail_run or {})
                self._sess = real.InferenceSession(path_or_bytes, providers=[CPU])  # raises for a bad graph

            def get_providers(self):
                return self._names

            def get_inputs(self):
                return self._sess.get_inputs()

            def get_outputs(self):
                return self._sess.get_outputs()

            def disable_fallback(self):
                calls.append(("disable_fallback",))

            def run(self, output_names, feed):
                if self._names[0] in self._fail_run:
                    raise self._fail_run.pop(self._names[0])
                return self._sess.run(output_names, feed)

        super().__init__(__version__="1.16.3", get_available_providers=lambda: list(available),
                         SessionOptions=real.SessionOptions, GraphOptimizationLevel=real.GraphOptimizationLevel,
                         InferenceSession=InferenceSession, calls=calls)


@pytest.fixture
def fake_ort(monkeypatch):
    def install(available=(TRT, CUDA, CPU), **kw):
        fake = FakeOrt(available, **kw)
        monkeypatch.setattr(onnxrt, "ort_module", lambda: fake)
        monkeypatch.setattr(trtinfo, "trt_lib_version", lambda: "10.3.0")
        monkeypatch.setattr(trtinfo, "gpu_info", lambda: {"name": "Orin", "compute_capability": "8.7"})
        return fake
    return install


def _graph(tmp_path, precision, name="model.onnx"):
    from toy import make_toy_onnx

    return make_toy_onnx(tmp_path / name, size=64, precision=precision)


def _opened(fake):
    return [c[1] for c in fake.calls if c[0] == "open"]


@pytest.mark.parametrize("precision,fp16,int8", [("fp32", False, False), ("fp16", True, False), ("int8", False, True)])
def test_tensorrt_options_from_the_graph(tmp_path, fake_ort, precision, fp16, int8):
    fake = fake_ort()
    path = _graph(tmp_path, precision)
    x = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    with open_runner(path) as r:
        out = r.infer({"image": x})
        assert r.backend == f"onnxruntime/{TRT}" and r.max_batch == onnxrt.TRT_MAX_BATCH
    assert out["anomaly_map"].shape == (2, 1, 64, 64)
    (providers,) = _opened(fake)
    (trt_name, trt), (cuda_name, cuda), cpu = providers
    assert (trt_name, cuda_name, cpu) == (TRT, CUDA, CPU) and cuda == {"device_id": 0}
    assert trt["trt_fp16_enable"] is fp16 and trt["trt_int8_enable"] is int8 and trt["device_id"] == 0
    assert trt["trt_engine_cache_enable"] is True and trt["trt_timing_cache_enable"] is True
    cache = trt["trt_engine_cache_path"]
    assert cache.startswith(str(tmp_path / "model.onnx.trt-cache") + "/")
    assert cache.endswith("-trt10.3.0-ort1.16.3-sm87") and (tmp_path / "model.onnx.trt-cache").is_dir()
    assert trt["trt_profile_min_shapes"] == "image:1x3x64x64" and trt["trt_profile_max_shapes"] == "image:8x3x64x64"
    assert ("disable_fallback",) in fake.calls


def test_cache_key_follows_the_graph_and_tensorrt(tmp_path, fake_ort, monkeypatch):
    fake = fake_ort()
    a, b = _graph(tmp_path, "int8", "a.onnx"), _graph(tmp_path, "int8", "b.onnx")
    with open_runner(a), open_runner(b):
        pass
    import onnx

    model = onnx.load(str(b))
    model.doc_string = "retrained"  # a re-exported graph at the same path: the same structure, other bytes
    onnx.save(model, str(b))
    monkeypatch.setattr(trtinfo, "trt_lib_version", lambda: "10.3.0")
    with open_runner(b):
        pass
    monkeypatch.setattr(trtinfo, "trt_lib_version", lambda: "10.4.0")
    with open_runner(b):
        pass
    paths = [p[0][1]["trt_engine_cache_path"] for p in _opened(fake)]
    keys = [p.rsplit("/", 1)[1] for p in paths]
    assert keys[0] == keys[1]  # a and b: the same bytes, each beside itself
    assert paths[0] != paths[1] and len(set(keys[1:])) == 3


def test_auto_falls_back_with_one_warning_line(tmp_path, fake_ort, capsys):
    fake = fake_ort(fail_open={TRT: EPFail("[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP failed to create engine "
                                           "from network: int8 is not configured in the builder\nmore")})
    with open_runner(_graph(tmp_path, "int8")) as r:
        assert r.backend == f"onnxruntime/{CUDA}" and r.max_batch is None
        r.infer({"image": np.zeros((1, 3, 64, 64), np.float32)})
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"warning: {TRT} failed on model.onnx ([ONNXRuntimeError]")
    assert err[0].endswith(f"using {CUDA} instead")
    assert [p[0] if isinstance(p, str) else p[0] for p in _opened(fake)[-1]][:1] == [CUDA]


def test_explicit_provider_failure_is_named_not_blamed_on_the_graph(tmp_path, fake_ort):
    fake_ort(fail_open={TRT: EPFail("EP_FAIL : int8 is not configured in the builder")})
    with pytest.raises(HfrError, match=rf"model.onnx: ONNX Runtime's {TRT} failed while opening the graph "
                                       r"\(EP_FAIL : int8 is not configured in the builder\); the graph itself is "
                                       r"fine \(it runs on the CPU\).*--provider cuda") as e:
        open_runner(_graph(tmp_path, "int8"), provider="tensorrt")
    assert "re-export" not in str(e.value) and e.value.exit_code == 1


def test_a_broken_graph_is_still_called_so(tmp_path, fake_ort):
    fake_ort()
    path = _graph(tmp_path, "fp32")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(HfrError, match=r"model.onnx: not a valid ONNX file .*re-export it"):
        open_runner(path, provider="tensorrt")


def test_a_provider_failing_at_run_time_falls_back(tmp_path, fake_ort, capsys):
    fake = fake_ort(fail_run={TRT: EPFail("TensorRT EP execution context enqueue failed.")})
    x = np.random.default_rng(1).random((3, 3, 64, 64), dtype=np.float32)
    with open_runner(_graph(tmp_path, "fp16")) as r:
        out = r.infer({"image": x})
        assert r.backend == f"onnxruntime/{CUDA}"
    np.testing.assert_allclose(out["score"], (np.abs(x - 0.5) * 2).mean(axis=1).reshape(3, -1).max(axis=1), atol=1e-6)
    assert "warning: TensorrtExecutionProvider failed" in capsys.readouterr().err
    assert len(_opened(fake)) == 2


def test_only_options_onnxruntime_116_knows():
    assert "trt_timing_cache_path" not in ORT_TRT_OPTIONS  # 1.17+: the fake would refuse it, as 1.16 does
    meta = types.SimpleNamespace(precision="int8", image_size=64, extra={"batch": 2})
    opts = onnxrt.provider_options(TRT, meta, __import__("pathlib").Path(__file__), 0, "1.16.3")
    assert set(opts) <= ORT_TRT_OPTIONS and "trt_profile_min_shapes" not in opts  # fixed batch: no profile
    assert onnxrt.provider_options(CPU, meta, None, 0, "1.16.3") is None


def test_fake_matches_the_installed_onnxruntime():
    assert not issubclass(EPFail, RuntimeError)
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    assert not issubclass(state.EPFail, RuntimeError) and hasattr(ort.InferenceSession, "disable_fallback")
    assert sys.modules["onnxruntime"].get_available_providers()  # the real module is untouched
