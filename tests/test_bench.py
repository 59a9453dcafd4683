"""`hfr-edge bench`: the report of the plain function and of the CLI (toy ONNX graph), the choice
of a default artifact, count errors, and the PyTorch eager baseline on a tiny checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfr_edge.base.errors import HfrError
from hfr_edge.artifacts import bench
from hfr_edge.runtime.bench import format_report

KEYS = {"artifact", "backend", "precision", "batch", "iterations", "warmup", "image_size", "p50_ms", "p90_ms",
        "p99_ms", "mean_ms", "min_ms", "max_ms", "throughput_fps"}


def cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "hfr_edge", "bench", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd, env=env)


def check_report(rep, batch, iterations):
    assert KEYS <= set(rep)
    assert rep["batch"] == batch and rep["iterations"] == iterations
    assert 0 < rep["min_ms"] <= rep["p50_ms"] <= rep["p90_ms"] <= rep["p99_ms"] <= rep["max_ms"]
    assert rep["min_ms"] <= rep["mean_ms"] <= rep["max_ms"]
    assert rep["throughput_fps"] == pytest.approx(batch * 1000.0 / rep["mean_ms"])


def test_bench_function_on_toy_onnx(toy_onnx):
    rep = bench(toy_onnx, batch=2, iterations=15, warmup=2, provider="cpu")
    check_report(rep, 2, 15)
    assert rep["backend"].startswith("onnxruntime/") and rep["precision"] == "fp32" and rep["image_size"] == 64
    assert rep["artifact"] == str(toy_onnx) and rep["warmup"] == 2
    assert rep["compute_ms"] > 0  # ONNX Runtime tells only the compute time; no h2d/d2h
    assert "h2d_ms" not in rep and "d2h_ms" not in rep
    table = format_report(rep)
    assert "p50" in table and "throughput" in table and rep["backend"] in table


@pytest.mark.parametrize("kw, match", [
    ({"batch": 0}, r"--batch 0 must be at least 1"),
    ({"iterations": 0}, r"--iterations 0 must be at least 1"),
    ({"warmup": -1}, r"--warmup -1 must be 0 or more"),
])
def test_bench_rejects_bad_counts(toy_onnx, kw, match):
    with pytest.raises(HfrError, match=match):
        bench(toy_onnx, **kw)


def test_bench_cli_writes_json(toy_onnx, tmp_path):
    out = tmp_path / "bench.json"
    res = cli(toy_onnx, "--batch", 3, "--iterations", 10, "--warmup", 1, "--json", out, "--provider", "cpu")
    assert res.returncode == 0, res.stderr
    rep = json.loads(out.read_text())
    check_report(rep, 3, 10)
    assert "p50" in res.stdout and "onnxruntime/" in res.stdout and f"wrote {out}" in res.stdout
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # written atomically


def test_bench_cli_picks_the_default_artifact(toy_onnx):
    (toy_onnx.parent / "toy.onnx").rename(toy_onnx.parent / "model.onnx")
    (toy_onnx.parent / "toy.onnx.json").rename(toy_onnx.parent / "model.onnx.json")
    res = cli("-n", 3, "--warmup", 0, cwd=toy_onnx.parent)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("using model.onnx (")


def test_bench_cli_errors_are_one_line(tmp_path):
    res = cli("-n", 3, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "hfr-edge: error: no model.engine or model.onnx" in res.stderr and "hfr-edge export ckpt.pt" in res.stderr


def test_bench_checkpoint_is_the_pytorch_eager_baseline(tmp_path):
    torch = pytest.importorskip("torch")  # the only optional dependency here: a broken import must fail
    from hfr_edge.checkpoint import save_checkpoint
    from hfr_edge.config import ModelConfig, NormStats
    from hfr_edge.model import HFRAE

    torch.manual_seed(0)
    model = HFRAE(ModelConfig(image_size=32, decoder_widths=(8, 8, 8)), pretrained=False)
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model, NormStats(threshold=1.0, low=0.0), {"epochs": 0})
    rep = bench(ckpt, batch=2, iterations=3, warmup=1, provider="cpu")
    check_report(rep, 2, 3)
    assert rep["backend"] == f"pytorch {torch.__version__} eager (cpu)" and rep["precision"] == "fp32"
    assert rep["image_size"] == 32
    with pytest.raises(HfrError, match=r"--provider tensorrt does not apply to a checkpoint"):
        bench(ckpt, iterations=1, provider="tensorrt")
