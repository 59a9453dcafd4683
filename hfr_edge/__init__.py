"""hfr-edge: HFR-AE visual anomaly detection from PyTorch training to TensorRT on a Jetson.

Data flow (one subpackage or module per stage):
    data -> train -> checkpoint -> export/ -> calib/ -> build/ -> runtime/
with base/ (torch-free: errors, files, the I/O contract, images, console) under all of them and cli/
over all of them; the layering is checked by import-linter ([tool.importlinter] in pyproject.toml).
This file stays import-light: importing hfr_edge never imports torch, onnx or tensorrt.
"""

__version__ = "0.1.0"
