"""The checkpoint contract: round trip, and every bad file refused in one line without running code."""

import os
import pickle

import pytest

torch = pytest.importorskip("torch")

from hfr_edge.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from hfr_edge.base.errors import HfrError  # noqa: E402


def test_round_trip(tiny_ckpt):
    ckpt = load_checkpoint(tiny_ckpt)
    assert ckpt["format"] == "hfr-edge-checkpoint" and ckpt["version"] == 1
    assert ckpt["config"]["image_size"] == 64
    assert {"threshold", "low"} <= set(ckpt["norm"])
    assert ckpt["train"]["epochs"] == 2 and "final_loss" in ckpt["train"]
    a = model_from_checkpoint(ckpt)
    b = model_from_checkpoint(load_checkpoint(tiny_ckpt))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(a(x)[1], b(x)[1]))


def test_missing_truncated_foreign(tmp_path, tiny_ckpt):
    with pytest.raises(HfrError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(tiny_ckpt.read_bytes()[:5000])
    with pytest.raises(HfrError, match="truncated or corrupt"):
        load_checkpoint(trunc)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": torch.zeros(2)}, foreign)
    with pytest.raises(HfrError, match="not an hfr-edge checkpoint"):
        load_checkpoint(foreign)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(HfrError, match="text.pt"):
        load_checkpoint(text)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hfr-edge-checkpoint", "payload": _Evil(marker)}, evil)
    with pytest.raises(HfrError, match="would run code"):
        load_checkpoint(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"  # a plain pickle, not a torch zip
    raw.write_bytes(pickle.dumps(_Evil(marker)))
    with pytest.raises(HfrError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_cli_refuses_in_one_line(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "export", str(bad), "-o", str(tmp_path / "m.onnx")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "bad.pt" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.onnx").exists()
