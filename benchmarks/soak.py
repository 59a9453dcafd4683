"""Soak test of `hfr-edge run --headless`: N frames of a generated video through the real CLI, with the
process's resident memory and CPU time sampled from outside every ~1 s.

    python benchmarks/soak.py                      # 50,000 frames, a tiny trained model (64 px)
    python benchmarks/soak.py --frames 5000 --toy  # quicker, the toy contract graph
    python benchmarks/soak.py --model model.onnx --json soak.json

The video is 200 distinct frames of a drifting synthetic texture at the model's size, repeated to
N frames (mp4v), so `run` reads it once, as a user's file, with nothing looped inside the product.
Per-frame times come from run's own --jsonl log. Passes when RSS grows by less than 20 MB from the
first 10% of frames to the last 10%, and the fps of the last 10% is within 5% of the first 10%.
CPU ms per frame is reported beside fps: on a shared machine it tells contention from slowdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
MAX_GROWTH_MB, MAX_FPS_CHANGE = 20.0, 0.05


def tiny_model(work: Path) -> Path:
    """A trained 64 px model (narrow decoder, 2 epochs on a synthetic dataset), exported: ~20 s."""
    out = work / "tiny.onnx"
    if out.is_file():
        return out
    from hfr_edge.checkpoint import save_checkpoint
    from hfr_edge.config import ModelConfig, TrainConfig
    from hfr_edge.data import load_items, open_dataset
    from hfr_edge.export.onnx_export import export_onnx
    from hfr_edge.synthetic import make_dataset
    from hfr_edge.train import fit

    root = make_dataset(work / "parts", size=64, n_train=12, n_good_test=4, n_per_defect=2)
    x, _, _, _ = load_items(open_dataset(str(root)).train, 64)
    model, stats, summary = fit(x[:10], x[10:], ModelConfig(image_size=64, decoder_widths=(32, 16, 8)),
                                TrainConfig(epochs=2, batch_size=4), progress=False)
    save_checkpoint(work / "tiny.pt", model, stats, summary)
    return export_onnx(str(work / "tiny.pt"), str(out))


def toy_model(work: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from toy import make_toy_onnx

    return make_toy_onnx(work / "toy.onnx", size=64)


def make_video(path: Path, frames: int, size: int, distinct: int = 200) -> Path:
    """`frames` frames: `distinct` views of a texture drifting by one pixel a frame, repeated."""
    import cv2

    if path.is_file() and cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT) == frames:
        return path
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (size, size + distinct, 3), dtype=np.uint8), (0, 0), 1.5)
    views = [np.ascontiguousarray(tex[:, i:i + size]) for i in range(distinct)]
    tmp = path.with_suffix(".part.mp4")
    w = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 30, (size, size))
    for i in range(frames):
        w.write(views[i % distinct])
    w.release()
    os.replace(tmp, path)
    return path


def sample(pid: int):
    """(resident MB, CPU seconds) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * PAGE / 2**20
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None
    return rss, cpu


def soak(model: Path, video: Path, frames: int, work: Path, every: float = 1.0) -> dict:
    """Run, sample, and judge: the results dict (windows 'first' and 'last', growth, change, pass)."""
    jsonl, summary = work / "soak.jsonl", work / "soak.summary.json"
    cmd = [sys.executable, "-m", "hfr_edge", "run", str(model), "--source", str(video), "--headless",
           "--provider", "cpu", "--jsonl", str(jsonl), "--json", str(summary), "--stats-every", "30"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    samples = []  # (wall time, rss MB, cpu s)
    t0 = time.time()
    with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as p:
        while p.poll() is None:
            s = sample(p.pid)
            if s:
                samples.append((time.time(), *s))
            time.sleep(every)
        err = p.stderr.read()
    if p.returncode != 0:
        raise SystemExit(f"hfr-edge run failed ({p.returncode}):\n{err}")
    times = np.array([json.loads(line)["time"] for line in jsonl.read_text().splitlines()])
    if len(times) != frames:
        raise SystemExit(f"run processed {len(times)} frames, expected {frames}:\n{err}")
    k = max(2, frames // 10)
    windows = {"first": (times[0], times[k - 1], k), "last": (times[-k], times[-1], k)}
    res = {"model": str(model), "frames": frames, "wall_s": round(time.time() - t0, 1), "samples": len(samples),
           "summary": json.loads(summary.read_text())}
    for name, (a, b, n) in windows.items():
        inside = [s for s in samples if a <= s[0] <= b]
        res[name] = {"fps": float((n - 1) / (b - a)), "samples": len(inside),
                     "rss_mb": statistics.median(s[1] for s in inside) if inside else None,
                     "rss_max_mb": max(s[1] for s in inside) if inside else None,
                     "cpu_ms_per_frame": _cpu_per_frame(samples, a, b, n)}
    measured = res["first"]["rss_mb"] is not None and res["last"]["rss_mb"] is not None
    res["rss_growth_mb"] = res["last"]["rss_mb"] - res["first"]["rss_mb"] if measured else None
    res["fps_change"] = res["last"]["fps"] / res["first"]["fps"] - 1
    res["peak_rss_mb"] = max(s[1] for s in samples) if samples else None
    res["pass_memory"] = bool(measured and res["rss_growth_mb"] < MAX_GROWTH_MB)  # no sample in a window: not shown
    res["pass_fps"] = bool(abs(res["fps_change"]) <= MAX_FPS_CHANGE)
    res["passed"] = res["pass_memory"] and res["pass_fps"]
    return res


def _cpu_per_frame(samples, a: float, b: float, n: int):
    """CPU ms per frame between the samples closest to a window's ends (None if they coincide)."""
    s0 = min(samples, key=lambda s: abs(s[0] - a))
    s1 = min(samples, key=lambda s: abs(s[0] - b))
    if s1[0] <= s0[0]:
        return None
    frames = n * (s1[0] - s0[0]) / max(b - a, 1e-9)
    return float(1e3 * (s1[2] - s0[2]) / frames)


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(res: dict) -> str:
    f, la = res["first"], res["last"]
    rows = [("", "first 10%", "last 10%", "change"),
            ("fps", _fmt(f["fps"], ".1f"), _fmt(la["fps"], ".1f"), f"{100 * res['fps_change']:+.1f}%"),
            ("RSS MB (median)", _fmt(f["rss_mb"], ".1f"), _fmt(la["rss_mb"], ".1f"),
             _fmt(res["rss_growth_mb"], "+.1f") + " MB"),
            ("RSS MB (max)", _fmt(f["rss_max_mb"], ".1f"), _fmt(la["rss_max_mb"], ".1f"), ""),
            ("CPU ms / frame", _fmt(f["cpu_ms_per_frame"], ".3f"), _fmt(la["cpu_ms_per_frame"], ".3f"), ""),
            ("RSS samples", str(f["samples"]), str(la["samples"]), "")]
    out = [f"{a:<16}{b:>12}{c:>12}{d:>12}" for a, b, c, d in rows]
    out.append(f"{res['frames']} frames in {res['wall_s']} s, peak RSS {_fmt(res['peak_rss_mb'], '.1f')} MB; "
               f"memory {'PASS' if res['pass_memory'] else 'FAIL'} (< {MAX_GROWTH_MB:g} MB), "
               f"fps {'PASS' if res['pass_fps'] else 'FAIL'} (within {100 * MAX_FPS_CHANGE:g}%)")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50_000)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--model", help="an .onnx artifact to soak (default: a tiny model trained here)")
    g.add_argument("--toy", action="store_true", help="the toy contract graph (tests/toy.py) instead")
    ap.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "hfr-soak"),
                    help="cache for the model and the video, and the run's JSONL")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between memory samples")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    if a.frames < 100:
        ap.error("--frames must be at least 100")
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(a.model) if a.model else toy_model(work) if a.toy else tiny_model(work)
    from hfr_edge.base.artifact import load_meta

    size = load_meta(model).image_size
    print(f"model {model} ({size} px); making a {a.frames}-frame video ...", file=sys.stderr)
    video = make_video(work / f"soak-{a.frames}-{size}.mp4", a.frames, size)
    print(f"running hfr-edge run --headless over {video} ...", file=sys.stderr)
    res = soak(model, video, a.frames, work, a.every)
    res.update(cores=os.cpu_count(), loadavg_after=os.getloadavg())
    print(table(res))
    if a.json:
        from hfr_edge.base.fsio import write_json_atomic

        write_json_atomic(a.json, res)
        print(f"wrote {a.json}", file=sys.stderr)
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
