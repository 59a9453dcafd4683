"""The issue's own check, as a user would run it: a short video from MVTec bottle test images,
`hfr-edge run --source video --headless --jsonl --save` with a real exported model; one record
per frame, an mp4 OpenCV reads back frame for frame, scores equal to `eval` on the decoded frames."""

import json
import subprocess
import sys

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from toy import decode_video  # noqa: E402


def test_run_over_bottle_video_agrees_with_eval(tmp_path, bottle_dir, tiny_model_onnx):
    from hfr_edge.evaluate import open_scorer
    from hfr_edge.base.images import preprocess

    paths = sorted((bottle_dir / "test").glob("*/000.png"))[:4] + sorted((bottle_dir / "test" / "good").glob("*.png"))[:4]
    vid = tmp_path / "bottle.mp4"
    w = cv2.VideoWriter(str(vid), cv2.VideoWriter_fourcc(*"mp4v"), 5, (128, 128))
    for p in paths:
        w.write(cv2.resize(cv2.imread(str(p)), (128, 128), interpolation=cv2.INTER_AREA))
    w.release()
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "run", str(tiny_model_onnx), "--source", str(vid),
                        "--headless", "--jsonl", "r.jsonl", "--save", "out.mp4", "--summary", "s.json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(recs) == len(paths)
    assert len(decode_video(tmp_path / "out.mp4")) == len(paths)
    frames = decode_video(vid)
    with open_scorer(str(tiny_model_onnx), "cpu") as (predict, size, _, _):
        _, scores = predict(preprocess(frames, size))
    np.testing.assert_allclose([r["score"] for r in recs], scores, atol=1e-5)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == len(paths) and summary["dropped"] == 0
