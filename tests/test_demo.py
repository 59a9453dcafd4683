"""`hfr-edge demo --quick` end to end in a subprocess, and its output-folder rules."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hfr_edge.base.errors import HfrError

pytest.importorskip("torch")
pytest.importorskip("onnx")

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ["pytorch fp32", "onnx fp32", "onnx fp16", "onnx int8", "onnx int8 cpu", "tensorrt fp32", "tensorrt fp16",
              "tensorrt int8"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick run into a folder an earlier demo left: its stale files must not survive."""
    from hfr_edge.demo import _prepare_out

    out = tmp_path_factory.mktemp("demo") / "out"
    _prepare_out(out)
    (out / "figures").mkdir()
    (out / "figures" / "worst_09_stale.png").write_bytes(b"not a png")
    (out / "data" / "test" / "stale").mkdir(parents=True)
    (out / "data" / "test" / "stale" / "000.png").write_bytes(b"not a png")
    (out / "summary.json").write_text("{}")
    cmd = [sys.executable, "-m", "hfr_edge", "demo", "--out", str(out), "--quick"]
    return out, subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_quick_demo_exits_0_with_one_line_per_stage(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage_lines = [l for l in proc.stderr.splitlines() if l.startswith("[")]
    assert stage_lines[0].startswith("[1/") and "synthetic data" in stage_lines[0]
    n = int(stage_lines[0].split("/")[1].split("]")[0])
    assert len(stage_lines) == n and stage_lines[-1].startswith(f"[{n}/{n}] report ... ")
    assert all(l.endswith(" s") for l in stage_lines)


@pytest.mark.slow
def test_quick_demo_summary(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = json.loads((out / "summary.json").read_text())
    assert {"image_auroc", "precisions", "stages", "total_seconds", "run"} <= set(s)
    assert 0.0 <= s["image_auroc"] <= 1.0
    assert [p["name"] for p in s["precisions"]] == PRECISIONS
    for p in s["precisions"]:
        if p.get("skipped"):
            assert p["name"].startswith("tensorrt") and p["reason"]
            continue
        assert (out / p["artifact"]).is_file()
        for k in ("image_auroc", "pixel_auroc"):
            assert 0.0 <= p[k] <= 1.0, (p["name"], k, p[k])
        assert p["p50_ms"] > 0 and p["throughput_fps"] > 0
        at = p["at_threshold"]  # what the threshold flags: the report's column
        assert (at["threshold"], at["n_anomalous"], at["n_good"]) == (0.5, 8, 4)
        assert 0 <= at["anomalous_flagged"] <= 8 and 0 <= at["good_flagged"] <= 4
    # the int8 graph is a real Q/DQ graph, the fp16 one a half-precision graph
    import onnx

    ops8 = {n.op_type for n in onnx.load(str(out / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops8
    assert json.loads((out / "model.fp16.onnx.json").read_text())["precision"] == "fp16"
    cpu8 = json.loads((out / "model.int8cpu.onnx.json").read_text())
    assert cpu8["precision"] == "int8" and cpu8["calibration"]["target"] == "cpu"
    row = next(p for p in s["precisions"] if p["name"] == "onnx int8 cpu")
    assert row["backend"].startswith("openvino" if importlib.util.find_spec("openvino") else "onnxruntime")
    assert all(p["backend"].startswith("onnxruntime") for p in s["precisions"] if p["name"] in PRECISIONS[1:4])
    assert set(s["stages"]) >= {"train", "export fp32", "calibrate int8", "calibrate int8 cpu", "bench", "report"}
    assert all(v >= 0 for v in s["stages"].values())
    assert s["total_seconds"] >= max(s["stages"].values())
    # the run went through every frame of the test video: 4 good + 4 defects x 2
    assert s["run"]["frames"] == 12 and s["run"]["fps"] > 0
    lines = (out / "run.jsonl").read_text().splitlines()
    assert len(lines) == 12 and all(0 <= json.loads(l)["score"] for l in lines)
    assert (out / "test.mp4").stat().st_size > 0 and (out / "run_overlay.mp4").stat().st_size > 0


@pytest.mark.slow
def test_quick_demo_report_and_figures(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    figs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "worst_09_stale.png" not in figs and not (out / "data" / "test" / "stale").exists()
    assert "roc.png" in figs and any(f.startswith("best_") for f in figs) and any(f.startswith("worst_") for f in figs)
    page = (out / "report.html").read_text()
    for name in PRECISIONS:
        assert name in page
    assert "flagged at the threshold" in page and " anomalous, " in page
    assert page.count('src="data:image/png;base64,') == len(figs)  # self-contained: every figure embedded
    assert "src=\"http" not in page
    s = json.loads((out / "summary.json").read_text())
    assert s["machine"]["cpu"] in page and str(s["machine"]["cores"]) in page
    assert "p50 latency" in page and "pixel AUROC" in page and "onnxruntime_providers" in page


def test_out_must_be_a_demo_folder(tmp_path):
    from hfr_edge.demo import demo

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(HfrError, match="not made by `hfr-edge demo`"):
        demo(foreign, quick=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(HfrError, match="is a file"):
        demo(afile, quick=True)


def test_rerun_replaces_data_and_figures(tmp_path):
    from hfr_edge.demo import MARKER, _prepare_out

    out = tmp_path / "out"
    _prepare_out(out)  # a fresh folder is created and marked
    assert (out / MARKER).is_file()
    (out / "figures").mkdir()
    (out / "figures" / "worst_01_stale.png").write_bytes(b"old")
    (out / "data" / "train").mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    _prepare_out(out)  # a second run: its own stale parts go, the rest is overwritten later
    assert not (out / "figures").exists() and not (out / "data").exists()
    assert (out / "summary.json").exists()
