"""`hfr-edge serve` for real (PyTriton's bundled tritonserver, loopback, random ports) with its
clients: 4 concurrent clients equal to a local ONNX Runtime run, wrong requests refused while the
server keeps serving, health/metrics/metadata, and `run --server` through a kill and restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from serving import REPO, Server, free_ports, serve_skip_reason

_why = serve_skip_reason()
pytestmark = pytest.mark.skipif(_why is not None, reason=f"cannot serve here: {_why}")
TOL = 1e-5


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_onnx):
    """The tiny trained model (64 px) served with dynamic batching, max batch 4."""
    s = Server(tiny_model_onnx, free_ports(), tmp_path_factory.mktemp("serve") / "serve.log", "--max-batch", 4)
    s.start()
    yield s
    s.kill()


def _local(model, x):
    from hfr_edge.runtime.runner import open_runner

    with open_runner(model, provider="cpu") as r:
        return r.infer({"image": x})


def test_four_concurrent_clients_match_local_onnxruntime(server, tiny_model_onnx):
    from hfr_edge.runtime.runner import open_runner

    rng = np.random.default_rng(0)
    batches = [rng.random((1 + i % 3, 3, 64, 64), dtype=np.float32) for i in range(24)]
    refs = [_local(tiny_model_onnx, x) for x in batches]
    urls = [server.http, server.grpc, server.http, server.grpc]
    errors, diffs = [], []

    def client(k):
        try:
            with open_runner(urls[k]) as r:  # each client its own connection, as separate capture boxes
                for i in range(k, len(batches), 4):
                    out = r.infer({"image": batches[i]})
                    diffs.append(max(float(np.abs(out[n] - refs[i][n]).max()) for n in ("anomaly_map", "score")))
                    assert out["score"].shape == (batches[i].shape[0],)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(diffs) == len(batches) and max(diffs) <= TOL, max(diffs)


def test_wrong_shape_and_dtype_get_clear_errors_and_the_server_keeps_serving(server, tiny_model_onnx):
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException

    hc = th.InferenceServerClient(server.http[len("http://"):])
    gc = tg.InferenceServerClient(server.grpc[len("grpc://"):])

    def ask(mod, client, x, dtype="FP32", name="image"):
        i = mod.InferInput(name, list(x.shape), dtype)
        i.set_data_from_numpy(x)
        return client.infer("hfr_edge", [i])

    cases = [(np.zeros((1, 3, 32, 32), np.float32), "FP32", "image", "unexpected shape for input 'image'"),
             (np.zeros((1, 3, 64, 64), np.float64), "FP64", "image", "data-type is 'FP64', but model 'hfr_edge' expects 'FP32'"),
             (np.zeros((5, 3, 64, 64), np.float32), "FP32", "image", "batch-size must be <= 4"),
             (np.zeros((1, 3, 64, 64), np.float32), "FP32", "frame", "unexpected inference input 'frame'")]
    for mod, client in ((th, hc), (tg, gc)):
        for x, dtype, name, msg in cases:
            with pytest.raises(InferenceServerException, match=msg):
                ask(mod, client, x, dtype, name)
    x = np.random.default_rng(1).random((2, 3, 64, 64), dtype=np.float32)
    got = ask(th, hc, x).as_numpy("score").reshape(-1)
    assert np.abs(got - _local(tiny_model_onnx, x)["score"]).max() <= TOL


def test_health_metrics_and_metadata_from_the_server(server, tiny_model_onnx):
    from hfr_edge.base.artifact import load_meta
    from hfr_edge.runtime.runner import open_runner

    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/hfr_edge/ready"):
        with urllib.request.urlopen(server.http + path, timeout=5) as r:
            assert r.status == 200, path
    with open_runner(server.grpc) as r:  # metadata from the server's model config, no local file
        assert r.meta.to_dict() == load_meta(tiny_model_onnx).to_dict()
        assert r.max_batch == 4
        for _ in range(3):
            r.infer({"image": np.zeros((1, 3, 64, 64), np.float32)})
        assert set(r.last_timings) == {"server", "network"}
        assert sum(r.last_timings.values()) > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports[2]}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'nv_inference_request_success{model="hfr_edge",version="1"}' in text


def test_bench_server_reports_the_split(server, capsys):
    from hfr_edge.runtime.bench import bench, format_report

    rep = bench(server.http, batch=2, iterations=10, warmup=2)
    assert rep["artifact"] == server.http and rep["backend"].startswith("triton http://")
    assert rep["server_ms"] > 0 and rep["network_ms"] >= 0
    assert "server" in format_report(rep)


def _video(path, n):
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (96, 80))
    for i in range(n):
        img = np.full((80, 96, 3), 128, np.uint8)
        img[10:40, (i * 3) % 60:(i * 3) % 60 + 30] = (i * 7) % 256
        w.write(img)
    w.release()
    return path


def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_run_server_resumes_after_the_server_is_killed_and_restarted(tmp_path, toy_onnx, scheme):
    pytest.importorskip("cv2")
    from hfr_edge.runtime.run import run

    n = 600
    video = _video(tmp_path / "v.mp4", n)
    run(str(toy_onnx), source=str(video), headless=True, jsonl=str(tmp_path / "local.jsonl"), log=open(os.devnull, "w"))
    local = {r["frame"]: r["score"] for r in _records(tmp_path / "local.jsonl")}
    assert len(local) == n

    srv = Server(toy_onnx, free_ports(), tmp_path / "serve.log").start()
    url = srv.http if scheme == "http" else srv.grpc
    cmd = [sys.executable, "-m", "hfr_edge", "run", "--server", url, "--source", str(video), "--headless",
           "--jsonl", str(tmp_path / "r.jsonl"), "--summary", str(tmp_path / "s.json")]
    with open(tmp_path / "run.log", "wb") as log:
        client = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not (tmp_path / "r.jsonl").exists()
                                               or len((tmp_path / "r.jsonl").read_bytes().splitlines()) < 20):
            time.sleep(0.02)
        srv.kill()  # a crash mid-run: the whole server group, SIGKILL
        srv.start()  # the same ports, as a supervisor restarts it
        assert client.wait(timeout=180) == 0, (tmp_path / "run.log").read_text()
        assert srv.stop() == 0  # SIGTERM: a clean stop, nothing of the group left behind
        assert srv.group_gone(), subprocess.run(["ps", "-o", "pid,cmd", "-g", str(srv.proc.pid)],
                                                capture_output=True, text=True).stdout
    finally:
        client.kill()
        srv.kill()
    recs, summary = _records(tmp_path / "r.jsonl"), json.loads((tmp_path / "s.json").read_text())
    frames = [r["frame"] for r in recs]
    assert len(frames) == len(set(frames)) == summary["frames"]  # every scored frame once, none twice
    assert summary["dropped"] >= 1 and summary["frames"] + summary["dropped"] == n
    assert max(abs(r["score"] - local[r["frame"]]) for r in recs) <= TOL
    assert frames[-1] == n - 1  # resumed: the run scored to the end of the video
    assert "reconnected after" in (tmp_path / "run.log").read_text()
    assert set(summary["inference_split_ms"]) == {"server", "network"}
