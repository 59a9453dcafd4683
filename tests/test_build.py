"""`hfr-edge build` on a machine without TensorRT or a GPU: clear refusals, option parsing, the
choice of calibration images, and the wiring of build_engine (against a recording stand-in for
the tensorrt module: what our code asks TensorRT to do, and what it writes around the engine;
the real TensorRT build is test_trt_build_integration.py)."""

import hashlib
import json
import os
import subprocess
import sys
import types

import pytest

from hfr_edge.base.artifact import ArtifactMeta, load_meta
from hfr_edge.build import engine as engine_mod
from hfr_edge.build.pipeline import find_calib_images, parse_batch, parse_size, source_step
from hfr_edge.build.engine import build_engine
from hfr_edge.build.plan import make_plan
from hfr_edge.base.errors import HfrError
from hfr_edge.runtime.trtinfo import gpu_info, trt_version


def _cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "hfr_edge", "build", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture
def model_dir(tmp_path):
    pytest.importorskip("onnx")
    from toy import make_toy_onnx

    make_toy_onnx(tmp_path / "model.onnx", size=64)
    (tmp_path / "cal").mkdir()
    return tmp_path


def test_without_tensorrt_one_line_and_nothing_written(model_dir):
    if trt_version() and gpu_info():
        pytest.skip("tensorrt and a GPU are present: the missing-TensorRT refusal cannot be shown here")
    before = sorted(p.name for p in model_dir.rglob("*"))
    r = _cli(["model.onnx", "--int8", "--calib", "cal"], model_dir)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hfr-edge: error: building a TensorRT engine needs")
    assert "Traceback" not in r.stderr and "--system-site-packages" in lines[0] and "pypi.nvidia.com" in lines[0]
    assert sorted(p.name for p in model_dir.rglob("*")) == before


@pytest.mark.parametrize("args,match", [(["--fp16", "--int8"], "exclusive"), (["--batch", "8:1:1"], "--batch"),
                                        (["--workspace", "12Q"], "--workspace"), (["-n", "0"], "-n 0"),
                                        (["--calib", "cal"], "applies to --int8")])
def test_cli_refuses_bad_options(model_dir, args, match):
    r = _cli(["model.onnx", *args], model_dir)
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("text,expected", [("1:1:8", (1, 1, 8)), ("1:4:16", (1, 4, 16)), ("8", (8, 8, 8)),
                                           (" 2:2:2 ", (2, 2, 2))])
def test_parse_batch(text, expected):
    assert parse_batch(text) == expected


@pytest.mark.parametrize("text", ["0:1:8", "4:2:8", "1:8:4", "a:b:c", "1:2", "1:2:3:4", "", "-1"])
def test_parse_batch_errors(text):
    with pytest.raises(HfrError, match="--batch .* MIN:OPT:MAX"):
        parse_batch(text)


@pytest.mark.parametrize("text,expected", [("512M", 512 * 2**20), ("2G", 2 * 2**30), ("1.5G", 3 * 2**29),
                                           ("64MiB", 64 * 2**20), ("2g", 2 * 2**30), ("1048576", 2**20)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "2X", "-1G", "0", "512K", "G", "1e9"])
def test_parse_size_errors(text):
    with pytest.raises(HfrError, match="--workspace"):
        parse_size(text)


def test_source_step():
    assert source_step("fp32", None) == "as_is"
    assert source_step("fp32", "fp16") == "fp16"
    assert source_step("fp32", "int8") == "calibrate"
    assert source_step("int8", "int8") == "as_is" and source_step("fp16", "fp16") == "as_is"
    with pytest.raises(HfrError, match="needs the fp32 graph"):
        source_step("fp16", "int8")


def test_calibration_images_in_order(tmp_path):
    model = tmp_path / "m" / "model.onnx"
    model.parent.mkdir()
    data = tmp_path / "train_data"
    meta = ArtifactMeta("onnx", "fp32", 64, {}, {"threshold": 1.0, "low": 0.0}, {"train": {"data": str(data)}})
    with pytest.raises(HfrError, match="100-500 representative frames"):
        find_calib_images(model, meta, None)  # recorded training data missing on this machine
    data.mkdir()
    assert find_calib_images(model, meta, None) == data
    (data / "train" / "good").mkdir(parents=True)
    (data / "test" / "broken").mkdir(parents=True)
    assert find_calib_images(model, meta, None) == data / "train" / "good"  # MVTec: never the defects
    idx = ArtifactMeta("onnx", "fp32", 64, {}, meta.norm, {"train": {"data": str(data), "format": "mnist"}})
    with pytest.raises(HfrError, match="--images DIR"):
        find_calib_images(model, idx, None)  # IDX files are no image folder
    (model.parent / "calib").mkdir()
    assert find_calib_images(model, meta, None) == model.parent / "calib"
    assert find_calib_images(model, meta, str(data)) == data
    with pytest.raises(HfrError, match="--images .*nowhere: not found"):
        find_calib_images(model, meta, str(tmp_path / "nowhere"))


# --- build_engine against a recording stand-in for the tensorrt module -------------------------


class _Rec:
    """Records TensorRT calls; stands in for tensorrt where it cannot be installed."""

    def __init__(self, version, input_shape=(-1, 3, 64, 64), parse_error=None):
        self.calls = []
        self.input_shape, self.parse_error = input_shape, parse_error
        rec = self

        class Config:
            def set_memory_pool_limit(self, pool, size):
                rec.calls.append(("set_memory_pool_limit", pool, size))

            def set_flag(self, flag):
                rec.calls.append(("set_flag", flag))

            def add_optimization_profile(self, p):
                rec.calls.append(("add_optimization_profile",))

            def create_timing_cache(self, data):
                rec.calls.append(("create_timing_cache", bytes(data)))
                return b"cache:" + bytes(data)

            def set_timing_cache(self, cache, ignore_mismatch):
                rec.calls.append(("set_timing_cache", ignore_mismatch))
                return True

            def get_timing_cache(self):
                return types.SimpleNamespace(serialize=lambda: b"TIMING")

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                rec.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

        class Network:
            num_inputs = 1

            def get_input(self, i):
                return types.SimpleNamespace(name="image", shape=rec.input_shape)

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                rec.calls.append(("create_network", flags))
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                rec.calls.append(("build_serialized_network",))
                return b"ENGINE-BYTES"

        class Parser:
            def __init__(self, network, logger):
                self.num_errors = 1 if rec.parse_error else 0

            def parse(self, data):
                return not rec.parse_error

            def get_error(self, i):
                return rec.parse_error

        self.module = types.SimpleNamespace(
            __version__=version, Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
            Builder=Builder, OnnxParser=Parser, IBuilderConfig=Config,
            NetworkDefinitionCreationFlag=types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=1),
            BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8"),
            MemoryPoolType=types.SimpleNamespace(WORKSPACE="WORKSPACE"))


@pytest.fixture
def fake_trt(monkeypatch):
    def install(version, **kw):
        rec = _Rec(version, **kw)
        monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
        monkeypatch.setattr(engine_mod, "quick_latency", lambda *a, **k: None)
        return rec
    return install


def test_build_engine_trt10_int8_wiring(tmp_path, fake_trt):
    pytest.importorskip("onnx")
    from toy import make_toy_onnx

    onnx_path = make_toy_onnx(tmp_path / "model.int8.onnx", size=64, precision="int8")
    rec = fake_trt("10.3.0")
    plan = make_plan("10.3.0", engine_mod.api_of(rec.module), "int8")
    cache = tmp_path / "timing.cache"
    summary = build_engine(onnx_path, tmp_path / "model.engine", plan, (1, 2, 8), 2 << 30, cache)
    assert ("create_network", 1 << 1) in rec.calls  # STRONGLY_TYPED only
    assert ("set_memory_pool_limit", "WORKSPACE", 2 << 30) in rec.calls
    assert not [c for c in rec.calls if c[0] == "set_flag"]
    assert ("set_shape", "image", (1, 3, 64, 64), (2, 3, 64, 64), (8, 3, 64, 64)) in rec.calls
    assert (tmp_path / "model.engine").read_bytes() == b"ENGINE-BYTES" and cache.read_bytes() == b"TIMING"
    meta = load_meta(tmp_path / "model.engine")
    assert meta.kind == "engine" and meta.precision == "int8" and meta.image_size == 64
    assert meta.norm == {"threshold": 1.0, "low": 0.0} and meta.extra["toy"] is True
    fp = meta.extra["fingerprint"]
    assert fp["tensorrt"] == "10.3.0" and fp["batch_profile"] == [1, 2, 8] and fp["precision"] == "int8"
    assert fp["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert meta.extra["build"]["plan"]["network_flags"] == ["STRONGLY_TYPED"]
    assert summary["engine_bytes"] == len(b"ENGINE-BYTES") and summary["precision"] == "int8"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_build_engine_trt85_flags_and_explicit_batch(tmp_path, fake_trt):
    pytest.importorskip("onnx")
    from toy import make_toy_onnx

    onnx_path = make_toy_onnx(tmp_path / "model.int8.onnx", size=64, precision="int8")
    rec = fake_trt("8.5.2.2")
    build_engine(onnx_path, tmp_path / "model.engine", make_plan("8.5.2.2", None, "int8"), (1, 1, 8), 2**30)
    assert ("create_network", 1 << 0) in rec.calls
    assert [c[1] for c in rec.calls if c[0] == "set_flag"] == ["INT8", "FP16"]
    assert not [c for c in rec.calls if c[0] == "create_timing_cache"]
    assert json.loads((tmp_path / "model.engine.json").read_text())["kind"] == "engine"


def test_parser_error_names_the_node_and_writes_nothing(tmp_path, fake_trt, toy_onnx):
    err = types.SimpleNamespace(node=lambda: 3, node_name=lambda: "/decoder/Conv_7", node_operator=lambda: "Conv",
                                desc=lambda: "Unsupported\n attribute")
    fake_trt("10.3.0", parse_error=err)
    with pytest.raises(HfrError, match=r"cannot parse node 3 /decoder/Conv_7 Conv: Unsupported attribute;") as e:
        build_engine(toy_onnx, tmp_path / "out.engine", make_plan("10.3.0", None, "fp32"))
    assert "\n" not in str(e.value) and not (tmp_path / "out.engine").exists()


def test_fixed_batch_graph_needs_matching_profile(tmp_path, fake_trt, toy_onnx):
    fake_trt("10.3.0", input_shape=(1, 3, 64, 64))
    with pytest.raises(HfrError, match="batch is fixed to 1; use --batch 1:1:1"):
        build_engine(toy_onnx, tmp_path / "out.engine", make_plan("10.3.0", None, "fp32"), (1, 1, 8))


# --- the engine fingerprint the runtime checks ----------------------------------------------------


def _engine_meta(trt="8.5.2.2", gpu="Orin", cc="8.7"):
    fp = {"tensorrt": trt, "gpu": gpu, "compute_capability": cc, "precision": "int8"}
    return ArtifactMeta("engine", "int8", 64, {}, {"threshold": 1.0, "low": 0.0}, {"fingerprint": fp})


@pytest.fixture
def device(monkeypatch):
    from hfr_edge.runtime import trtinfo

    def set_device(trt, gpu, cc):
        monkeypatch.setattr(trtinfo, "trt_version", lambda: trt)
        monkeypatch.setattr(trtinfo, "gpu_info", lambda: gpu and {"name": gpu, "compute_capability": cc})
        return trtinfo.check_engine_fingerprint
    return set_device


def test_fingerprint_accepts_the_same_device(device):
    check = device("8.5.2.2", "NVIDIA Jetson AGX Orin Developer Kit", "8.7")  # device tree names the module
    check(_engine_meta(), "model.engine")  # pycuda said "Orin" at build time: the same GPU
    device("8.5.3.1", "Orin", "8.7")(_engine_meta(), "model.engine")  # same major.minor


@pytest.mark.parametrize("trt,gpu,cc", [("10.3.0", "Orin", "8.7"), ("8.5.2.2", "Xavier", "7.2"),
                                        ("8.5.2.2", "Orin", "8.6")])
def test_fingerprint_refuses_another_device(device, trt, gpu, cc):
    check = device(trt, gpu, cc)
    with pytest.raises(HfrError, match=r"model.engine: built for Orin cc 8.7 with TensorRT 8.5.2.2, this device is "
                                       r".* rebuild on this device: hfr-edge build model.onnx --int8"):
        check(_engine_meta(), "model.engine")


def test_fingerprint_missing_or_no_tensorrt(device):
    with pytest.raises(HfrError, match="no build fingerprint"):
        device("8.5.2.2", "Orin", "8.7")(ArtifactMeta("engine", "fp32", 64, {}, {"threshold": 1, "low": 0}), "e")
    with pytest.raises(HfrError, match="TensorRT is not importable"):
        device(None, None, None)(_engine_meta(), "model.engine")
