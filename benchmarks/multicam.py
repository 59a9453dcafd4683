"""Several cameras, one runner: `hfr-edge run --source v0 ... --source vN-1` (one process, one model,
the frames of all sources batched into one inference per tick) against N separate `hfr-edge run`
processes, one source each, started together. N = 1, 2, 4, 8; each source a different video file
(read as fast as it decodes: throughput, not a camera's fps).

Throughput of either side = all frames / (last record's time - first record's time) over the runs'
own JSONL logs, so start-up (imports, sessions) is left out alike. The two sides alternate within
each round (this VM's speed drifts minute to minute: only ratios within a round are read).

    python benchmarks/multicam.py [--model model.onnx] [--frames 200] [--rounds 2] [--sources 1,2,4,8] [--tag T]

Default model: a tiny 64 px model trained here (as the soak test's); give --model for a real one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import REPO, table, write_json

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def make_video(path: Path, frames: int, seed: int, hw=(240, 320)) -> Path:
    import cv2

    if path.is_file() and cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT) == frames:
        return path
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (hw[0], hw[1] + frames, 3), dtype=np.uint8), (0, 0), 1.5)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (hw[1], hw[0]))
    for i in range(frames):
        w.write(np.ascontiguousarray(tex[:, i:i + hw[1]]))
    w.release()
    return path


def _cmd(model: Path, videos, jsonl: Path, summary: Path) -> list:
    cmd = [sys.executable, "-m", "hfr_edge", "run", str(model), "--headless", "--provider", "cpu", "--drift", "off",
           "--jsonl", str(jsonl), "--json", str(summary), "--stats-every", "1000"]
    for v in videos:
        cmd += ["--source", str(v)]
    return cmd


def _times(jsonl: Path):
    t = [json.loads(line)["time"] for line in jsonl.read_text().splitlines()]
    return min(t), max(t), len(t)


def one_runner(model: Path, videos, work: Path) -> dict:
    jl, sm = work / "one.jsonl", work / "one.json"
    subprocess.run(_cmd(model, videos, jl, sm), env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0, t1, n = _times(jl)
    s = json.loads(sm.read_text())
    return {"fps": n / max(t1 - t0, 1e-9), "frames": n, "per_source_fps": [p["fps"] for p in s["sources"]]}


def separate(model: Path, videos, work: Path) -> dict:
    procs, files = [], []
    for i, v in enumerate(videos):
        jl, sm = work / f"sep{i}.jsonl", work / f"sep{i}.json"
        files.append((jl, sm))
        procs.append(subprocess.Popen(_cmd(model, [v], jl, sm), env=ENV, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"hfr-edge run failed: {err.decode()[-500:]}")
    spans = [_times(jl) for jl, _ in files]
    n = sum(s[2] for s in spans)
    window = max(s[1] for s in spans) - min(s[0] for s in spans)
    return {"fps": n / max(window, 1e-9), "frames": n,
            "per_source_fps": [json.loads(sm.read_text())["fps"] for _, sm in files]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="an .onnx (or .engine) to run; default: a tiny 64 px model trained here")
    ap.add_argument("--frames", type=int, default=200, help="frames per source")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sources", default="1,2,4,8")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "hfr-multicam"))
    ap.add_argument("--tag", default="")
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if a.model:
        model = Path(a.model)
    else:
        from soak import tiny_model

        model = tiny_model(work)
    counts = [int(n) for n in a.sources.split(",")]
    videos = [make_video(work / f"cam{i}-{a.frames}.mp4", a.frames, seed=i) for i in range(max(counts))]
    rows, raw = [], {}
    for n in counts:
        ratios, ones, seps = [], [], []
        for r in range(a.rounds):
            order = (one_runner, separate) if r % 2 == 0 else (separate, one_runner)
            got = {f.__name__: f(model, videos[:n], work) for f in order}
            ones.append(got["one_runner"])
            seps.append(got["separate"])
            ratios.append(got["one_runner"]["fps"] / got["separate"]["fps"])
            print(f"{n} sources, round {r + 1}: one runner {got['one_runner']['fps']:.1f} fps, "
                  f"{n} processes {got['separate']['fps']:.1f} fps", file=sys.stderr)
        raw[n] = {"one_runner": ones, "separate": seps, "ratio": ratios}
        rows.append({"sources": n, "one_fps": statistics.median(o["fps"] for o in ones),
                     "one_per_source": statistics.median(np.mean(o["per_source_fps"]) for o in ones),
                     "sep_fps": statistics.median(s["fps"] for s in seps),
                     "sep_per_source": statistics.median(np.mean(s["per_source_fps"]) for s in seps),
                     "ratio": statistics.median(ratios), "ratio_min": min(ratios)})
    print(table(rows, [("sources", "sources", None), ("one_fps", "one runner: total fps", "{:.1f}"),
                       ("one_per_source", "per source", "{:.1f}"), ("sep_fps", "N processes: total fps", "{:.1f}"),
                       ("sep_per_source", "per process", "{:.1f}"), ("ratio", "one / N (median)", "{:.2f}"),
                       ("ratio_min", "worst round", "{:.2f}")]))
    wins = all(r["ratio_min"] > 1.0 for r in rows if r["sources"] >= 2)
    print(f"batching {'wins' if wins else 'does NOT win'} in every round from 2 sources on")
    from hfr_edge.base.artifact import load_meta

    write_json(f"multicam{a.tag}.json", {"model": str(model), "image_size": load_meta(model).image_size,
                                          "frames_per_source": a.frames, "rounds": a.rounds, "rows": rows,
                                          "raw": {str(k): v for k, v in raw.items()}, "batching_wins": wins})
    return 0


if __name__ == "__main__":
    sys.exit(main())
