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


# --- build_engine against a strict stand-in for each generation's tensorrt module ----------------


@pytest.fixture
def fake_trt(monkeypatch):
    from fake_trt import install

    def setup(version):
        monkeypatch.setattr(engine_mod, "quick_latency", lambda *a, **k: None)
        return install(monkeypatch, version)
    return setup


def _names(rec, call):
    return [c[1] for c in rec.calls if c[0] == call]


@pytest.mark.parametrize("version,precision,network_flags,builder_flags,tail", [
    ("8.5.3", "fp32", 1 << 0, [], False),
    ("8.5.3", "fp16", 1 << 0, ["FP16", "OBEY_PRECISION_CONSTRAINTS"], True),
    ("8.5.3", "int8", 1 << 0, ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"], True),
    ("10.3.0", "fp16", 1 << 1, [], False),  # STRONGLY_TYPED
    ("10.3.0", "int8", 1 << 1, [], False),
    ("11.0.0", "fp16", 0, [], False),  # strongly typed is the only mode
    ("11.0.0", "int8", 0, [], False),
])
def test_build_engine_per_generation(tmp_path, fake_trt, tiny_graphs, version, precision, network_flags,
                                     builder_flags, tail):
    onnx_path = tiny_graphs[precision]
    rec = fake_trt(version)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(rec.serialized_cache)  # a cache an earlier build wrote
    plan = make_plan(version, engine_mod.api_of(rec.module), precision)
    summary = build_engine(onnx_path, tmp_path / "model.engine", plan, (1, 2, 8), 2 << 30, cache)
    assert rec.parsed == [onnx_path.read_bytes()]  # the graph's own bytes, parsed once
    assert _names(rec, "create_network") == [network_flags]
    assert _names(rec, "set_flag") == builder_flags
    assert ("set_memory_pool_limit", "WORKSPACE", 2 << 30) in rec.calls
    order = [c[0] for c in rec.calls]
    # the profile is set and registered, and the earlier timing cache loaded, before the build
    assert ("set_shape", "image", (1, 3, 64, 64), (2, 3, 64, 64), (8, 3, 64, 64)) in rec.calls
    assert order.index("set_shape") < order.index("add_optimization_profile") < order.index("build_serialized_network")
    assert ("create_timing_cache", rec.serialized_cache) in rec.calls
    assert ("build_serialized_network", 1, rec.serialized_cache) in rec.calls  # 1 profile, the cache set
    assert ("profiling_verbosity", "ProfilingVerbosity.DETAILED") in rec.calls
    rec.serialized_cache = b"TIMING-CACHE"
    assert cache.read_bytes() == rec.serialized_cache  # saved after the build
    assert (tmp_path / "model.engine").read_bytes() == b"ENGINE-BYTES" and summary["precision"] == precision
    assert load_meta(tmp_path / "model.engine").extra["build"]["plan"]["tail_fp32"] is tail
    pinned = [layer for layer in rec.layers if layer.precision_set]
    if not tail:
        assert not pinned and not any(layer.output_types for layer in rec.layers)
        return
    from hfr_edge.export.graph import tail_nodes
    import onnx

    tail_names = tail_nodes(onnx.load(str(onnx_path))) - {n.name for n in onnx.load(str(onnx_path)).graph.node
                                                           if n.op_type in ("Constant", "QuantizeLinear",
                                                                            "DequantizeLinear")}
    assert {layer.name for layer in pinned} == tail_names  # every tail layer, no encoder/decoder layer
    float32 = rec.module.DataType.FLOAT
    assert all(layer.precision == float32 and set(layer.output_types.values()) == {float32} for layer in pinned)


@pytest.fixture(scope="module")
def tiny_graphs(tiny_model_onnx, syn_data, tmp_path_factory):
    """The tiny model's fp32, fp16 and int8 graphs."""
    import io

    from hfr_edge.export.fp16 import convert_fp16
    from hfr_edge.variants import calibrate_model

    d = tmp_path_factory.mktemp("graphs")
    return {"fp32": tiny_model_onnx, "fp16": convert_fp16(tiny_model_onnx, d / "model.fp16.onnx"),
            "int8": calibrate_model(str(tiny_model_onnx), str(syn_data / "train"), d / "model.int8.onnx", n=8,
                                    report=False, log=io.StringIO())}


def test_without_a_timing_cache_file_a_new_one_is_made(tmp_path, fake_trt, toy_onnx):
    rec = fake_trt("10.3.0")
    cache = tmp_path / "new.cache"
    build_engine(toy_onnx, tmp_path / "m.engine", make_plan("10.3.0", None, "fp32"), (1, 1, 8), 2**30, cache)
    assert ("create_timing_cache", b"") in rec.calls and cache.read_bytes() == rec.serialized_cache


def test_a_foreign_timing_cache_is_replaced(tmp_path, fake_trt, tiny_graphs, capsys):
    rec = fake_trt("8.5.3")
    cache = tmp_path / "other.cache"
    cache.write_bytes(b"from another GPU")
    build_engine(tiny_graphs["fp32"], tmp_path / "m.engine", make_plan("8.5.3", None, "fp32"), (1, 1, 8), 2**30, cache)
    assert [c[1] for c in rec.calls if c[0] == "create_timing_cache"] == [b"from another GPU", b""]
    assert "does not fit this device" in capsys.readouterr().err


def test_no_timing_cache_unless_asked(tmp_path, fake_trt, tiny_graphs):
    rec = fake_trt("8.5.3")
    build_engine(tiny_graphs["fp32"], tmp_path / "m.engine", make_plan("8.5.3", None, "fp32"), (1, 1, 8), 2**30)
    assert not [c for c in rec.calls if c[0] in ("create_timing_cache", "set_timing_cache")]
    assert json.loads((tmp_path / "m.engine.json").read_text())["kind"] == "engine"


def test_the_fake_refuses_what_the_bindings_lack(fake_trt):
    """What the strict fake holds against code written for another generation."""
    trt = fake_trt("11.0.0").module
    assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert hasattr(trt.BuilderFlag, "DIRECT_IO")  # deprecated in 11, not removed
    config = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()
    with pytest.raises(AttributeError, match="int8_calibrator"):
        config.int8_calibrator = None
    assert not hasattr(trt.ILayer, "precision") and not hasattr(trt.ILayer, "set_output_type")
    config10 = fake_trt("10.3.0").module.Builder(None).create_builder_config()
    with pytest.raises(AttributeError, match="max_workspace_size"):
        config10.max_workspace_size = 1 << 30  # gone from the bindings in 10.x


def test_empty_or_foreign_bytes_do_not_parse(tmp_path, fake_trt, toy_onnx, monkeypatch):
    fake_trt("10.3.0")
    monkeypatch.setattr(engine_mod.Path, "read_bytes", lambda self: b"")
    with pytest.raises(HfrError, match=r"cannot parse node -1: not an ONNX model"):
        build_engine(toy_onnx, tmp_path / "out.engine", make_plan("10.3.0", None, "fp32"))
    assert not (tmp_path / "out.engine").exists()


def test_opset_above_17_refused_for_tensorrt_8(tmp_path, fake_trt, toy_onnx):
    fake_trt("8.5.3")  # the toy graph is opset 18
    with pytest.raises(HfrError, match=r"toy.onnx: opset 18, but TensorRT 8.5's ONNX parser reads opset <= 17; "
                                       r"re-export it with `hfr-edge export ckpt.pt --opset 17`"):
        build_engine(toy_onnx, tmp_path / "out.engine", make_plan("8.5.3", None, "fp32"))
    with pytest.raises(HfrError, match="opset 18"):
        make_plan("8.5.3", None, "fp32", graph_opset=18)
    make_plan("10.3.0", None, "fp32", graph_opset=18)


def test_a_per_channel_deconv_int8_graph_is_refused(tmp_path, fake_trt, tiny_graphs):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tiny_graphs["int8"]))
    g = model.graph
    deconv = next(n for n in g.node if n.op_type == "ConvTranspose")
    dq = next(n for n in g.node if deconv.input[1] in n.output)
    scale = next(i for i in g.initializer if i.name == dq.input[1])
    scale.CopyFrom(numpy_helper.from_array(np.full(4, 0.01, np.float32), scale.name))
    bad = tmp_path / "model.int8.onnx"
    onnx.save(model, str(bad))
    (tmp_path / "model.int8.onnx.json").write_text(tiny_graphs["int8"].with_name("model.int8.onnx.json").read_text())
    rec = fake_trt("8.5.3")
    with pytest.raises(HfrError, match=r"ConvTranspose weight quantized per channel.*recalibrate it"):
        build_engine(bad, tmp_path / "out.engine", make_plan("8.5.3", None, "int8"))
    assert not rec.parsed and not (tmp_path / "out.engine").exists()


def test_cpu_int8_graph_is_refused(tmp_path, fake_trt):
    pytest.importorskip("onnx")
    from toy import make_toy_onnx

    path = make_toy_onnx(tmp_path / "model.int8cpu.onnx", size=64, precision="int8")
    side = path.with_name(path.name + ".json")
    side.write_text(side.read_text().replace('"toy": true', '"toy": true, "calibration": {"target": "cpu"}'))
    fake_trt("10.3.0")
    with pytest.raises(HfrError, match=r"model.int8cpu.onnx: is the CPU int8 graph .*--target tensorrt"):
        build_engine(path, tmp_path / "model.engine", make_plan("10.3.0", None, "int8"))
    assert not (tmp_path / "model.engine").exists()


def test_parser_error_names_the_node_and_writes_nothing(tmp_path, fake_trt, toy_onnx):
    rec = fake_trt("10.3.0")
    err = types.SimpleNamespace(node=lambda: 3, node_name=lambda: "/decoder/Conv_7", node_operator=lambda: "Conv",
                                desc=lambda: "Unsupported\n attribute")

    class Failing(rec.module.OnnxParser):
        def parse(self, data):
            self._errors.append(err)
            return False
    rec.module.OnnxParser = Failing
    with pytest.raises(HfrError, match=r"cannot parse node 3 /decoder/Conv_7 Conv: Unsupported attribute;") as e:
        build_engine(toy_onnx, tmp_path / "out.engine", make_plan("10.3.0", None, "fp32"))
    assert "\n" not in str(e.value) and not (tmp_path / "out.engine").exists()


def test_fixed_batch_graph_needs_matching_profile(tmp_path, fake_trt, tiny_ckpt):
    from hfr_edge.export.onnx_export import export_onnx

    fixed = export_onnx(str(tiny_ckpt), str(tmp_path / "b1.onnx"), batch=1)
    fake_trt("10.3.0")
    with pytest.raises(HfrError, match="batch is fixed to 1; use --batch 1:1:1"):
        build_engine(fixed, tmp_path / "out.engine", make_plan("10.3.0", None, "fp32"), (1, 1, 8))


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
    device("8.5.2", "Orin", "8.7")(_engine_meta(), "model.engine")  # no build number here: nothing disagrees


@pytest.mark.parametrize("trt,gpu,cc", [("10.3.0", "Orin", "8.7"), ("8.5.2.2", "Xavier", "7.2"),
                                        ("8.5.2.2", "Orin", "8.6"), ("8.5.3.1", "Orin", "8.7"),
                                        ("8.5.2.1", "Orin", "8.7"), ("8.5.3", "Orin", "8.7")])
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
