"""calibrate --target cpu: the int8 graph for OpenVINO (uint8 activations, int8 per-channel weights,
fp32 tail), inspected node by node, run by OpenVINO in int8 kernels, and its report."""

import json
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from onnx import numpy_helper  # noqa: E402

from hfr_edge.base.artifact import load_meta  # noqa: E402
from hfr_edge.base.errors import HfrError  # noqa: E402
from hfr_edge.calib.defaults import int8_name  # noqa: E402
from hfr_edge.calib.qdq import QUANT_OPS, early_layers, qdq_problems  # noqa: E402
from hfr_edge.export.graph import MODEL_SCOPE  # noqa: E402
from hfr_edge.variants import calibrate_model  # noqa: E402


@pytest.fixture(scope="module")
def cpu_int8(tiny_model_onnx, syn_data, tmp_path_factory):
    """model.onnx copied into its own folder and calibrated there for the cpu target, with --eval."""
    d = tmp_path_factory.mktemp("cpu8")
    src = d / "model.onnx"
    shutil.copy(tiny_model_onnx, src)
    shutil.copy(str(tiny_model_onnx) + ".json", str(src) + ".json")
    out = calibrate_model(str(src), str(syn_data / "train"), n=10, target="cpu", eval_data=str(syn_data),
                          eval_format="mvtec")
    return src, out


def _init(g, name):
    inits = {i.name: i for i in g.initializer}
    return numpy_helper.to_array(inits[name]) if name in inits else None


def test_one_naming_rule():
    assert int8_name("a/model.onnx").name == "model.int8.onnx"
    assert int8_name("a/model.onnx", "cpu").name == "model.int8cpu.onnx"
    assert int8_name("a/m.v2.onnx", "cpu").name == "m.v2.int8cpu.onnx"


def test_cpu_graph_placement(cpu_int8):
    src, out = cpu_int8
    assert out == src.with_name("model.int8cpu.onnx") and out.is_file()
    meta = load_meta(out)
    assert meta.precision == "int8" and meta.extra["calibration"]["target"] == "cpu"
    assert meta.extra["calibration"]["symmetric"] is False
    model = onnx.load(str(out))
    g = model.graph
    assert qdq_problems(model, "cpu") == []
    assert any("is not int8" in p for p in qdq_problems(model, "tensorrt"))  # uint8: not a TensorRT graph
    producers = {o: n for n in g.node for o in n.output}
    early = set(early_layers(model))  # the encoder's full-resolution layers stay float (test_calibrate)
    assert early and all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear"
                         for n in g.node if n.name in early for i in n.input)
    quantized = [n for n in g.node if n.op_type in QUANT_OPS and n.name.startswith(MODEL_SCOPE) and n.name not in early]
    assert {"Conv", "ConvTranspose"} <= {n.op_type for n in quantized}
    for n in quantized:  # activations and weights both behind a DequantizeLinear, else no int8 kernel
        act, weight = producers.get(n.input[0]), producers.get(n.input[1])
        assert act is not None and act.op_type == "DequantizeLinear", n.name
        assert weight is not None and weight.op_type == "DequantizeLinear", n.name
        assert _init(g, act.input[2]).dtype == np.uint8  # unsigned activations
        w_zp, w_scale = _init(g, weight.input[2]), _init(g, weight.input[1])
        assert w_zp.dtype == np.int8 and not w_zp.any() and w_scale.size > 1  # symmetric, per channel
    for n in g.node:  # the fusion tail stays float: no quantized input outside the model scope
        if not n.name.startswith(MODEL_SCOPE) and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in n.input), n.name


def test_openvino_runs_every_quantized_convolution_in_int8(cpu_int8):
    pytest.importorskip("openvino")
    from hfr_edge.runtime.openvino import ov_core

    _, out = cpu_int8
    early = tuple(early_layers(onnx.load(str(out))))  # left in float on purpose
    core = ov_core()  # the process's one Core (a second Core freed out of order breaks signals)
    compiled = core.compile_model(core.read_model(str(out)), "CPU",
                                  {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32"})
    req = compiled.create_infer_request()
    req.infer({0: np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32)})
    convs = [p for p in req.get_profiling_info() if p.status == p.Status.EXECUTED and
             p.node_type in ("Convolution", "GroupConvolution", "ConvolutionBackpropData")
             and p.node_name.startswith(MODEL_SCOPE) and not p.node_name.startswith(early)]  # the tail's are float
    assert convs and all("i8" in p.exec_type.lower() for p in convs), [(p.node_name, p.exec_type) for p in convs]


def test_report_states_accuracy_on_openvino_and_speed(cpu_int8):
    pytest.importorskip("openvino")
    _, out = cpu_int8
    rep = json.loads(out.with_name("model.int8cpu.calib.json").read_text())
    assert rep["target"] == "cpu" and rep["int8_provider"] == "openvino"
    e = rep["eval"]
    assert e["int8_provider"] == "openvino" and abs(e["pixel_auroc_drop"]) <= 0.02 and abs(e["image_auroc_drop"]) <= 0.1
    assert e["agreement"]["spearman_score"] >= 0.8 and 0 < e["agreement"]["map_mean_rel_error"] < 0.15
    sp = rep["speed"]
    assert sp["backends"]["fp32"].startswith("onnxruntime/") and sp["backends"]["int8"].startswith("openvino ")
    assert sp["fp32_p50_ms"] > 0 and sp["int8_p50_ms"] > 0
    assert sp["speedup"] == pytest.approx(sp["fp32_p50_ms"] / sp["int8_p50_ms"])
    assert sp["speedup_1thread"] == pytest.approx(sp["fp32_1thread_p50_ms"] / sp["int8_1thread_p50_ms"])


def test_bad_target(tiny_model_onnx, syn_data):
    with pytest.raises(HfrError, match=r"--target 'gpu' must be one of tensorrt, cpu"):
        calibrate_model(str(tiny_model_onnx), str(syn_data / "train"), n=4, target="gpu")
