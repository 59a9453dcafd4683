"""The OpenVINO runner behind the same interface: parity with ONNX Runtime (toy graph and a real
exported one), the dynamic batch, the base Runner's checks, `auto`'s choice and the errors."""

import numpy as np
import pytest

pytest.importorskip("openvino")

from hfr_edge.base.errors import HfrError  # noqa: E402
from hfr_edge.runtime import runner as runner_mod  # noqa: E402
from hfr_edge.runtime.runner import open_runner  # noqa: E402


def rand_input(n, s=64, seed=0):
    return np.random.default_rng(seed).random((n, 3, s, s), dtype=np.float32)


def both(path, x):
    with open_runner(path, provider="cpu") as ort, open_runner(path, provider="openvino") as ov:
        assert ort.backend.startswith("onnxruntime/") and ov.backend.startswith("openvino ")
        return ort.infer({"image": x}), ov.infer({"image": x})


def test_toy_graph_matches_onnx_runtime(toy_onnx):
    a, b = both(toy_onnx, rand_input(3))
    for k in ("anomaly_map", "score"):
        assert b[k].dtype == np.float32 and b[k].shape == a[k].shape
        np.testing.assert_allclose(b[k], a[k], atol=1e-6)


@pytest.mark.slow
def test_exported_graph_matches_onnx_runtime_in_float32(tiny_model_onnx):
    """OpenVINO's CPU default on bfloat16-capable CPUs moves maps by ~1e-2; the runner asks for f32."""
    a, b = both(tiny_model_onnx, rand_input(2))
    np.testing.assert_allclose(b["anomaly_map"], a["anomaly_map"], atol=2e-4)
    np.testing.assert_allclose(b["score"], a["score"], atol=2e-4)


def test_batch_is_dynamic_and_each_image_independent(toy_onnx):
    x = rand_input(5, seed=1)
    with open_runner(toy_onnx, provider="openvino") as r:
        assert r.max_batch is None
        whole = r.infer({"image": x})
        parts = [r.infer({"image": x[i:i + 1]}) for i in range(5)]  # batch 5, then 1: reshaped each call
        again = r.infer({"image": x[:2]})
    assert whole["anomaly_map"].shape == (5, 1, 64, 64) and again["score"].shape == (2,)
    np.testing.assert_allclose(np.concatenate([p["score"] for p in parts]), whole["score"], atol=1e-6)
    np.testing.assert_allclose(again["anomaly_map"], whole["anomaly_map"][:2], atol=1e-6)


@pytest.mark.parametrize("feed, match", [
    ({"image": rand_input(1).astype(np.float64)}, r"input 'image': dtype float64, expected float32"),
    ({"image": rand_input(1, s=32)}, r"shape \(1, 3, 32, 32\), expected float32 \(N, 3, 64, 64\)"),
    ({"input": rand_input(1)}, r"feed \['input'\] must hold exactly one input named 'image'"),
    ({"image": np.asfortranarray(rand_input(2))}, r"not C-contiguous"),
])
def test_feed_checks_are_the_base_runners(toy_onnx, feed, match):
    with open_runner(toy_onnx, provider="openvino") as r:
        with pytest.raises(HfrError, match=match):
            r.infer(feed)


def test_graph_checks_are_the_base_runners(toy_onnx, tmp_path):
    import json

    side = toy_onnx.with_name(toy_onnx.name + ".json")
    meta = json.loads(side.read_text())
    meta["image_size"] = 128
    side.write_text(json.dumps(meta))
    with pytest.raises(HfrError, match=r"input 'image' has shape \['N', 3, 64, 64\], but its metadata says"):
        open_runner(toy_onnx, provider="openvino")
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a graph at all")
    side2 = tmp_path / "bad.onnx.json"
    side2.write_text(side.read_text())
    with pytest.raises(HfrError, match=r"bad.onnx: not a valid ONNX file for OpenVINO"):
        open_runner(bad, provider="openvino")


def test_foreign_graph_io_is_refused(tmp_path):
    pytest.importorskip("onnx")
    import onnx
    from onnx import TensorProto, helper

    from hfr_edge.base.artifact import ArtifactMeta, write_meta

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "foreign",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 64, 64])])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    write_meta(path, ArtifactMeta("onnx", "fp32", 64, {}, {"threshold": 1.0, "low": 0.0}))
    with pytest.raises(HfrError, match=r"graph I/O \['x'\] -> \['y'\] is not the hfr-edge contract"):
        open_runner(path, provider="openvino")


def test_auto_picks_openvino_for_int8_graphs_without_a_gpu_provider(toy_onnx, tmp_path, monkeypatch):
    import onnxruntime as ort
    from toy import make_toy_onnx

    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(ort.get_available_providers()):
        pytest.skip("this onnxruntime has a GPU provider, which auto keeps first")
    int8 = make_toy_onnx(tmp_path / "toy.int8cpu.onnx", size=64, precision="int8")
    assert runner_mod.auto_picks_openvino("int8") and not runner_mod.auto_picks_openvino("fp32")
    with open_runner(int8) as r8, open_runner(toy_onnx) as r32:
        assert r8.backend.startswith("openvino ") and r32.backend.startswith("onnxruntime/")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert not runner_mod.auto_picks_openvino("int8")


def test_openvino_does_not_apply_to_an_engine(toy_onnx, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    with pytest.raises(HfrError, match=r"--provider openvino applies to .onnx graphs"):
        open_runner(engine, provider="openvino")


def test_doctor_reports_openvino():
    from hfr_edge.doctor import collect, rows

    info = collect()
    assert info["openvino"]["version"] and any(d.startswith("CPU") for d in info["openvino"]["devices"])
    line = dict(rows(info))["openvino"]
    assert info["openvino"]["version"] in line and "CPU" in line


def test_runners_freed_out_of_order_leave_signals_deliverable(toy_onnx):
    """Each OpenVINO Core's CPU plugin swaps the thread's signal alternate stack and restores it when
    destroyed; two Cores freed out of creation order left it on unmapped memory, and the next Ctrl-C
    killed the process with SIGSEGV (the CI's suite died so, after calibrate's timing runners). The
    runners share one Core: free two out of order, then take a signal, in a fresh process."""
    import subprocess
    import sys

    code = f"""
import gc, os, signal
import numpy as np
from hfr_edge.runtime.openvino import OvRunner
x = {{"image": np.zeros((1, 3, 64, 64), np.float32)}}
a, b = OvRunner({str(toy_onnx)!r}), OvRunner({str(toy_onnx)!r}, threads=1)
a.infer(x); b.infer(x)
del a; gc.collect(); del b; gc.collect()
got = []
signal.signal(signal.SIGINT, lambda *_: got.append(1))
os.kill(os.getpid(), signal.SIGINT)
print("signals", len(got))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "signals 1" in r.stdout, (r.returncode, r.stderr[-800:])
