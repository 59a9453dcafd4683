"""`hfr-edge serve` on the loopback against one local runner, and `run --server` through a server crash.

    python benchmarks/serve.py                    # a 256 px model trained here (1 epoch: speed only)
    python benchmarks/serve.py --model model.onnx --seconds 10

Throughput: 1, 4 and 16 concurrent clients (threads, one gRPC connection each, one image per request
as a camera box sends it, closed loop) for --seconds each, with the server's dynamic batching on
(max batch 8, 1 ms queue delay) and off; each server measurement is paired with a local runner
(batch 1, the same process as the clients) measured right after it, so the ratio is within one
stretch of this drifting VM's clock. Faults: a --frames video through `hfr-edge run --server`, the
server SIGKILLed (its whole process group) after a quarter of the frames and restarted on the same
ports; the JSONL must hold every scored frame once, with the local run's score, and
scored + dropped = frames. Needs the `triton` extra and a Python that can host PyTriton's stub.
Prints tables, writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, synthetic_model, table, write_json  # noqa: E402
from soak import make_video, tiny_model  # noqa: E402

sys.path.insert(0, str(REPO / "tests"))
from serving import Server, free_ports, serve_skip_reason  # noqa: E402

CLIENTS = (1, 4, 16)


def model_256(work: Path) -> Path:
    """A 256 px model with the default decoder, trained 1 epoch on a synthetic set: the real graph's cost."""
    return synthetic_model(work, "m256", 256, epochs=1)


def load(url_or_model, clients: int, seconds: float, images) -> dict:
    """`clients` closed-loop clients for `seconds` (after 1 s of warm-up): images/s, p50/p99 ms."""
    from hfr_edge.runtime.runner import open_runner

    lat, errors, ready, go = [], [], threading.Barrier(clients + 1), threading.Event()
    t_end = [0.0]

    def client(k):
        try:
            with open_runner(url_or_model, provider="auto") as r:
                x = images[k % len(images)]
                r.infer({"image": x})
                ready.wait()
                go.wait()
                mine = []
                while time.perf_counter() < t_end[0]:
                    t0 = time.perf_counter()
                    r.infer({"image": x})
                    mine.append((t0, time.perf_counter()))
                lat.extend(mine)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
            ready.abort()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=120)  # every client connected and warm
    except threading.BrokenBarrierError:
        raise RuntimeError(errors[0] if errors else "clients did not start") from None
    t0 = time.perf_counter() + 1.0  # warm-up second: requests started before it are not counted
    t_end[0] = t0 + seconds
    go.set()
    for t in threads:
        t.join(timeout=seconds + 60)
    if errors:
        raise RuntimeError(errors[0])
    ms = np.array([(b - a) * 1e3 for a, b in lat if a >= t0 and b <= t_end[0]])
    return {"images_per_s": len(ms) / seconds, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "requests": int(len(ms))}


def batch_stats(url: str) -> dict:
    """Requests per model execution so far (the dynamic batcher's work), from Triton's statistics."""
    import tritonclient.grpc as tg

    c = tg.InferenceServerClient(url[len("grpc://"):])
    s = c.get_inference_statistics("hfr_edge").model_stats[0]
    return {"inferences": int(s.inference_count), "executions": int(s.execution_count)}


def throughput(model: Path, work: Path, seconds: float) -> list:
    from hfr_edge.runtime.runner import open_runner

    with open_runner(model, provider="cpu") as r:
        size = r.meta.image_size
    rng = np.random.default_rng(0)
    images = [rng.random((1, 3, size, size), dtype=np.float32) for _ in range(4)]
    rows = []
    for batching in ("on", "off"):
        args = ["--max-batch", 8, "--queue-delay-us", 1000] + ([] if batching == "on" else ["--no-dynamic-batching"])
        srv = Server(model, free_ports(), work / f"serve_{batching}.log", *args).start()
        try:
            for n in CLIENTS:
                before = batch_stats(srv.grpc)
                remote = load(srv.grpc, n, seconds, images)
                after = batch_stats(srv.grpc)
                local = load(str(model), 1, seconds, images)
                served = after["inferences"] - before["inferences"]
                execs = max(after["executions"] - before["executions"], 1)
                rows.append({"batching": batching, "clients": n, **remote, "local_images_per_s": local["images_per_s"],
                             "local_p50_ms": local["p50_ms"], "ratio": remote["images_per_s"] / local["images_per_s"],
                             "mean_batch": served / execs})
                print(table(rows[-1:], COLS), file=sys.stderr, flush=True)
        finally:
            srv.stop()
            srv.kill()
    return rows


def fault_run(model: Path, work: Path, frames: int) -> dict:
    """`run --server` over a video; the server killed after a quarter of the frames, then restarted."""
    from hfr_edge.runtime.run import run

    with open(os.devnull, "w") as quiet:
        from hfr_edge.runtime.runner import open_runner

        with open_runner(model, provider="cpu") as r:
            size = r.meta.image_size
        video = make_video(work / f"fault_{frames}_{size}.mp4", frames, size)
        run(str(model), source=str(video), headless=True, jsonl=str(work / "local.jsonl"), log=quiet)
    local = {json.loads(x)["frame"]: json.loads(x)["score"] for x in (work / "local.jsonl").read_text().splitlines()}
    srv = Server(model, free_ports(), work / "serve_fault.log").start()
    jsonl, summ = work / "remote.jsonl", work / "remote.summary.json"
    for p in (jsonl, summ):
        p.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "hfr_edge", "run", "--server", srv.grpc, "--source", str(video), "--headless",
           "--jsonl", str(jsonl), "--summary", str(summ)]
    with open(work / "run_fault.log", "wb") as log:
        client = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and (not jsonl.exists() or len(jsonl.read_bytes().splitlines()) < frames // 4):
            time.sleep(0.05)
        t_kill = time.monotonic()
        srv.kill()
        srv.start()
        restart_s = time.monotonic() - t_kill
        rc = client.wait(timeout=1800)
    finally:
        client.kill()
        srv.stop()
        srv.kill()
    recs = [json.loads(x) for x in jsonl.read_text().splitlines()]
    s = json.loads(summ.read_text())
    idx = [r["frame"] for r in recs]
    return {"frames": frames, "exit_code": rc, "scored": len(recs), "unique_scored": len(set(idx)),
            "dropped": s["dropped"], "complete": len(recs) + s["dropped"] == frames and len(set(idx)) == len(idx),
            "max_score_diff_vs_local": max(abs(r["score"] - local[r["frame"]]) for r in recs),
            "server_restart_s": round(restart_s, 2), "fps": s["fps"], "inference_split_ms": s.get("inference_split_ms"),
            "stages_ms": s["stages_ms"]}


COLS = [("batching", "dyn. batching", None), ("clients", "clients", None), ("images_per_s", "images/s", "{:.1f}"),
        ("p50_ms", "p50 ms", "{:.1f}"), ("p99_ms", "p99 ms", "{:.1f}"), ("mean_batch", "mean batch", "{:.2f}"),
        ("local_images_per_s", "local images/s", "{:.1f}"), ("ratio", "server/local", "{:.2f}")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="an .onnx artifact (default: a 256 px model trained here)")
    ap.add_argument("--tiny", action="store_true", help="the 64 px tiny model instead (compute ~ nothing)")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per row")
    ap.add_argument("--frames", type=int, default=2000, help="frames of the kill/restart run (0: skip it)")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "hfr-serve-bench"))
    ap.add_argument("--json", default="serve.json", help="file name under benchmarks/results/")
    a = ap.parse_args(argv)
    why = serve_skip_reason()
    if why:
        print(f"skipped: {why}", file=sys.stderr)
        return 0
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(a.model) if a.model else (tiny_model(work) if a.tiny else model_256(work))
    rows = throughput(model, work, a.seconds)
    print(table(rows, COLS))
    fault = fault_run(model, work, a.frames) if a.frames else None
    if fault:
        print(json.dumps(fault, indent=1))
    write_json(a.json, {"model": str(model), "seconds": a.seconds, "cores": os.cpu_count(), "rows": rows,
                        "fault": fault, "note": "loopback; the clients, the server and the local runner share "
                                                "this machine's cores (and other workers' jobs)"})
    return 0 if fault is None or (fault["complete"] and fault["exit_code"] == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
