"""ONE runner interface over ONNX Runtime and TensorRT (Polygraphy-style).

    with open_runner("model.onnx") as r:
        out = r.infer({"image": x})      # x: float32 (N, 3, S, S) RGB in [0, 1]
        out["anomaly_map"], out["score"]  # (N, 1, S, S), (N,) normalised, 0.5 = threshold

Input names, dtypes and shapes are checked here once, so each backend is a few short methods.
Backends are imported lazily: this module never imports torch, onnx or tensorrt.
"""
