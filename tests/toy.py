"""A toy graph that honours the hfr-edge I/O contract, for runtime tests that need no training:
anomaly_map = mean over RGB of |image - 0.5| * 2 (N, 1, S, S); score = its max (N,)."""

from __future__ import annotations

from pathlib import Path


def make_toy_onnx(path, size: int = 64, precision: str = "fp32") -> Path:
    import onnx
    from onnx import TensorProto, helper

    from hfr_edge.base.artifact import ArtifactMeta, write_meta

    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    axes1 = helper.make_tensor("axes1", TensorProto.INT64, [1], [1])
    axes123 = helper.make_tensor("axes123", TensorProto.INT64, [3], [1, 2, 3])
    nodes = [
        helper.make_node("Sub", ["image", "half"], ["centered"]),
        helper.make_node("Abs", ["centered"], ["absd"]),
        helper.make_node("Mul", ["absd", "two"], ["scaled"]),
        helper.make_node("ReduceMean", ["scaled", "axes1"], ["anomaly_map"], keepdims=1),
        helper.make_node("ReduceMax", ["anomaly_map", "axes123"], ["score"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, size, size]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        initializer=[half, two, axes1, axes123],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    meta = ArtifactMeta(kind="onnx", precision=precision, image_size=size,
                        model={"backbone": "toy", "image_size": size}, norm={"threshold": 1.0, "low": 0.0},
                        extra={"toy": True})
    write_meta(path, meta)
    return path


def decode_video(path) -> list:
    """Every frame of a video file as RGB uint8 arrays, read with OpenCV directly (the reference the
    runtime's own sources are compared with)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return frames
            frames.append(bgr[:, :, ::-1])
    finally:
        cap.release()


def ctrl_c_once_stalled(cam, settle: float) -> None:
    """In a daemon thread: once the fake camera `cam` has served its frames (cam.left == 0) and
    `settle` seconds have passed, send this process a SIGINT, as Ctrl-C in a terminal does."""
    import os
    import signal
    import threading
    import time

    def send():
        while cam.left > 0:
            time.sleep(0.01)
        time.sleep(settle)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=send, daemon=True).start()
