"""The I/O contract of every hfr-edge graph and engine, written once (no imports).

    input   INPUT_NAME  float32 (N, 3, S, S), RGB, values in [0, 1]
    outputs MAP_NAME    float32 (N, 1, S, S) and SCORE_NAME float32 (N,), both normalised so that
            THRESHOLD is the decision threshold (0 at the smallest held-out map value)
"""

INPUT_NAME = "image"
MAP_NAME = "anomaly_map"
SCORE_NAME = "score"
OUTPUT_NAMES = (MAP_NAME, SCORE_NAME)
PRECISIONS = ("fp32", "fp16", "int8")
THRESHOLD = 0.5  # a frame is anomalous when its normalised score >= THRESHOLD
TRT8_MAX_OPSET = 17  # TensorRT 8.5 / 8.6 (JetPack 5): its ONNX parser reads opset <= 17
