"""Calibrate: a TensorRT-compatible Q/DQ graph from calibration frames, inspected node by node."""

import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")

from onnx import numpy_helper  # noqa: E402

from hfr_edge.base.artifact import load_meta  # noqa: E402
from hfr_edge.calib.frames import collect_frames, even_sample  # noqa: E402
from hfr_edge.calib.qdq import QUANT_OPS, RESIDUAL_OP, qdq_problems  # noqa: E402
from hfr_edge.base.errors import HfrError  # noqa: E402
from hfr_edge.export.graph import MODEL_SCOPE  # noqa: E402
from hfr_edge.metrics import spearman  # noqa: E402
from hfr_edge.variants import calibrate_model  # noqa: E402


@pytest.fixture(scope="module")
def int8_model(tiny_model_onnx, syn_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    return calibrate_model(str(tiny_model_onnx), str(syn_data / "train"), str(out), n=10, method="minmax")


def test_qdq_graph_follows_tensorrt_rules(int8_model):
    model = onnx.load(str(int8_model))
    g = model.graph
    assert qdq_problems(model) == []
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for n in qdq:  # symmetric int8: every zero point is an int8 zero
        zp = numpy_helper.to_array(inits[n.input[2]])
        assert zp.dtype == np.int8 and not zp.any()
    outputs = {o.name for o in g.output}
    for n in qdq:
        assert not set(n.output) & outputs, "Q/DQ on a graph output"
        for c in consumers.get(n.output[0], []):
            assert c.op_type != "Resize", "Q/DQ in front of Resize"
            if n.op_type == "DequantizeLinear":
                residual = c.op_type == RESIDUAL_OP and c.name.startswith(MODEL_SCOPE)
                assert c.op_type in QUANT_OPS or residual, f"{c.op_type} takes a quantized input"
    for n in g.node:  # the fusion tail (residuals, resize, blur, score, normalisation) stays float
        if not n.name.startswith(MODEL_SCOPE) and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in n.input), n.name
    # weights per channel: a conv weight's scale has one value per output channel
    conv = next(n for n in g.node if n.op_type == "Conv" and n.name.startswith(MODEL_SCOPE) and n.input[1] in producers)
    wdq = producers[conv.input[1]]
    assert wdq.op_type == "DequantizeLinear" and numpy_helper.to_array(inits[wdq.input[1]]).size > 1
    assert load_meta(int8_model).precision == "int8"


def test_early_layers_stay_float(int8_model, tiny_model_onnx):
    """The encoder's layers at half the input's resolution (stem, block 0, block 1's expansion) take
    float inputs and float weights; every later convolution of the encoder is quantized."""
    g = onnx.load(str(int8_model)).graph
    convs = [n for n in g.node if n.op_type == "Conv" and n.name.startswith(MODEL_SCOPE) and "/decoder/" not in n.name]
    early = [n for n in convs if "_conv_stem" in n.name or "_blocks.0/" in n.name or "_blocks.1/_expand" in n.name]
    assert len(early) == 4
    for n in convs:
        quantized = _dq_of(g, n.input[0]) is not None and _dq_of(g, n.input[1]) is not None
        assert quantized == (n not in early), n.name


@pytest.fixture(scope="module")
def surface_onnx(syn_data, tmp_path_factory):
    """A tiny model with the defaults' statistics (`--preset surface`), exported."""
    from hfr_edge.checkpoint import save_checkpoint
    from hfr_edge.config import ModelConfig, TrainConfig
    from hfr_edge.data import load_items, open_dataset
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.train import fit

    x, _, _, _ = load_items(open_dataset(str(syn_data)).train, 64)
    model, stats, summary = fit(x[:10], x[10:], ModelConfig(image_size=64, decoder_widths=(32, 16, 8)),
                                TrainConfig(epochs=2, batch_size=4), progress=False)
    work = tmp_path_factory.mktemp("surface")
    return export_onnx(str(save_checkpoint(work / "ckpt.pt", model, stats, summary)), str(work / "model.onnx"))


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_early_layers_in_float_keep_a_model_with_statistics_close(surface_onnx, syn_data, target, monkeypatch, tmp_path):
    """The statistics' whitening magnifies error in the features. Quantizing the encoder's early layers
    too moves this tiny model's map far more than the paper model's (0.05); keeping them in float
    lowers that (on bottle, 30 epochs, the int8 pixel AUROC drop falls to <= 0.0005 on both
    targets: benchmarks/int8_early.py)."""
    from hfr_edge.calib import qdq

    def error(name):
        out = calibrate_model(str(surface_onnx), str(syn_data / "train"), str(tmp_path / name), n=10,
                              method="minmax", target=target, speed=False)
        assert qdq_problems(onnx.load(str(out)), target) == []
        return json.loads(out.with_name(out.name.replace(".onnx", ".calib.json")).read_text())["holdout"]

    kept = error("kept.onnx")
    monkeypatch.setattr(qdq, "early_layers", lambda model: [])
    all_int8 = error("all.onnx")
    assert kept["map_mean_rel_error"] < 0.8 * all_int8["map_mean_rel_error"]  # TensorRT 0.25 vs 18, cpu 0.28 vs 0.37
    assert kept["verdict_flips"] == 0


def _dq_of(g, name):
    return next((n for n in g.node if name in n.output and n.op_type == "DequantizeLinear"), None)


def test_deconv_weights_per_tensor_and_residual_adds_fully_quantized(int8_model, tiny_model_onnx):
    """What TensorRT 8.5 computes correctly (per-tensor ConvTranspose weights) and what it fuses into
    int8 kernels (residual Adds with both inputs quantized), checked on the written graph."""
    g = onnx.load(str(int8_model)).graph
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tiny_model_onnx)).graph.initializer}
    fp32_w = {n.name: fp32[n.input[1]] for n in onnx.load(str(tiny_model_onnx)).graph.node if n.op_type == "ConvTranspose"}
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    deconvs = [n for n in g.node if n.op_type == "ConvTranspose"]
    assert len(deconvs) == 3
    for n in deconvs:
        dq = _dq_of(g, n.input[1])
        q, scale, zp = (inits[i] for i in dq.input)
        assert scale.size == 1 and zp.size == 1 and not any(a.name == "axis" for a in dq.attribute)
        w = fp32_w[n.name]
        assert float(scale) == pytest.approx(np.abs(w).max() / 127, rel=1e-6) and np.abs(q).max() == 127
        assert np.abs(q * scale - w).max() <= float(scale) / 2 + 1e-7  # rounding error only
    adds = [n for n in g.node if n.op_type == RESIDUAL_OP and n.name.startswith(MODEL_SCOPE)]
    assert adds and all(_dq_of(g, i) is not None for n in adds for i in n.input)


def test_graph_checks_reject_per_channel_deconv_and_half_quantized_add(int8_model):
    model = onnx.load(str(int8_model))
    g = model.graph
    deconv = next(n for n in g.node if n.op_type == "ConvTranspose")
    dq = _dq_of(g, deconv.input[1])
    inits = {i.name: i for i in g.initializer}
    q = numpy_helper.to_array(inits[dq.input[0]])
    channels = q.shape[1]  # ONNX Runtime >= 1.18 quantizes ConvTranspose weights on axis 1
    inits[dq.input[1]].CopyFrom(numpy_helper.from_array(np.full(channels, 0.01, np.float32), dq.input[1]))
    inits[dq.input[2]].CopyFrom(numpy_helper.from_array(np.zeros(channels, np.int8), dq.input[2]))
    dq.attribute.extend([onnx.helper.make_attribute("axis", 1)])
    add = next(n for n in g.node if n.op_type == RESIDUAL_OP and n.name.startswith(MODEL_SCOPE))
    q_node = next(n for n in g.node if _dq_of(g, add.input[1]).input[0] in n.output)
    add.input[1] = q_node.input[0]  # an Add between int8 layers with one input left in float
    problems = qdq_problems(model)
    assert any(deconv.name in p and "per channel" in p for p in problems), problems
    assert any(add.name in p and "one quantized input" in p for p in problems), problems
    assert len(problems) == 2


def test_naive_quantization_is_caught(tiny_model_onnx, tmp_path):
    """A plain quantize_static (what the issue warns of) quantizes the blur and the outputs."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    from hfr_edge.calib.qdq import _Reader

    x = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    naive = tmp_path / "naive.onnx"
    quantize_static(str(tiny_model_onnx), str(naive), _Reader(x), quant_format=QuantFormat.QDQ)
    problems = qdq_problems(onnx.load(str(naive)))
    assert any("zero point" in p for p in problems)
    assert any("fusion-tail" in p or "graph output" in p for p in problems)


def test_int8_close_to_fp32(int8_model):
    rep = json.loads(int8_model.with_name("model.int8.calib.json").read_text())
    h = rep["holdout"]
    assert h["n_frames"] >= 1 and h["map_mean_rel_error"] < 0.2


def test_frames_sources(tmp_path, syn_data):
    import cv2

    frames, names = collect_frames(str(syn_data / "train"), 5)
    assert len(frames) == 5 and frames[0].dtype == np.uint8 and frames[0].shape[2] == 3
    frames, _ = collect_frames(str(syn_data / "train" / "good" / "*.png"), 3)
    assert len(frames) == 3
    vid = tmp_path / "v.mp4"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    for i in range(20):
        w.write(np.full((64, 64, 3), i * 10, np.uint8))
    w.release()
    frames, _ = collect_frames(str(vid), 4)
    assert len(frames) == 4
    warned = []
    frames, _ = collect_frames(str(syn_data / "train"), 500, warn=warned.append)
    assert len(frames) == 12 and "using all" in warned[0]
    assert even_sample(10, 3) == [0, 4, 9] or even_sample(10, 3) == [0, 5, 9]


def test_bad_input(tmp_path, tiny_model_onnx, toy_onnx):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HfrError, match="no images found"):
        collect_frames(str(empty), 10)
    bad_vid = tmp_path / "bad.mp4"
    bad_vid.write_bytes(b"not a video")
    with pytest.raises(HfrError, match="cannot open the video|no frame"):
        collect_frames(str(bad_vid), 10)
    with pytest.raises(HfrError, match="not an hfr-edge graph"):
        foreign = tmp_path / "foreign.onnx"
        m = onnx.load(str(toy_onnx))
        del m.metadata_props[:]
        onnx.save(m, str(foreign))
        calibrate_model(str(foreign), str(empty), n=2)
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(tiny_model_onnx.read_bytes()[:1000])
    with pytest.raises(HfrError, match="not a valid ONNX"):
        calibrate_model(str(trunc), str(empty), n=2)


def test_cli_no_images_no_output(tmp_path, tiny_model_onnx):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "calibrate", str(tiny_model_onnx), "--images", str(empty),
                        "-o", str(tmp_path / "q.onnx")], capture_output=True, text=True)
    assert r.returncode == 2 and "no images found" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_report_with_labelled_eval(tiny_model_onnx, syn_data, tmp_path):
    out = calibrate_model(str(tiny_model_onnx), str(syn_data / "train"), str(tmp_path / "m.int8.onnx"), n=8,
                          method="minmax", eval_data=str(syn_data), eval_format="mvtec")
    rep = json.loads((tmp_path / "m.int8.calib.json").read_text())
    e = rep["eval"]
    assert set(e["fp32"]) == {"image_auroc", "pixel_auroc", "aupro", "f1_max"}
    # measured: AUROC 0.9375 both, pixel AUROC 0.983 / 0.984, Spearman 0.97, map error 0.03, no flip
    assert e["image_auroc_drop"] == pytest.approx(e["fp32"]["image_auroc"] - e["int8"]["image_auroc"])
    assert e["fp32"]["image_auroc"] >= 0.75 and abs(e["image_auroc_drop"]) <= 0.1
    assert abs(e["pixel_auroc_drop"]) <= 0.02
    a = e["agreement"]
    assert a["n_frames"] == 12 and a["spearman_score"] >= 0.8 and a["verdict_flips"] <= 0.1
    assert 0 < a["map_mean_rel_error"] < 0.15  # int8 differs from fp32 (it is not the fp32 graph twice), a little

    # the graph itself, run here without the report's code: close to fp32 on the test images
    import onnxruntime as ort

    from hfr_edge.data import load_items, open_dataset

    x, _, _, _ = load_items(open_dataset(str(syn_data)).test, 64)
    m32, s32 = ort.InferenceSession(str(tiny_model_onnx), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    m8, s8 = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    assert np.abs(m8 - m32).mean() / np.abs(m32).mean() < 0.15
    assert spearman(s32, s8) >= 0.8 and np.abs(s8 - s32).max() < 0.1


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_refit_quantizes_every_layer_and_refits_the_statistics(surface_onnx, syn_data, target, tmp_path):
    """`calibrate --refit CKPT`: every encoder convolution int8 (the early layers too), the statistics'
    constants fitted again (they differ from the fp32 graph's), the target's rules kept, the report
    and the graph's JSON say what was done, and no held-out verdict flips. (What the refit is worth
    shows on a trained model with enough images: benchmarks/int8_early.py; on this 10-image model it
    moves the map more than the rounding does.)"""
    out = calibrate_model(str(surface_onnx), str(syn_data / "train"), str(tmp_path / "r.onnx"), n=10,
                          target=target, speed=False, refit=str(surface_onnx.with_name("ckpt.pt")))
    q, fp = onnx.load(str(out)), onnx.load(str(surface_onnx))
    assert qdq_problems(q, target) == []
    convs = [n for n in q.graph.node if n.op_type == "Conv" and n.name.startswith(MODEL_SCOPE) and "/decoder/" not in n.name]
    assert convs and all(_dq_of(q.graph, n.input[0]) is not None for n in convs)
    before = {i.name: numpy_helper.to_array(i) for i in fp.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    gauss = {i for n in fp.graph.node if n.name.startswith("/amap/gauss") for i in n.input if i in before}
    assert any(not np.array_equal(before[k], after[k]) for k in gauss if k in after)
    rep = json.loads(out.with_name("r.calib.json").read_text())
    assert rep["early_layers"].startswith("int8") and rep["holdout"]["verdict_flips"] == 0
    assert load_meta(out).extra["calibration"]["early_layers"] == "int8"


def test_refit_auto_takes_the_graphs_own_checkpoint_for_a_part_on_a_cpu(syn_data, tmp_path, monkeypatch):
    """`--refit auto` (the default): a part's graph on the cpu target is refitted with the checkpoint
    its metadata names, found beside it, when --images are that checkpoint's training images; on
    TensorRT, with other images, with `none`, or where the refit cannot run the early layers stay
    float, and a part's graph says why in its note."""
    import io

    from hfr_edge.checkpoint import save_checkpoint
    from hfr_edge.config import ModelConfig, TrainConfig
    from hfr_edge.data import load_items, open_dataset
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.train import fit
    from hfr_edge.variants import _reads_stride4

    x, _, _, _ = load_items(open_dataset(str(syn_data)).train, 64)
    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats_level_weights=(1.0, 0.0, 0.0),
                      aligned_level_weights=None, part_level_weights=None)  # a part's map, whatever the alignment
    model, stats, summary = fit(x[:10], x[10:], cfg, TrainConfig(epochs=1, batch_size=4), progress=False)
    summary["data"] = str(syn_data.resolve())  # as `hfr-edge train DATA` records it
    export_onnx(str(save_checkpoint(tmp_path / "ckpt.pt", model, stats, summary)), str(tmp_path / "model.onnx"))
    assert _reads_stride4(load_meta(tmp_path / "model.onnx"))

    def early(target, images, refit="auto"):
        log = io.StringIO()
        out = calibrate_model(str(tmp_path / "model.onnx"), str(images), str(tmp_path / f"{target}.onnx"), n=10,
                              target=target, speed=False, refit=refit, log=log)
        return json.loads(out.with_name(f"{target}.calib.json").read_text())["early_layers"], log.getvalue()

    layers, said = early("cpu", syn_data / "train")
    assert layers.startswith("int8") and "--refit " in said and "ckpt.pt" in said
    layers, said = early("tensorrt", syn_data / "train")
    assert layers == "float" and "--refit auto refits for --target cpu; on tensorrt give --refit CKPT" in said
    layers, said = early("cpu", syn_data / "test")
    assert layers == "float" and "are not what" in said and "trained on" in said
    layers, said = early("cpu", syn_data / "train", refit="none")
    assert layers == "float" and "(--refit none)" in said
    import hfr_edge.variants

    def cannot(*args, **kwargs):  # what refit_calibrate raises with too few frames for its groups
        raise HfrError("4 frames are too few to refit 3 groups of statistics; give more frames (-n) of the training images")

    with monkeypatch.context() as m:  # auto falls back to the early layers in float and says why; asked for by
        m.setattr(hfr_edge.variants, "refit_calibrate", cannot)  # name, the failure stands
        layers, said = early("cpu", syn_data / "train")
        assert layers == "float" and "--refit auto: 4 frames are too few" in said and "(the refit could not run)" in said
        with pytest.raises(HfrError, match="too few"):
            early("cpu", syn_data / "train", refit=str(tmp_path / "ckpt.pt"))
    (tmp_path / "ckpt.pt").unlink()
    layers, said = early("cpu", syn_data / "train")
    assert layers == "float" and "ckpt.pt is not beside the graph" in said


def test_refit_refuses_another_checkpoint(surface_onnx, tiny_ckpt, tiny_model_onnx, syn_data, tmp_path):
    """A checkpoint other than the one the graph came from, or one without statistics, is refused in
    one line that names it, before anything is written."""
    with pytest.raises(HfrError, match=r"--refit .*ckpt.pt: not the checkpoint"):
        calibrate_model(str(surface_onnx), str(syn_data / "train"), str(tmp_path / "r.onnx"), n=10,
                        speed=False, refit=str(tiny_ckpt))
    with pytest.raises(HfrError, match="no feature statistics to refit"):
        calibrate_model(str(tiny_model_onnx), str(syn_data / "train"), str(tmp_path / "r.onnx"), n=10,
                        speed=False, refit=str(tiny_ckpt))
    assert not (tmp_path / "r.onnx").exists()


def test_refit_on_the_float_features_gives_back_the_trained_statistics(syn_data):
    """train.refit_statistics on the training images' own float features (an int8 graph without
    rounding) fits what training fitted: the same means and whitening, each level's scale unchanged."""
    import copy

    import torch

    from hfr_edge.config import ModelConfig, TrainConfig
    from hfr_edge.data import load_items, open_dataset
    from hfr_edge.train import _encode_all, fit, refit_statistics

    x, _, _, _ = load_items(open_dataset(str(syn_data)).train, 64)
    model, _, _ = fit(x[:10], x[10:], ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats_components=1),
                      TrainConfig(epochs=1, batch_size=4), progress=False)
    trained = copy.deepcopy(model.gauss.state_dict())
    floats = _encode_all(model, x[:10], "cpu")[0]
    refit_statistics(model, [f.numpy() if u else None for f, u in zip(floats, model.gauss.used)], x[:10])
    for k, v in model.gauss.state_dict().items():
        torch.testing.assert_close(v, trained[k], rtol=1e-4, atol=1e-5, msg=k)


def test_a_fixed_batch_graph_runs_any_count_and_calibrates(tiny_ckpt, tiny_model_onnx, syn_data, tmp_path):
    """A graph exported with `--batch 2` takes exactly two images: the runners fill a smaller batch up
    (ONNX Runtime and OpenVINO; the outputs of the images asked for, as the dynamic graph's), the
    detector splits a larger one, and `calibrate` feeds it two at a time for both targets, with an odd
    number of frames (before: ONNX Runtime's calibration failed on it with a traceback)."""
    import importlib.util

    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.runtime.detector import Detector
    from hfr_edge.runtime.runner import open_runner

    b2 = export_onnx(str(tiny_ckpt), str(tmp_path / "b2.onnx"), batch=2)
    x = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    with open_runner(tiny_model_onnx, provider="cpu") as dyn:
        want = dyn.infer({"image": x})
    for provider in ["cpu"] + (["openvino"] if importlib.util.find_spec("openvino") else []):
        with open_runner(b2, provider=provider) as r:
            for n in (1, 2):
                got = r.infer({"image": x[:n]})
                assert got["score"].shape == (n,) and got["anomaly_map"].shape == (n, 1, 64, 64)
                np.testing.assert_allclose(got["score"], want["score"][:n], atol=1e-3)
            maps, scores = Detector(r).predict_batch(x)
            np.testing.assert_allclose(scores, want["score"], atol=1e-3)
    for target in ("tensorrt", "cpu"):
        out = calibrate_model(str(b2), str(syn_data / "train"), str(tmp_path / f"b2-{target}.onnx"), n=9,
                              target=target, speed=False)
        assert qdq_problems(onnx.load(str(out)), target) == []


def test_refit_for_a_cpu_takes_one_gaussian_at_stride_4(syn_data, tmp_path):
    """A part's graph (statistics at stride 4) refitted for the cpu target takes CPU_STRIDE4_COMPONENTS
    Gaussians per level where its checkpoint has more (the int8 graph's one float product reads a third
    of the whitening at 3), the graph's JSON records the count, and calibrate says so; TensorRT's refit
    keeps the checkpoint's count. refit_statistics with `components` on the float features fits what a
    one-Gaussian fit of them gives, and keeps each level's mean distance on these images."""
    import dataclasses
    import io

    import torch

    from hfr_edge.checkpoint import save_checkpoint
    from hfr_edge.config import ModelConfig, TrainConfig
    from hfr_edge.data import load_items, open_dataset
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.model import feature_gaussian
    from hfr_edge.train import _encode_all, fit, refit_statistics
    from hfr_edge.variants import CPU_STRIDE4_COMPONENTS

    assert CPU_STRIDE4_COMPONENTS == 1
    x, _, _, _ = load_items(open_dataset(str(syn_data)).train, 64)
    cfg = ModelConfig(image_size=64, decoder_widths=(32, 16, 8), stats_level_weights=(1.0, 0.0, 0.0), stats_components=2,
                      aligned_level_weights=None, part_level_weights=None)  # a part's map with two Gaussians
    model, stats, summary = fit(x[:10], x[10:], cfg, TrainConfig(epochs=1, batch_size=4), progress=False)
    assert model.gauss.components == 2
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model, stats, summary)
    export_onnx(str(ckpt), str(tmp_path / "model.onnx"))

    floats = _encode_all(model, x[:10], "cpu")[0]
    with torch.inference_mode():
        before = model.gauss([floats[0], None, None])[0].mean() * model.gauss.level_scale[1, 0]
    one = feature_gaussian(dataclasses.replace(model.cfg, stats_components=1))
    one.fit(floats)
    refit_statistics(model, [f.numpy() if u else None for f, u in zip(floats, model.gauss.used)], x[:10], components=1)
    assert model.gauss.components == 1 and model.cfg.stats_components == 1
    torch.testing.assert_close(model.gauss.white0, one.white0, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        after = model.gauss([floats[0], None, None])[0].mean() * model.gauss.level_scale[1, 0]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-6)  # the map's scale of the distance kept

    for target, count in (("cpu", 1), ("tensorrt", 2)):
        log = io.StringIO()
        out = calibrate_model(str(tmp_path / "model.onnx"), str(syn_data / "train"), str(tmp_path / f"{target}.onnx"),
                              n=10, target=target, speed=False, refit=str(ckpt), log=log)
        assert load_meta(out).model["stats_components"] == count
        white = [i for i in onnx.load(str(out)).graph.initializer if len(i.dims) == 3 and i.dims[0] == 16 * 16 and i.dims[1] > 1]
        assert white and all(i.dims[2] == count * i.dims[1] for i in white)  # (positions, C, K C)
        assert ("Gaussian(s) per level where" in log.getvalue()) == (target == "cpu")
        assert json.loads(out.with_name(f"{target}.calib.json").read_text())["refit"]["stats_components"] == count
