"""Calibration defaults, importable without numpy or onnx (the CLI reads them at start-up)."""

from pathlib import Path

# minmax: on bottle (100 train/good frames, evaluated on test) it matched or beat percentile (99.999)
# on every figure (image AUROC drop 0, pixel AUROC +0.0005, 0% verdict flips) and calibrates in 5 s
# instead of 27. entropy equals minmax through ORT's quantize_static, which fixes its histogram at
# 128 bins = 128 quantized bins (no threshold left to search).
DEFAULT_METHOD = "minmax"


def int8_name(model) -> Path:
    """model.onnx -> model.int8.onnx, beside it: where calibrate writes and build looks."""
    p = Path(model)
    stem = p.name[:-5] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.int8.onnx")
