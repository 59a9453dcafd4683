"""Export: the one-graph contract, parity with PyTorch, fp16, determinism, bad input."""

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hfr_edge.base.artifact import load_meta, sidecar  # noqa: E402
from hfr_edge.checkpoint import load_deploy_model  # noqa: E402
from hfr_edge.base.errors import HfrError  # noqa: E402
from hfr_edge.export.graph import ALLOWED_OPS, graph_meta, tail_nodes  # noqa: E402
from hfr_edge.export.onnx_export import export_onnx  # noqa: E402


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["anomaly_map", "score"], {"image": x})


def test_graph_contract(tiny_model_onnx):
    model = onnx.load(str(tiny_model_onnx))
    onnx.checker.check_model(model, full_check=True)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    ops = {n.op_type for n in model.graph.node}
    assert ops <= ALLOWED_OPS, f"operators outside the TensorRT allow-list: {ops - ALLOWED_OPS}"
    assert "Shape" not in ops and "Gather" not in ops  # static spatial shapes
    assert model.opset_import[0].version >= 17
    (inp,) = model.graph.input
    assert inp.name == "image"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1:] == [3, 64, 64] and isinstance(dims[0], str)
    assert [o.name for o in model.graph.output] == ["anomaly_map", "score"]
    meta = graph_meta(model, "graph")
    assert meta == load_meta(tiny_model_onnx)  # the JSON beside says the same
    assert meta.precision == "fp32" and meta.image_size == 64
    # upsampling and smoothing are folded into constant matrices: MatMuls, no Resize
    assert tail_nodes(model) and not any(n.op_type == "Resize" for n in model.graph.node)
    assert sum(n.op_type == "MatMul" for n in model.graph.node) >= 2


def test_parity_with_pytorch(tiny_ckpt, tiny_model_onnx):
    module, _, _ = load_deploy_model(tiny_ckpt)
    x = np.random.default_rng(0).random((5, 3, 64, 64), dtype=np.float32)
    with torch.no_grad():
        m, s = module(torch.from_numpy(x))
    om, os_ = _run(tiny_model_onnx, x)
    assert om.shape == (5, 1, 64, 64) and os_.shape == (5,)
    assert np.abs(om - m.numpy()).max() <= 1e-4
    assert np.abs(os_ - s.numpy()).max() <= 1e-4


def test_fp16_graph(tiny_ckpt, tiny_model_onnx, tmp_path):
    out = export_onnx(str(tiny_ckpt), str(tmp_path / "m16.onnx"), precision="fp16")
    model = onnx.load(str(out))
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert model.graph.input[0].type.tensor_type.elem_type == f32
    assert all(o.type.tensor_type.elem_type == f32 for o in model.graph.output)
    conv_w = {n.input[1] for n in model.graph.node if n.op_type == "Conv" and n.name.startswith("/model/")}
    inits = {i.name for i in model.graph.initializer}
    blur_w = {x for n in model.graph.node if n.op_type == "MatMul" and n.name in tail_nodes(model) for x in n.input
              if x in inits}  # the upsampling-and-smoothing matrices, two per level
    assert len(blur_w) == 6 and all(i.data_type == f32 for i in model.graph.initializer if i.name in blur_w)
    assert all(i.data_type == f16 for i in model.graph.initializer if i.name in conv_w)
    # the fusion tail computes in float32: its MatMuls take float32
    vi = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    tail = tail_nodes(model)
    assert all(vi.get(i, f32) == f32 for n in model.graph.node if n.op_type == "MatMul" and n.name in tail
               for i in n.input)
    assert load_meta(out).precision == "fp16"
    x = np.random.default_rng(1).random((3, 3, 64, 64), dtype=np.float32)
    m32, s32 = _run(tiny_model_onnx, x)
    m16, s16 = _run(out, x)
    assert np.abs(m16 - m32).max() < 2e-2 and np.abs(s16 - s32).max() < 2e-2


def test_deterministic(tiny_ckpt, tmp_path):
    a = export_onnx(str(tiny_ckpt), str(tmp_path / "a.onnx"))
    b = export_onnx(str(tiny_ckpt), str(tmp_path / "b.onnx"))
    assert a.read_bytes() == b.read_bytes()


def test_fixed_batch(tiny_ckpt, tmp_path):
    out = export_onnx(str(tiny_ckpt), str(tmp_path / "b2.onnx"), batch=2)
    dim0 = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_value == 2


def test_bad_input(tiny_ckpt, tmp_path):
    with pytest.raises(HfrError, match="--opset 11 is too old"):
        export_onnx(str(tiny_ckpt), str(tmp_path / "x.onnx"), opset=11)
    with pytest.raises(HfrError, match="--precision"):
        export_onnx(str(tiny_ckpt), str(tmp_path / "x.onnx"), precision="int4")
    with pytest.raises(HfrError, match="does not exist"):
        export_onnx(str(tiny_ckpt), str(tmp_path / "no" / "dir" / "x.onnx"))
    assert not (tmp_path / "x.onnx").exists()


def test_unwritable_output_leaves_nothing(tiny_ckpt, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if (ro / "probe").parent.stat().st_mode & 0o200 == 0 and _can_write(ro):
            pytest.skip("running as a user that ignores permissions")
        r = subprocess.run([sys.executable, "-m", "hfr_edge", "export", str(tiny_ckpt), "-o", str(ro / "m.onnx")],
                           capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "m.onnx" in r.stderr
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def _can_write(d):
    try:
        (d / ".probe").write_text("x")
        (d / ".probe").unlink()
        return True
    except OSError:
        return False


def test_cli_export_defaults_to_model_onnx(tiny_ckpt, tmp_path):
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "export", str(tiny_ckpt)], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "model.onnx").is_file() and sidecar(tmp_path / "model.onnx").is_file()


def test_opset_above_17_says_tensorrt_8_cannot_read_it(tiny_ckpt, tmp_path, capsys):
    out = export_onnx(str(tiny_ckpt), str(tmp_path / "o18.onnx"), opset=18)
    err = capsys.readouterr().err
    assert "opset 18 graphs need TensorRT 9 or newer: TensorRT 8.5 (JetPack 5) reads opset <= 17" in err
    assert load_meta(out).extra["opset"] == 18 and onnx.load(str(out)).opset_import[0].version == 18
    export_onnx(str(tiny_ckpt), str(tmp_path / "o17.onnx"))
    assert "TensorRT 8.5" not in capsys.readouterr().err
