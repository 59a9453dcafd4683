"""`hfr-edge run`: frames from a camera, stream, video or folder -> the model -> verdicts, overlay
window, video, JSONL, anomaly PNGs and a summary. No torch; runs on the Jetson's Python 3.8.

Loop per frame: capture -> preprocess and infer (the Detector: into the runner's preallocated
buffer) -> postprocess (verdict, overlay only if a sink shows or saves it) -> sinks, each stage timed.
The first Ctrl-C or SIGTERM stops the loop cleanly (video finalised, JSONL flushed, summary
written); a second one interrupts at once.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Optional, TextIO

import typer

from ..base import console
from ..base.contract import THRESHOLD
from ..base.errors import HfrError
from .detector import Detector
from .outputs import Outputs, check_outputs, remove_if_empty
from .runner import Runner, default_artifact, open_runner
from .sinks import AnomalySaver, Display, JsonlSink, Stats, VideoSink, annotate, write_summary
from .sources import open_source


class _StopFlag:
    signal: Optional[str] = None  # name of the first signal received


@contextlib.contextmanager
def _stop_on_signals(flag: _StopFlag, src):
    """First SIGINT/SIGTERM: ask the loop (and a waiting live source) to stop; second: KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if flag.signal is not None:
            raise KeyboardInterrupt
        flag.signal = signal.Signals(signum).name  # plain attribute writes only: safe in a handler
        src.stop_requested = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _check_args(threshold, max_frames, stats_every) -> None:
    if threshold is not None and not math.isfinite(threshold):
        raise HfrError(f"--threshold {threshold} must be a finite number (0.5 is the artifact's own threshold)")
    if max_frames is not None and max_frames < 1:
        raise HfrError(f"--max-frames {max_frames} must be at least 1")
    if not stats_every > 0:
        raise HfrError(f"--stats-every {stats_every} must be a positive number of seconds")


def run(model: Optional[str] = None, camera: Optional[str] = None, source: Optional[str] = None, *,
        headless: bool = False, save: Optional[str] = None, jsonl: Optional[str] = None,
        save_anomalies: Optional[str] = None, threshold: Optional[float] = None, summary: Optional[str] = None,
        provider: str = "auto", max_frames: Optional[int] = None, stats_every: float = 5.0,
        width: int = 1280, height: int = 720, fps: int = 30, stall_timeout: float = 5.0,
        log: Optional[TextIO] = None, opener: Callable[..., Runner] = open_runner) -> dict:
    """Run the detector over a source; returns the summary dict (also written to `summary`).

    Messages go to `log` (a text file; None: the console). `opener(path, provider=...)` opens the
    model (the CLI passes the opener that also takes a checkpoint)."""
    _check_args(threshold, max_frames, stats_every)
    outs = check_outputs(1, save=save, jsonl=jsonl, summary=summary, save_anomalies=save_anomalies,
                         inputs=[source] if source else [])
    try:
        return _run(model, camera, source, outs, headless=headless, threshold=threshold, provider=provider,
                    max_frames=max_frames, stats_every=stats_every, width=width, height=height, fps=fps,
                    stall_timeout=stall_timeout, log=log, opener=opener)
    except BaseException:
        remove_if_empty(outs.created)  # a failed run leaves no empty folder of its own behind
        raise


def _run(model, camera, source, outs: Outputs, *, headless, threshold, provider, max_frames, stats_every, width,
         height, fps, stall_timeout, log, opener) -> dict:
    save, jsonl, summary = outs.videos[0], outs.jsonl, outs.summary
    save_anomalies = outs.anomaly_dirs[0]
    if model is None:
        path, why = default_artifact()
        console.say(f"hfr-edge: {why}", log)
        model = str(path)
    thr = THRESHOLD if threshold is None else float(threshold)
    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(opener(model, provider=provider))
        src = stack.enter_context(open_source(camera, source, width=width, height=height, fps=fps,
                                              stall_timeout=stall_timeout))
        display = None if headless else stack.enter_context(contextlib.closing(Display()))
        video = jsonl_sink = saver = None
        if save:
            video = VideoSink(save, src.fps or 25.0)
            stack.callback(video.close)
        if jsonl:
            jsonl_sink = stack.enter_context(contextlib.closing(JsonlSink(jsonl)))
        if save_anomalies:
            saver = AnomalySaver(save_anomalies)
        size = runner.meta.image_size
        console.say(f"hfr-edge: {src.describe()} -> {model} ({runner.backend}, {size}x{size}), threshold {thr:g}", log)
        flag, stats, stopped_by = _StopFlag(), Stats(), "error"
        with _stop_on_signals(flag, src):  # kept during clean-up too: a second signal interrupts it
            try:
                stopped_by = _loop(src, Detector(runner, thr), display, video, jsonl_sink, saver, stats, flag,
                                   max_frames, stats_every, log)
            finally:
                result = stats.summary(src.dropped, src.skipped, model=str(Path(model)), backend=runner.backend,
                                       precision=runner.meta.precision, image_size=size, source=src.describe(),
                                       reconnects=getattr(src, "reconnects", 0), threshold=thr, stopped_by=stopped_by)
                try:
                    stack.close()  # finalise the video and the JSONL before the summary says they are done
                finally:
                    write_summary(summary, result)
                console.say(f"hfr-edge: {result['frames']} frames in {result['elapsed_s']:.1f} s "
                            f"({result['fps']:.1f} fps), {result['anomalous']} anomalous, {result['dropped']} dropped, "
                            f"{result['skipped']} skipped [{stopped_by}]", log)
    if stopped_by == "end" and result["frames"] == 0 and result["skipped"]:
        raise HfrError(f"{src.describe()}: no frame could be read ({result['skipped']} unreadable image(s) skipped, "
                       f"named above); replace or remove them", exit_code=1)
    return result


def _loop(src, det: Detector, display, video, jsonl_sink, saver, stats, flag, max_frames, stats_every, log) -> str:
    """The hot loop; returns why it stopped (end, max-frames, quit, SIGINT, SIGTERM)."""
    need_overlay = display is not None or video is not None or saver is not None
    pc = time.perf_counter
    next_stats = pc() + stats_every
    frames = iter(src)
    while flag.signal is None:
        t0 = pc()
        frame = next(frames, None)
        if frame is None:
            break
        t1 = pc()
        x = det.prepare((frame.rgb,))
        t2 = pc()
        maps, scores = det.predict_batch(x)
        t3 = pc()
        score = float(scores[0])
        bad = det.is_anomalous(score)
        overlay = annotate(frame.rgb, maps[0], score, bad) if need_overlay else None
        t4 = pc()
        if jsonl_sink is not None:
            jsonl_sink.write({"frame": frame.index, "time": round(frame.time, 6), "source": frame.name,
                              "score": score, "anomalous": bad, "latency_ms": round((time.time() - frame.time) * 1e3, 3)})
        if video is not None:
            video.write(overlay)
        if saver is not None and bad:
            saver.save(frame.index, frame.rgb, overlay)
        quit_ = display is not None and not display.show(overlay)
        t5 = pc()
        stats.add((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), bad)
        if quit_:
            return "quit"
        if max_frames is not None and stats.frames >= max_frames:
            return "max-frames"
        if t5 >= next_stats:
            console.say(stats.line(src.dropped, src.skipped), log)
            next_stats = t5 + stats_every
    return flag.signal or "end"


def run_command(
    model: Optional[str] = typer.Argument(None, help="Artifact (.engine or .onnx); default: model.engine or model.onnx here."),
    camera: Optional[str] = typer.Option(None, "--camera", help="V4L2 camera (0 or /dev/video0) or CSI camera (csi://0)."),
    source: Optional[str] = typer.Option(None, "--source", help="Video file, image folder or glob, rtsp:// or http:// URL, or a GStreamer pipeline ending in appsink."),
    headless: bool = typer.Option(False, "--headless", help="No window."),
    save: Optional[str] = typer.Option(None, "--save", help="Write the overlay video here (.mp4)."),
    jsonl: Optional[str] = typer.Option(None, "--jsonl", help="Write one JSON record per frame here."),
    save_anomalies: Optional[str] = typer.Option(None, "--save-anomalies", help="Folder for NNNNNN_frame.png and NNNNNN_overlay.png of anomalous frames."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Decision threshold on the normalised score (default 0.5, the artifact's own)."),
    summary: Optional[str] = typer.Option(None, "--summary", help="Write a JSON summary here at exit."),
    provider: str = typer.Option("auto", "--provider", help="auto, tensorrt, cuda or cpu (ONNX Runtime provider for .onnx)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after this many frames."),
    stats_every: float = typer.Option(5.0, "--stats-every", help="Seconds between statistics lines on stderr."),
    width: int = typer.Option(1280, "--width", help="CSI camera width."),
    height: int = typer.Option(720, "--height", help="CSI camera height."),
    fps: int = typer.Option(30, "--fps", help="CSI camera frame rate."),
) -> None:
    """Detect anomalies live: camera, stream, video file or image folder -> verdicts and overlays."""
    run(model, camera, source, headless=headless, save=save, jsonl=jsonl, save_anomalies=save_anomalies,
        threshold=threshold, summary=summary, provider=provider, max_frames=max_frames, stats_every=stats_every,
        width=width, height=height, fps=fps)
