"""The hot loop of `hfr-edge run`, one tick at a time: take the frames ready on every source ->
pre-process all their tiles into one batch -> one inference -> per frame: verdict, overlay (only
where a sink shows or saves it), drift watch -> each source's sinks. Every stage is timed; a
tick's times are shared out over its frames.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, TextIO

from ..base import console
from .multi import Feed, Feeds, SourceStats
from .remote import FrameDropped
from .sinks import AnomalySaver, Display, JsonlSink, Stats, VideoSink, annotate
from .tiles import FrameResult, TiledDetector


@dataclass
class Lane:
    """One source's share of a run: its counters and its sinks."""

    feed: Feed
    stats: SourceStats
    video: Optional[VideoSink] = None
    saver: Optional[AnomalySaver] = None
    display: Optional[Display] = None
    watch: Optional[object] = None  # drift.DriftWatch: update(frame, result) -> events
    events: List[dict] = field(default_factory=list)

    @property
    def needs_overlay(self) -> bool:
        return self.video is not None or self.saver is not None or self.display is not None


def _record(lane: Lane, frame, r: FrameResult, bad: bool, tiled: bool) -> dict:
    rec = {"frame": frame.index, "time": round(frame.time, 6), "source": frame.name, "source_id": lane.feed.index,
           "score": r.score, "anomalous": bad, "latency_ms": round((time.time() - frame.time) * 1e3, 3)}
    if tiled:
        rec["tile"] = int(r.tile_scores.argmax())  # where the frame's score comes from, row by row
    return rec


def run_loop(feeds: Feeds, lanes: List[Lane], det: TiledDetector, threshold: float, jsonl: Optional[JsonlSink],
             stats: Stats, stopped: Callable[[], bool], stats_every: float, log: Optional[TextIO],
             on_drift: Callable[[Lane, dict], bool] = lambda lane, ev: False) -> Optional[str]:
    """Run until every source is finished or `stopped()`; returns "quit" (a window closed), "drift"
    (on_drift asked to stop) or None. on_drift(lane, event) is told of each drift event."""
    pc = time.perf_counter
    next_stats = pc() + stats_every
    tiled = det.view.n_tiles > 1
    region = det.view.roi
    while True:
        t0 = pc()
        batch = feeds.next_batch(stopped)
        if batch is None:
            return None
        t1 = pc()
        x, counts = det.prepare([fr.rgb for _, fr in batch], [fr.name for _, fr in batch])
        t2 = pc()
        try:
            results = det.infer(x, counts)
        except FrameDropped:  # a Triton server away: its runner counts the frames as dropped, nothing is written
            continue
        t3 = pc()
        done = []
        for (feed, frame), r in zip(batch, results):
            lane = lanes[feed.index]
            bad = r.score >= threshold
            overlay = None
            if lane.needs_overlay:
                box = None if region is None else (region[0], region[1], region[0] + region[2], region[1] + region[3])
                overlay = annotate(frame.rgb, det.frame_map(r, frame.rgb.shape[:2]), r.score, bad, box=box)
            events = lane.watch.update(frame, r) if lane.watch is not None else []
            done.append((lane, frame, r, bad, overlay, events))
        t4 = pc()
        quit_ = stop = False
        for lane, frame, r, bad, overlay, events in done:
            if jsonl is not None:
                jsonl.write(_record(lane, frame, r, bad, tiled))
                for ev in events:
                    jsonl.write(ev)
            for ev in events:
                lane.events.append(ev)
                stop = on_drift(lane, ev) or stop
            if lane.video is not None:
                lane.video.write(overlay)
            if lane.saver is not None and bad:
                lane.saver.save(frame.index, frame.rgb, overlay)
            if lane.display is not None and not lane.display.show(overlay):
                quit_ = True
            lane.stats.add(bad)
        t5 = pc()
        n = len(done)
        share = ((t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n, (t4 - t3) / n, (t5 - t4) / n)
        parts = det.det.runner.last_timings  # a server's share of the inference time, when remote
        for _, _, _, bad, _, _ in done:
            stats.add(share, bad, parts)
        if quit_:
            return "quit"
        if stop:
            return "drift"
        if t5 >= next_stats:
            lost = getattr(det.det.runner, "dropped", 0)
            console.say(stats.line(sum(f.dropped for f in feeds.items) + lost, sum(f.src.skipped for f in feeds.items)), log)
            if len(lanes) > 1:
                console.say("hfr-edge:   " + "; ".join(_lane_line(lane) for lane in lanes), log)
            next_stats = t5 + stats_every


def _lane_line(lane: Lane) -> str:
    f = lane.feed
    state = " FAILED" if f.error else " ended" if f.finished else ""
    return (f"[{f.index}] {lane.stats.window_fps():.1f} fps, {f.dropped} dropped, "
            f"{getattr(f.src, 'reconnects', 0)} reconnects{state}")
