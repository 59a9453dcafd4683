"""hfr-edge: HFR-AE visual anomaly detection from PyTorch training to TensorRT on a Jetson.

Data flow (one subpackage or module per stage):
    data -> train -> checkpoint -> export/ -> calib/ -> build/ -> runtime/
This file stays import-light: importing hfr_edge never imports torch, onnx or tensorrt.
"""

__version__ = "0.1.0"
