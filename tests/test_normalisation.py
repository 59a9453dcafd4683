"""The normalisation contract, against raw values computed without DeployModel: the raw threshold
maps to exactly 0.5 and the smallest map value to exactly 0, in PyTorch and in the exported graph.
(Parity tests compare DeployModel with its own export, so they cannot see a wrong formula.)"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: E402
from hfr_edge.config import ModelConfig, NormStats  # noqa: E402
from hfr_edge.model import HFRAE, DeployModel, amap_for  # noqa: E402

EXACT = 1e-6  # float32 rounding of (raw - low) * scale near 0.5


def _raw(model, x):
    """Raw map (N, 1, S, S) and score (N,) from the model and the map module: no normalisation."""
    with torch.no_grad():
        enc, dec = model(x)
        return amap_for(model.cfg, model)(enc, dec)


def _anchored_stats(raw_map, raw_score, **kw):
    """Stats whose `low` is image 0's smallest map value and whose threshold is image 1's raw score."""
    low, thr = float(raw_map[0].min()), float(raw_score[1])
    # both terms of (raw - low) * scale must matter: a formula that forgot either one gives another number
    assert low > 0.01 and thr > low + 0.01, (low, thr)
    return NormStats(threshold=thr, low=low, **kw)


@pytest.fixture(scope="module")
def trained(tiny_ckpt):
    return model_from_checkpoint(load_checkpoint(tiny_ckpt))


def test_threshold_is_half_and_low_is_zero_in_pytorch(trained):
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    raw_m, raw_s = _raw(trained, x)
    stats = _anchored_stats(raw_m, raw_s)
    with torch.no_grad():
        m, s = DeployModel(trained, stats)(x)
    assert float(m[0].min()) == pytest.approx(0.0, abs=EXACT)
    assert float(s[1]) == pytest.approx(0.5, abs=EXACT)
    # affine with the stats' own scale everywhere, not clipped
    np.testing.assert_allclose(m.numpy(), (raw_m.numpy() - stats.low) * stats.map_scale, atol=EXACT)
    np.testing.assert_allclose(s.numpy(), (raw_s.numpy() - stats.low) * stats.scale, atol=EXACT)


def test_mean_score_has_its_own_threshold():
    """score="mean": the image score's threshold and the map's threshold each map to 0.5."""
    torch.manual_seed(0)
    model = HFRAE(ModelConfig(image_size=64, decoder_widths=(16, 8, 4), score="mean"), pretrained=False).eval()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    raw_m, raw_s = _raw(model, x)
    map_thr = float(raw_m[2].max())
    stats = _anchored_stats(raw_m, raw_s, map_threshold=map_thr)
    assert abs(map_thr - stats.threshold) > 0.01  # two different boundaries
    with torch.no_grad():
        m, s = DeployModel(model, stats)(x)
    assert float(m[0].min()) == pytest.approx(0.0, abs=EXACT)
    assert float(m[2].max()) == pytest.approx(0.5, abs=EXACT)
    assert float(s[1]) == pytest.approx(0.5, abs=EXACT)


def test_threshold_is_half_and_low_is_zero_in_the_onnx_graph(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from hfr_edge.base.artifact import load_meta
    from hfr_edge.export.onnx_export import export_onnx

    x = np.random.default_rng(3).random((3, 3, 64, 64), dtype=np.float32)
    raw_m, raw_s = _raw(trained, torch.from_numpy(x))
    stats = _anchored_stats(raw_m, raw_s)
    ckpt = save_checkpoint(tmp_path / "anchored.pt", trained, stats, {"epochs": 0})
    onnx_path = export_onnx(str(ckpt), str(tmp_path / "model.onnx"))
    assert load_meta(onnx_path).norm == stats.to_dict()  # the statistics travel with the graph
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    m, s = sess.run(["anomaly_map", "score"], {"image": x})
    assert float(m[0].min()) == pytest.approx(0.0, abs=1e-5)
    assert float(s[1]) == pytest.approx(0.5, abs=1e-5)
    np.testing.assert_allclose(m, (raw_m.numpy() - stats.low) * stats.map_scale, atol=1e-4)


def test_top_score_has_its_own_threshold_in_the_onnx_graph(tmp_path):
    """score="top" (the default's): one TopK over the map, K a constant (an initializer, as TensorRT's
    ONNX parser requires), the score's threshold at 0.5 and the map's own threshold at 0.5."""
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from hfr_edge.export.onnx_export import export_onnx

    torch.manual_seed(0)
    model = HFRAE(ModelConfig(image_size=64, decoder_widths=(16, 8, 4), score="top", stats="none"),
                  pretrained=False).eval()
    x = np.random.default_rng(4).random((3, 3, 64, 64), dtype=np.float32)
    raw_m, raw_s = _raw(model, torch.from_numpy(x))
    want = torch.sort(raw_m.reshape(3, -1), dim=1, descending=True).values[:, :41].mean(1)
    assert torch.allclose(raw_s, want, atol=1e-6)
    stats = _anchored_stats(raw_m, raw_s, map_threshold=float(raw_m[2].max()))
    ckpt = save_checkpoint(tmp_path / "top.pt", model, stats, {"epochs": 0})
    onnx_path = export_onnx(str(ckpt), str(tmp_path / "model.onnx"))
    g = onnx.load(str(onnx_path))
    (topk,) = [n for n in g.graph.node if n.op_type == "TopK"]
    k = {i.name: onnx.numpy_helper.to_array(i) for i in g.graph.initializer}[topk.input[1]]
    assert k.tolist() == [41]
    m, s = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        ["anomaly_map", "score"], {"image": x})
    assert float(s[1]) == pytest.approx(0.5, abs=1e-5) and float(m[2].max()) == pytest.approx(0.5, abs=1e-5)
    np.testing.assert_allclose(s, (raw_s.numpy() - stats.low) * stats.scale, atol=1e-4)
