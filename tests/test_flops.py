"""GFLOP per image counted from the graph (Conv, grouped Conv, ConvTranspose, MatMul, Gemm), written
at export, carried by the fp16 graph, and reported by `bench` with the achieved GFLOP/s."""

import json

import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hfr_edge.export.flops import count_gflop, graph_gflop  # noqa: E402


def _graph():
    import numpy as np

    w = lambda name, *shape: numpy_helper.from_array(np.ones(shape, np.float32), name)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),  # (N,4,8,8): 4*8*8 * 3*3*3 = 6912
        helper.make_node("Conv", ["a", "wd"], ["b"], pads=[1, 1, 1, 1], group=4),  # depthwise: 4*8*8 * 9 = 2304
        helper.make_node("ConvTranspose", ["b", "wt"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),  # 4*8*8 * 2*4*4 = 8192
        helper.make_node("MatMul", ["c", "m"], ["d"]),  # (N,2,16,16) @ (16,16): 2*16*16 * 16 = 8192
        helper.make_node("Flatten", ["d"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["y"]),  # (N,512) @ (512,3): 3 * 512 = 1536
    ]
    graph = helper.make_graph(nodes, "macs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              initializer=[w("w1", 4, 3, 3, 3), w("wd", 4, 1, 3, 3), w("wt", 4, 2, 4, 4),
                                           w("m", 16, 16), w("g", 512, 3)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_count_by_hand():
    macs = 6912 + 2304 + 8192 + 8192 + 1536
    assert count_gflop(_graph()) == pytest.approx(2 * macs / 1e9, rel=1e-12)


def test_export_counts_it_and_fp16_keeps_it(tiny_model_onnx, tmp_path):
    from hfr_edge.base.artifact import load_meta
    from hfr_edge.variants import make_fp16

    g = load_meta(tiny_model_onnx).extra["gflop_per_image"]
    assert g == pytest.approx(count_gflop(onnx.load(str(tiny_model_onnx))), abs=1e-4) and g > 0
    assert graph_gflop(tiny_model_onnx) is None  # the metadata has it: nothing to recount
    fp16 = make_fp16(tiny_model_onnx, tmp_path / "model.fp16.onnx")
    assert load_meta(fp16).extra["gflop_per_image"] == g


def test_bench_reports_cost_and_rate(tiny_model_onnx, tmp_path):
    from hfr_edge.artifacts import bench
    from hfr_edge.runtime.bench import format_report

    rep = bench(tiny_model_onnx, batch=2, iterations=5, warmup=1, provider="cpu")
    assert rep["gflop_per_image"] > 0
    assert rep["gflops"] == pytest.approx(rep["gflop_per_image"] * rep["throughput_fps"])
    assert "GFLOP/image" in format_report(rep) and "GFLOP/s" in format_report(rep)


def test_older_graph_is_counted_by_the_cli(toy_onnx, tmp_path):
    """A graph whose metadata lacks the count (the toy: no MAC ops, so 0) is counted at bench time."""
    import subprocess
    import sys

    out = tmp_path / "b.json"
    res = subprocess.run([sys.executable, "-m", "hfr_edge", "bench", str(toy_onnx), "--iters", "3", "--warmup", "0",
                          "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    rep = json.loads(out.read_text())
    assert rep["gflop_per_image"] == 0.0 and rep["gflops"] is None
