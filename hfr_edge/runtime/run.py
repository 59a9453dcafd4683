"""`hfr-edge run`: frames from cameras, streams, videos or folders -> the model -> verdicts, overlay
windows, videos, JSONL, anomaly PNGs and a summary. No torch; runs on the Jetson's Python 3.8.

Each source is read in its own thread (multi.py); each tick batches the frames ready on all of them,
every tile of each, into one inference (tiles.py, loop.py); the artifact's view says where the model
looks (its ROI, aspect, tiles). Outputs are checked before anything is opened (outputs.py). A
source that fails is left behind while the others go on. The first Ctrl-C or SIGTERM stops the loop
cleanly (videos finalised, JSONL flushed, summary written); a second one interrupts at once.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, TextIO, Union

from ..base import console
from ..base.contract import THRESHOLD
from ..base.errors import HfrError
from ..base.view import view_for
from .detector import Detector
from .loop import Lane, run_loop
from .multi import Feeds, SourceStats
from .outputs import Outputs, check_outputs, remove_if_empty
from .remote import is_server_url
from .runner import Runner, default_artifact, open_runner
from .sinks import AnomalySaver, Display, JsonlSink, Stats, VideoSink, write_summary
from .sources import open_source
from .tiles import TiledDetector

Specs = Union[str, Sequence[str], None]

class _StopFlag:
    signal: Optional[str] = None  # name of the first signal received


@contextlib.contextmanager
def _stop_on_signals(flag: _StopFlag, sources):
    """First SIGINT/SIGTERM: ask the loop (and waiting live sources) to stop; second: KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        if flag.signal is not None:
            raise KeyboardInterrupt
        flag.signal = signal.Signals(signum).name  # plain attribute writes only: safe in a handler
        for src in sources:
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
        raise HfrError(f"--frames {max_frames} must be at least 1")
    if not stats_every > 0:
        raise HfrError(f"--stats-every {stats_every} must be a positive number of seconds")


def _specs(camera: Specs, source: Specs) -> List[tuple]:
    """(camera, source) pairs for open_source, one per source, cameras first."""
    as_list = lambda v: [] if v is None else [v] if isinstance(v, str) else list(v)  # noqa: E731
    pairs = [(c, None) for c in as_list(camera)] + [(None, s) for s in as_list(source)]
    if not pairs:
        raise HfrError("give a source: --camera (0, /dev/video0, csi://0) or --source (video file, image folder or "
                       "glob, rtsp:// or http:// URL, GStreamer pipeline); repeat them for several sources")
    return pairs


def run(model: Optional[str] = None, camera: Specs = None, source: Specs = None, *,
        headless: bool = False, save: Optional[str] = None, jsonl: Optional[str] = None,
        save_anomalies: Optional[str] = None, threshold: Optional[float] = None, summary: Optional[str] = None,
        provider: str = "auto", max_frames: Optional[int] = None, stats_every: float = 5.0,
        width: int = 1280, height: int = 720, fps: int = 30, stall_timeout: float = 5.0,
        roi: Optional[str] = None, tiles: Optional[str] = None, drift: str = "warn",
        drift_window: Optional[int] = None, max_reconnects: Optional[int] = None,
        log: Optional[TextIO] = None, opener: Callable[..., Runner] = open_runner,
        server: Optional[str] = None) -> dict:
    """Run the detector over one or more sources; returns the summary dict (also written to `summary`).

    camera / source: one spec or a list each (several sources share the runner, one batch per tick);
    max_frames counts per source; max_reconnects: a live source gives up (and fails) after so many
    reconnects without a frame (None: never). roi / tiles replace the artifact's own. Messages go to `log` (a text
    file; None: the console). `opener(path, provider=...)` opens the model (the CLI passes the opener
    that also takes a checkpoint). server: a Triton server's URL scores the frames there
    (hfr_edge.runtime.remote); frames it cannot score count as dropped."""
    _check_args(threshold, max_frames, stats_every)
    if server is not None:
        if model is not None:
            raise HfrError(f"give MODEL or --server, not both (the server's model is scored at {server})")
        model = server
    pairs = _specs(camera, source)
    outs = check_outputs(len(pairs), save=save, jsonl=jsonl, summary=summary, save_anomalies=save_anomalies,
                         inputs=[s for _, s in pairs if s])
    try:
        return _run(model, pairs, outs, headless=headless, threshold=threshold, provider=provider,
                    max_frames=max_frames, stats_every=stats_every, width=width, height=height, fps=fps,
                    stall_timeout=stall_timeout, roi=roi, tiles=tiles, drift=drift, drift_window=drift_window,
                    max_reconnects=max_reconnects, log=log, opener=opener)
    except BaseException:
        remove_if_empty(outs.created)  # a failed run leaves no empty folder of its own behind
        raise


def _run(model, pairs, outs: Outputs, *, headless, threshold, provider, max_frames, stats_every, width,
         height, fps, stall_timeout, roi, tiles, drift, drift_window, max_reconnects, log, opener) -> dict:
    from .drift import open_watch  # noqa: PLC0415

    if model is None:
        path, why = default_artifact()
        console.say(f"hfr-edge: {why}", log)
        model = str(path)
    thr = THRESHOLD if threshold is None else float(threshold)
    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(opener(model, provider=provider))
        view = view_for(runner.meta.extra.get("view"), roi, model, tiles)
        watch = open_watch(drift, runner.meta.extra.get("reference"), view, drift_window, model, log)
        sources = []
        for cam, src in pairs:
            try:
                s = open_source(cam, src, width=width, height=height, fps=fps, stall_timeout=stall_timeout,
                                max_reconnects=max_reconnects)
            except BaseException:
                for opened in sources:
                    opened.close()
                raise
            sources.append(s)
        # each feed releases its source once its reader has stopped, never under a reader still in a
        # read (releasing a capture another thread reads crashed the process: a segfault under load)
        feeds = Feeds(sources, max_frames)
        lanes = []
        for f in feeds.items:
            lane = Lane(f, SourceStats(f), watch=watch(f.index, f.src.describe()) if watch else None)
            if not headless:
                title = "hfr-edge" if len(sources) == 1 else f"hfr-edge [{f.index}] {f.src.name}"
                lane.display = stack.enter_context(contextlib.closing(Display(title)))
            if outs.videos[f.index] is not None:
                lane.video = VideoSink(outs.videos[f.index], f.src.fps or 25.0)
                stack.callback(lane.video.close)
            if outs.anomaly_dirs[f.index] is not None:
                lane.saver = AnomalySaver(outs.anomaly_dirs[f.index])
            lanes.append(lane)
        jsonl_sink = stack.enter_context(contextlib.closing(JsonlSink(outs.jsonl))) if outs.jsonl else None
        stack.callback(feeds.close)  # runs first: readers stop before sources and sinks close
        size = runner.meta.image_size
        names = ", ".join(s.describe() for s in sources)
        console.say(f"hfr-edge: {names} -> {model} ({runner.backend}, {size}x{size}; {view.describe()}), "
                    f"threshold {thr:g}", log)
        flag, stats, stopped_by = _StopFlag(), Stats(), "error"
        det = TiledDetector(Detector(runner, thr), view)

        def on_drift(lane, ev) -> bool:
            console.warn(f"DRIFT [{lane.feed.index}] {ev['message']}", log)
            return drift == "stop"

        with _stop_on_signals(flag, [*sources, runner]):  # a remote runner waiting to reconnect stops too  # kept during clean-up too: a second signal interrupts it
            try:
                feeds.start()
                why = run_loop(feeds, lanes, det, thr, jsonl_sink, stats, lambda: flag.signal is not None,
                               stats_every, log, on_drift)
                stopped_by = flag.signal or why or _why_ended(feeds, max_frames)
            finally:
                feeds.close()  # readers stopped first: a frame they held counts as dropped in the summary
                result = _summary(stats, feeds, lanes, model=model if is_server_url(model) else str(Path(model)),
                                  lost=getattr(runner, "dropped", 0), backend=runner.backend,
                                  precision=runner.meta.precision, image_size=size, threshold=thr,
                                  stopped_by=stopped_by, view=view.to_dict(), drift=drift)
                try:
                    stack.close()  # finalise the videos and the JSONL before the summary says they are done
                finally:
                    write_summary(str(outs.summary) if outs.summary else None, result)
                console.say(f"hfr-edge: {result['frames']} frames in {result['elapsed_s']:.1f} s "
                            f"({result['fps']:.1f} fps), {result['anomalous']} anomalous, {result['dropped']} dropped, "
                            f"{result['skipped']} skipped, {result['drift_events']} drift events [{stopped_by}]", log)
                if len(lanes) > 1:
                    for s in result["sources"]:
                        console.say(f"hfr-edge:   [{s['id']}] {s['source']}: {s['frames']} frames ({s['fps']:.1f} fps), "
                                    f"{s['anomalous']} anomalous, {s['dropped']} dropped, {s['reconnects']} reconnects"
                                    f"{', FAILED: ' + s['error'] if s['error'] else ''}", log)
    _raise_failures(result, feeds, stopped_by)
    return result


def _why_ended(feeds: Feeds, max_frames) -> str:
    items = feeds.items
    if all(f.error for f in items):
        return "error"
    if max_frames is not None and all(f.taken >= max_frames for f in items if not f.error):
        return "max-frames"
    return "end"


def _summary(stats: Stats, feeds: Feeds, lanes: List[Lane], lost: int = 0, **extra) -> dict:
    items = feeds.items
    elapsed = time.perf_counter() - stats.start
    per = [lane.stats.summary(elapsed) for lane in lanes]
    for p, lane in zip(per, lanes):
        p["drift_events"] = len(lane.events)
    # lost: frames a Triton server could not score (counted by its runner)
    return stats.summary(sum(f.dropped for f in items) + lost, sum(f.src.skipped for f in items),
                         source=", ".join(f.src.describe() for f in items),
                         reconnects=sum(getattr(f.src, "reconnects", 0) for f in items),
                         drift_events=sum(len(lane.events) for lane in lanes), sources=per, **extra)


def _raise_failures(result: dict, feeds: Feeds, stopped_by: str) -> None:
    failed = [f for f in feeds.items if f.error]
    if failed:  # the others ran to their end; the exit code still says one failed
        more = f" (and {len(failed) - 1} more source(s) failed, see the summary)" if len(failed) > 1 else ""
        raise HfrError(f"{failed[0].error}{more}", exit_code=1)
    if stopped_by == "drift":
        raise HfrError(f"stopped by the drift watch (--drift stop) after {result['frames']} frames; the scene no "
                       f"longer looks like the training images: check the camera, the light and the focus, or retrain",
                       exit_code=1)
    if stopped_by == "end" and result["frames"] == 0 and result["skipped"]:
        raise HfrError(f"{result['source']}: no frame could be read ({result['skipped']} unreadable image(s) skipped, "
                       f"named above); replace or remove them", exit_code=1)
