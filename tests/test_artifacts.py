"""One opener for every artifact: a checkpoint is a Runner like a graph, so eval, bench and run take it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hfr_edge.artifacts import open_artifact  # noqa: E402
from hfr_edge.base.errors import HfrError  # noqa: E402
from hfr_edge.checkpoint import load_deploy_model  # noqa: E402
from hfr_edge.runtime.detector import Detector  # noqa: E402


def test_checkpoint_runner_matches_the_export_wrapper(tiny_ckpt):
    module, cfg, _ = load_deploy_model(tiny_ckpt)
    x = np.random.default_rng(0).random((3, 3, cfg.image_size, cfg.image_size), dtype=np.float32)
    with torch.inference_mode():
        want_map, want_score = module(torch.from_numpy(x))
    with open_artifact(tiny_ckpt, provider="cpu") as runner:
        assert runner.backend == f"pytorch {torch.__version__} eager (cpu)" and runner.meta.precision == "fp32"
        maps, scores = Detector(runner).predict_batch(x)
        with pytest.raises(HfrError, match="input 'image': shape"):
            runner.infer({"image": x[:, :, :8]})  # the Runner's checks hold for a checkpoint too
    np.testing.assert_allclose(maps, want_map.numpy()[:, 0], atol=1e-6)
    np.testing.assert_allclose(scores, want_score.numpy(), atol=1e-6)
    with pytest.raises(HfrError, match="--provider tensorrt does not apply to a checkpoint"):
        open_artifact(tiny_ckpt, provider="tensorrt")


def test_run_takes_a_checkpoint(tmp_path, tiny_ckpt, syn_data):
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "run", str(tiny_ckpt), "--source", str(syn_data / "test"),
                        "--headless", "-n", "3", "--json", "s.json", "--provider", "cpu"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["frames"] == 3 and s["backend"].startswith("pytorch") and s["stopped_by"] == "max-frames"
