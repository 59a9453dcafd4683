"""`hfr-edge demo`: the whole toolchain on a synthetic dataset, in one command.

data -> train -> eval (+figures) -> export fp32/fp16 -> calibrate int8 (TensorRT's graph and the
CPU's) -> eval each (ONNX Runtime; the CPU int8 graph on OpenVINO where installed) -> TensorRT engines
(where usable) -> run over a test video -> bench -> OUT/report.html + OUT/summary.json.
One line per stage on stderr with its time. Every file is written atomically; running it again
into the same OUT replaces the previous run.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, TextIO, Tuple

import numpy as np

from .base import console
from .base.contract import PRECISIONS
from .base.errors import HfrError
from .base.fsio import write_bytes_atomic, write_json_atomic

MARKER = ".hfr-edge-demo"  # marks OUT as a demo folder, so a rerun may replace data/ and figures/


@dataclass(frozen=True)
class DemoConfig:
    data_size: int = 128  # synthetic image side, pixels
    n_train: int = 60  # normal training images (10% of them held out for the normalisation)
    n_good_test: int = 12  # normal test images
    n_per_defect: int = 6  # test images per defect type (4 types)
    # 128 px = the data's own size; the defects (2-px scratches and up) stay visible at stride 4.
    image_size: int = 128
    # Explicit, not ModelConfig's defaults (which may change): the full-width decoder trains in
    # ~1 s per epoch at 128 px here, and 15 epochs give image AUROC 1.0 on this test set (4 give
    # 0.99, 10 give 1.0), with room to spare for a loaded machine within the 5-minute budget.
    epochs: int = 15
    decoder_widths: Tuple[int, int, int] = (256, 128, 64)
    sigma: float = 4.0  # map smoothing, pixels, at every level (the design's value)
    batch_size: int = 16
    lr: float = 0.005
    seed: int = 0
    bench_iterations: int = 100  # timed inferences per precision (batch 1)
    bench_warmup: int = 10
    video_fps: float = 5.0  # frame rate written into OUT/test.mp4


# Seconds, not accuracy: 64 px, a narrow decoder, 2 epochs; 15 training images leave 12 calibration frames.
QUICK = DemoConfig(data_size=64, n_train=15, n_good_test=4, n_per_defect=2, image_size=64, epochs=2,
                   decoder_widths=(32, 16, 8), batch_size=4, bench_iterations=5, bench_warmup=1)


class _Stages:
    """Times the stages and says one `[k/N] name ... 2.1 s` line each (on `log`, else the console)."""

    def __init__(self, total: int, log: Optional[TextIO]):
        self.total, self.log, self.k = total, log, 0
        self.seconds: Dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.k += 1
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.seconds[name] = round(dt, 2)
        console.say(f"[{self.k}/{self.total}] {name} ... {dt:.1f} s", self.log)


@contextlib.contextmanager
def _quiet():
    """Sub-stage chatter (prints to stdout/stderr) is kept out of the one-line-per-stage log."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            yield sink
    except BaseException:
        said = sink.getvalue()[-4000:].rstrip()  # what the failed stage said, for the error that follows
        if said:
            console.say(said)
        raise


def _prepare_out(out: Path) -> None:
    """Create OUT, or reuse it only if an earlier demo made it; clear the parts a rerun rewrites."""
    if out.exists() and not out.is_dir():
        raise HfrError(f"--out {out}: is a file; give a folder for the demo's outputs")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise HfrError(f"--out {out}: folder exists and was not made by `hfr-edge demo`; give a new or empty folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HfrError(f"--out {out}: cannot create the folder ({exc.strerror}); choose another path") from None
    write_bytes_atomic(out / MARKER, b"made by hfr-edge demo\n")
    for sub in ("data", "figures", "anomalies"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)


def _train(data: Path, ckpt: Path, cfg: DemoConfig) -> dict:
    from .checkpoint import save_checkpoint
    from .config import ModelConfig, TrainConfig
    from .base.view import View
    from .data import open_dataset
    from .train import fit_view, split_holdout

    mcfg = ModelConfig(backbone="efficientnet_lite0", image_size=cfg.image_size,
                       decoder_widths=cfg.decoder_widths, sigma=cfg.sigma, level_sigmas=None)
    tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, device="auto")
    ds = open_dataset(str(data))
    tr, ho = split_holdout(len(ds.train), tcfg.holdout, tcfg.seed)
    with _quiet():  # through the default view, so the checkpoint carries the reference the drift watch uses
        model, stats, summary, extra, _, _ = fit_view([ds.train[i] for i in tr], [ds.train[i] for i in ho], View(),
                                                      mcfg, tcfg, progress=False)
    summary.update(data=str(data.resolve()), format=ds.format, normal_class=None, skipped=[], seed=cfg.seed)
    save_checkpoint(ckpt, model, stats, summary, extra=extra)
    return summary


def _metrics(rep: dict) -> dict:
    return {**{k: rep.get(k) for k in ("image_auroc", "pixel_auroc", "aupro")}, "at_threshold": rep.get("at_threshold")}


def _write_video(path: Path, data: Path, size: int, fps: float) -> int:
    """The test images (sorted by defect and name) as an mp4 video, written atomically."""
    from .data import open_dataset
    from .base.images import cv2_module, resize_rgb

    cv2 = cv2_module()
    items = sorted(open_dataset(str(data)).test, key=lambda it: it.key)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.mp4")  # the extension picks the container
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    try:
        if not writer.isOpened():
            raise HfrError(f"{path}: OpenCV cannot write an mp4v video here; check the folder is writable")
        for it in items:
            writer.write(np.ascontiguousarray(resize_rgb(it.load(), size)[:, :, ::-1]))
        writer.release()
        os.replace(tmp, path)
    finally:
        writer.release()
        if tmp.exists():
            tmp.unlink()
    return len(items)


def _build_engines(out: Path, graphs: Dict[str, Path]) -> Dict[str, Path]:
    from .build.engine import api_of, build_engine
    from .runtime.trtinfo import import_tensorrt
    from .build.plan import make_plan

    trt = import_tensorrt()
    engines = {}
    for prec, graph in graphs.items():
        plan = make_plan(trt.__version__, api_of(trt), prec)
        engine = out / f"model.{prec}.engine"
        with _quiet():
            build_engine(graph, engine, plan, (1, 1, 8))
        engines[prec] = engine
    return engines


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import onnxruntime

        providers, ort_version = onnxruntime.get_available_providers(), onnxruntime.__version__
    except ImportError:
        providers, ort_version = [], None
    import torch

    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average_at_start": load, "onnxruntime": ort_version,
            "onnxruntime_providers": providers, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


def demo(out, quick: bool = False, cfg: Optional[DemoConfig] = None, log: Optional[TextIO] = None) -> dict:
    """Run every stage into folder `out`; returns the summary (also OUT/summary.json)."""
    from .evaluate import evaluate
    from .export.onnx_export import export_onnx
    from .artifacts import bench
    from .runtime.run import run
    from .runtime.runner import tensorrt_usable
    from .synthetic import make_dataset
    from .compare import int8_provider
    from .variants import calibrate_model, make_fp16

    cfg = cfg or (QUICK if quick else DemoConfig())
    out = Path(out)
    t_start = time.perf_counter()
    _prepare_out(out)
    data, ckpt, figs = out / "data", out / "model.ckpt.pt", out / "figures"
    host = machine()  # before the demo loads the CPUs: its load average says whether others do
    trt_ok, trt_why = tensorrt_usable()
    stage = _Stages(12 + trt_ok, log)
    rows: List[dict] = []

    with stage("synthetic data"):
        make_dataset(data, size=cfg.data_size, n_train=cfg.n_train, n_good_test=cfg.n_good_test,
                     n_per_defect=cfg.n_per_defect, seed=cfg.seed)
    with stage("train"):
        train_summary = _train(data, ckpt, cfg)
    with stage("eval checkpoint + figures"):
        with _quiet():
            rep = evaluate(str(ckpt), str(data), figures=str(figs))
        rows.append({"name": "pytorch fp32", "artifact": ckpt.name, "backend": rep["backend"], **_metrics(rep)})
    graphs = {"fp32": out / "model.onnx", "fp16": out / "model.fp16.onnx", "int8": out / "model.int8.onnx"}
    with stage("export fp32"), _quiet():
        export_onnx(str(ckpt), str(graphs["fp32"]), precision="fp32")
    with stage("export fp16"), _quiet():
        make_fp16(graphs["fp32"], graphs["fp16"])  # what `export --precision fp16` does, without re-tracing
    with stage("calibrate int8"), _quiet():
        calibrate_model(graphs["fp32"], str(data / "train" / "good"), graphs["int8"])
    cpu8, cpu8_provider = out / "model.int8cpu.onnx", int8_provider("cpu")
    with stage("calibrate int8 cpu"), _quiet():  # its speed is the bench stage's, beside the others
        calibrate_model(graphs["fp32"], str(data / "train" / "good"), cpu8, target="cpu", speed=False)
    with stage("eval onnx fp32, fp16, int8, int8 cpu"), _quiet():
        for prec in PRECISIONS:  # ONNX Runtime, whatever `auto` would pick: the reference path
            r = evaluate(str(graphs[prec]), str(data), provider="cpu")
            rows.append({"name": f"onnx {prec}", "artifact": graphs[prec].name, "backend": r["backend"],
                         "provider": "cpu", **_metrics(r)})
        r = evaluate(str(cpu8), str(data), provider=cpu8_provider)  # on its own runtime
        rows.append({"name": "onnx int8 cpu", "artifact": cpu8.name, "backend": r["backend"],
                     "provider": cpu8_provider, **_metrics(r)})
    engines: Dict[str, Path] = {}
    if trt_ok:
        with stage("tensorrt build + eval"):
            engines = _build_engines(out, graphs)
            for prec, engine in engines.items():
                with _quiet():
                    r = evaluate(str(engine), str(data))
                rows.append({"name": f"tensorrt {prec}", "artifact": engine.name, "backend": r["backend"],
                             **_metrics(r)})
    else:
        rows += [{"name": f"tensorrt {p}", "skipped": True, "reason": trt_why} for p in PRECISIONS]
    run_model = engines.get("fp16", graphs["fp32"])
    with stage("write test video"):
        n_frames = _write_video(out / "test.mp4", data, cfg.data_size, cfg.video_fps)
    with stage("run over test.mp4"):
        run_sum = run(str(run_model), source=str(out / "test.mp4"), headless=True, jsonl=str(out / "run.jsonl"),
                      save=str(out / "run_overlay.mp4"), summary=str(out / "run_summary.json"), log=io.StringIO())
    with stage("bench"), _quiet():
        for row in rows:
            if row.get("skipped"):
                continue
            b = bench(out / row["artifact"], batch=1, iterations=cfg.bench_iterations, warmup=cfg.bench_warmup,
                      provider=row.get("provider", "auto"))
            row.update(p50_ms=round(b["p50_ms"], 3), throughput_fps=round(b["throughput_fps"], 2))
    summary = {"image_auroc": rows[0]["image_auroc"], "precisions": rows, "stages": stage.seconds,
               "run": {"frames": run_sum["frames"], "fps": run_sum["fps"], "anomalous": run_sum["anomalous"],
                       "model": run_model.name, "backend": run_sum.get("backend"), "video_frames": n_frames},
               "train": {k: train_summary.get(k) for k in ("epochs", "final_loss", "train_images", "holdout_images",
                                                             "train_seconds")},
               "config": {**asdict(cfg), "quick": bool(quick)}, "tensorrt": trt_why, "machine": host,
               "out": str(out)}
    with stage("report"):
        summary["total_seconds"] = round(time.perf_counter() - t_start, 2)  # up to the report itself
        write_bytes_atomic(out / "report.html", render_html(summary, figs).encode("utf-8"))
        write_json_atomic(out / "summary.json", summary)
    summary["total_seconds"] = round(time.perf_counter() - t_start, 2)
    write_json_atomic(out / "summary.json", summary)
    return summary


def fmt_number(v, fmt: str = "{:.4f}") -> str:
    return "-" if v is None else fmt.format(v)


def _img_tag(path: Path) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(path.stem)}</figcaption></figure>")


def render_html(s: dict, figures: Path) -> str:
    """A self-contained page: metrics per precision, stage timings, machine, embedded figures."""
    from .evaluate import flagged_text

    e = html.escape
    rows = []
    for r in s["precisions"]:
        if r.get("skipped"):
            rows.append(f"<tr><td>{e(r['name'])}</td><td colspan=8>skipped: {e(r['reason'])}</td></tr>")
            continue
        rows.append(f"<tr><td>{e(r['name'])}</td><td>{e(r['artifact'])}</td><td>{e(r['backend'])}</td>"
                    f"<td>{fmt_number(r['image_auroc'])}</td>"
                    f"<td>{fmt_number(r['pixel_auroc'])}</td><td>{fmt_number(r['aupro'])}</td>"
                    f"<td>{e(flagged_text(r['at_threshold']) if r.get('at_threshold') else '-')}</td>"
                    f"<td>{fmt_number(r.get('p50_ms'), '{:.2f}')}</td><td>{fmt_number(r.get('throughput_fps'), '{:.1f}')}</td></tr>")
    stages = "".join(f"<tr><td>{e(k)}</td><td>{v:.1f}</td></tr>" for k, v in s["stages"].items())
    m = s["machine"]
    mach = "".join(f"<tr><td>{e(k)}</td><td>{e(', '.join(map(str, v)) if isinstance(v, list) else str(v))}</td></tr>"
                   for k, v in m.items())
    pngs = sorted(figures.glob("*.png"), key=lambda p: (p.name != "roc.png", p.name))
    run = s["run"]
    c = s["config"]
    load = m.get("load_average_at_start")
    busy = (f"<p><b>Note:</b> load average {load[0]} on {m['cores']} cores before the demo started: other processes "
            f"shared the CPUs, so the timings are contended.</p>" if load and m.get("cores") and load[0] > m["cores"] / 2
            else "")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hfr-edge demo report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:left}}img{{max-width:100%}}figure{{margin:1em 0}}</style>
</head><body>
<h1>hfr-edge demo</h1>
<p>Checkpoint image AUROC <b>{fmt_number(s['image_auroc'])}</b> on the synthetic test set; total {s['total_seconds']:.1f} s.
TensorRT: {e(s['tensorrt'])}.</p>
<p>Data: {c['n_train']} normal training images, {c['n_good_test']} normal and {4 * c['n_per_defect']} defective test
images at {c['data_size']} px. Model: EfficientNet-Lite0 encoder, decoder {e(str(list(c['decoder_widths'])))},
{c['image_size']} px input, {c['epochs']} epochs.</p>
{busy}<h2>Precisions</h2>
<table><tr><th>precision</th><th>artifact</th><th>backend</th><th>image AUROC</th><th>pixel AUROC</th><th>AUPRO</th>
<th>flagged at the threshold</th><th>p50 latency (ms, batch 1)</th><th>throughput (img/s)</th></tr>
{''.join(rows)}</table>
<h2>Runtime over test.mp4</h2>
<p>{run['frames']} frames at {run['fps']:.1f} fps with {e(run['model'])} ({e(str(run['backend']))}), {run['anomalous']} anomalous;
overlay video run_overlay.mp4, records run.jsonl.</p>
<h2>Stage timings (s)</h2><table>{stages}</table>
<h2>Machine</h2><table>{mach}</table>
<h2>Figures (checkpoint)</h2>
{''.join(_img_tag(p) for p in pngs)}
</body></html>
"""
