"""`hfr-edge run [MODEL]`: frames from a camera, stream, video or folder -> verdicts and overlays."""

from __future__ import annotations

from typing import List, Optional

import typer
from typing_extensions import Annotated

from .options import PROVIDER_HELP, ROI_HELP, TILES_HELP, alias, write_json


def run_command(
    model: Annotated[Optional[str], typer.Argument(metavar="MODEL", help="model.engine, model.onnx or ckpt.pt; default: "
                                                                         "model.engine or model.onnx here")] = None,
    camera: Annotated[Optional[List[str]], typer.Option(help="V4L2 camera (0 or /dev/video0) or CSI camera (csi://0); "
                                                             "repeat for several")] = None,
    source: Annotated[Optional[List[str]], typer.Option(help="Video file, image folder or glob, rtsp:// or http:// URL, "
                                                             "or a GStreamer pipeline ending in appsink; repeat for "
                                                             "several (one runner, one batch per tick)")] = None,
    headless: Annotated[bool, typer.Option("--headless", help="No window")] = False,
    save: Annotated[Optional[str], typer.Option(help="Write the overlay video here (.mp4; several sources: "
                                                     "NAME_0.mp4, NAME_1.mp4 ...)")] = None,
    jsonl: Annotated[Optional[str], typer.Option(help="Write one JSON record per frame here (source_id: which source) "
                                                      "and one per drift event")] = None,
    save_anomalies: Annotated[Optional[str], typer.Option(help="Folder for NNNNNN_frame.png and NNNNNN_overlay.png "
                                                               "of anomalous frames (several sources: 0/, 1/ ...)")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Decision threshold on the normalised score (default 0.5, "
                                                            "the artifact's own)")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", metavar="PATH", help="Write the run's summary as JSON "
                                                                                    "here at exit ('-': to stdout)")] = None,
    summary: Annotated[Optional[str], typer.Option("--summary", hidden=True)] = None,
    provider: Annotated[str, typer.Option(help=PROVIDER_HELP)] = "auto",
    frames: Annotated[Optional[int], typer.Option("-n", "--frames", help="Stop each source after this many frames")] = None,
    max_frames: Annotated[Optional[int], typer.Option("--max-frames", hidden=True)] = None,
    stats_every: Annotated[float, typer.Option(help="Seconds between statistics lines on stderr")] = 5.0,
    width: Annotated[int, typer.Option(help="CSI camera width")] = 1280,
    height: Annotated[int, typer.Option(help="CSI camera height")] = 720,
    fps: Annotated[int, typer.Option(help="CSI camera frame rate")] = 30,
    server: Annotated[Optional[str], typer.Option(help="Score on a Triton server instead: http://HOST:8000 or "
                                                       "grpc://HOST:8001 (/NAME for a model other than hfr_edge); "
                                                       "frames lost while it is away count as dropped")] = None,
    roi: Annotated[Optional[str], typer.Option(help=ROI_HELP)] = None,
    tiles: Annotated[Optional[str], typer.Option(help=TILES_HELP)] = None,
    drift: Annotated[str, typer.Option(help="Drift watch (brightness, contrast, sharpness, layout, scores against the "
                                            "training images): off | warn (event, banner, count) | stop (end the run)")] = "warn",
    drift_window: Annotated[Optional[int], typer.Option(help="Frames per source the drift watch averages over "
                                                             "(default 300)")] = None,
) -> None:
    """Detect anomalies live: camera, stream, video file or image folder -> verdicts and overlays."""
    from ..artifacts import open_artifact
    from ..runtime.run import run

    frames = alias(frames, max_frames)
    json_out = alias(json_out, summary)
    to_stdout = json_out == "-"
    result = run(model, camera, source, headless=headless, save=save, jsonl=jsonl, save_anomalies=save_anomalies,
                 threshold=threshold, summary=None if to_stdout else json_out, provider=provider, max_frames=frames,
                 stats_every=stats_every, width=width, height=height, fps=fps, opener=open_artifact, roi=roi,
                 tiles=tiles, drift=drift, drift_window=drift_window, server=server)
    if to_stdout:
        write_json("-", result)
