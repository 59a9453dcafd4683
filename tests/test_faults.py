"""Faults while writing artifacts, caused for real: SIGKILL in the middle of `train`, `export` and
`calibrate` (caught while the artifact's `.tmp-` file exists), a crash between an artifact and its
JSON, `build` without TensorRT, and a full disk (`ulimit -f`). Each must leave the previous
artifact intact under its final name, and never a partial file there."""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hfr_edge.base.artifact import load_meta, sidecar
from hfr_edge.runtime.trtinfo import describe_missing

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _argv(*args):
    return [sys.executable, "-m", "hfr_edge", *map(str, args)]


def _tmps(folder: Path, name: str):
    return glob.glob(str(folder / f".{name}.tmp-*"))


def kill_while_writing(args, cwd: Path, name: str, put_old, attempts: int = 3) -> bytes:
    """Put the previous artifact in place (put_old() -> its bytes), start `hfr-edge ARGS` and SIGKILL
    it as soon as `.NAME.tmp-*` appears (the new artifact is being written). Returns the old bytes;
    tries again (old artifact back in place) if the write was too quick to catch."""
    for _ in range(attempts):
        for t in _tmps(cwd, name):
            os.unlink(t)
        old = put_old()
        p = subprocess.Popen(_argv(*args), cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        try:
            while p.poll() is None and time.monotonic() - t0 < 300:
                if _tmps(cwd, name):
                    p.send_signal(signal.SIGKILL)
                    p.wait()
                    assert p.returncode == -signal.SIGKILL and _tmps(cwd, name)  # killed mid-write
                    return old
                time.sleep(0.002)
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
            err = p.stderr.read().decode(errors="replace")
            p.stderr.close()
        assert p.returncode == 0, f"hfr-edge {' '.join(map(str, args))} failed before writing: {err}"
    pytest.fail(f"never caught {name} while it was being written in {attempts} attempts")


@pytest.fixture
def old_graph(tmp_path, tiny_model_onnx):
    """put(name) -> a function that puts a previous graph + JSON under that final name, returning its bytes."""
    def put(name: str):
        def again() -> bytes:
            p = tmp_path / name
            shutil.copyfile(tiny_model_onnx, p)
            shutil.copyfile(sidecar(tiny_model_onnx), sidecar(p))
            return p.read_bytes()

        return tmp_path / name, again

    return put


def _assert_old_intact(path: Path, old: bytes, graph: bool = True):
    assert path.read_bytes() == old  # the previous artifact, whole
    if graph:  # its JSON survived, or was dropped just before the rename: either way it describes the old graph
        assert load_meta(path).precision == "fp32"
    for t in _tmps(path.parent, path.name):  # what a SIGKILL may leave: a hidden temp beside, never the final name
        assert Path(t).name.startswith(f".{path.name}.tmp-")


def test_sigkill_during_export(tmp_path, tiny_ckpt, old_graph):
    path, put_old = old_graph("model.onnx")
    old = kill_while_writing(("export", tiny_ckpt, "-o", "model.onnx"), tmp_path, "model.onnx", put_old)
    _assert_old_intact(path, old)


def test_sigkill_during_calibrate(tmp_path, tiny_model_onnx, syn_data, old_graph):
    path, put_old = old_graph("q.int8.onnx")
    old = kill_while_writing(("calibrate", tiny_model_onnx, "--images", syn_data / "train" / "good", "-n", "4",
                              "-o", "q.int8.onnx"), tmp_path, "q.int8.onnx", put_old)
    _assert_old_intact(path, old)


def test_sigkill_during_train(tmp_path, tiny_ckpt, syn_data):
    path = tmp_path / "ckpt.pt"

    def put_old() -> bytes:
        shutil.copyfile(tiny_ckpt, path)
        return path.read_bytes()

    old = kill_while_writing(("train", syn_data, "-o", "ckpt.pt", "--epochs", "1", "--image-size", "64"),
                             tmp_path, "ckpt.pt", put_old)
    _assert_old_intact(path, old, graph=False)
    from hfr_edge.checkpoint import load_checkpoint

    assert load_checkpoint(path)["format"]  # still loads


CRASH = """
import os, signal, sys
import {module} as m
m.write_meta = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)  # die between the artifact and its JSON
from hfr_edge.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize("stage,module", [("export", "hfr_edge.export.onnx_export"),
                                          ("calibrate", "hfr_edge.calib.calibrate")])
def test_crash_between_artifact_and_json(tmp_path, toy_onnx, tiny_ckpt, tiny_model_onnx, syn_data, stage, module):
    """The new graph must never sit beside the old graph's JSON (here the toy's, which says
    backbone 'toy'): the stale JSON is dropped first, and the graph's own metadata answers."""
    name = "toy.onnx"
    args = (("export", tiny_ckpt, "-o", name) if stage == "export" else
            ("calibrate", tiny_model_onnx, "--images", syn_data / "train" / "good", "-n", "4", "-o", name))
    assert load_meta(toy_onnx).model["backbone"] == "toy"
    r = subprocess.run([sys.executable, "-c", CRASH.format(module=module), *map(str, args)], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not sidecar(toy_onnx).exists()
    meta = load_meta(toy_onnx)  # from inside the new graph
    assert meta.model["backbone"] != "toy"
    assert meta.precision == ("fp32" if stage == "export" else "int8")


@pytest.mark.skipif(describe_missing() is None, reason="TensorRT and a GPU are here: build would run")
def test_build_without_tensorrt_refuses_before_writing(tmp_path, tiny_model_onnx):
    shutil.copyfile(tiny_model_onnx, tmp_path / "model.onnx")
    shutil.copyfile(sidecar(tiny_model_onnx), tmp_path / "model.onnx.json")
    (tmp_path / "model.engine").write_bytes(b"old engine")
    before = sorted(os.listdir(tmp_path))
    for extra in ((), ("--int8",), ("--fp16",)):
        r = subprocess.run(_argv("build", "model.onnx", "-o", "model.engine", *extra), cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().splitlines()[-1].startswith("hfr-edge: error: building a TensorRT engine needs")
        assert sorted(os.listdir(tmp_path)) == before  # no engine, no fp16/int8 graph, no temp
        assert (tmp_path / "model.engine").read_bytes() == b"old engine"


def _full_disk(args, cwd: Path, kib: int):
    """`hfr-edge ARGS` with every file it writes limited to `kib` KiB (a disk that fills up).
    CPython ignores SIGXFSZ, so the write fails with EFBIG instead of the process dying."""
    cmd = " ".join(shlex.quote(str(a)) for a in _argv(*args))
    return subprocess.run(["bash", "-c", f"ulimit -f {kib}; exec {cmd}"], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def _one_error_line(r, code, *words):
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("hfr-edge: error: ") and sum(ln.startswith("hfr-edge: error:") for ln in lines) == 1
    for w in words:
        assert w in lines[-1], (w, lines[-1])


def test_full_disk_export(tmp_path, tiny_ckpt, old_graph):
    path, put_old = old_graph("model.onnx")
    old = put_old()
    old_json = sidecar(path).read_bytes()
    r = _full_disk(("export", tiny_ckpt, "-o", "model.onnx"), tmp_path, 100)
    _one_error_line(r, 2, "cannot write model.onnx", "no space left")
    assert path.read_bytes() == old and sidecar(path).read_bytes() == old_json
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "model.onnx.json"]  # no temp left either


def test_full_disk_train(tmp_path, tiny_ckpt, syn_data):
    path = tmp_path / "ckpt.pt"
    shutil.copyfile(tiny_ckpt, path)
    old = path.read_bytes()
    r = _full_disk(("train", syn_data, "-o", "ckpt.pt", "--epochs", "1", "--image-size", "64"), tmp_path, 1000)
    _one_error_line(r, 2, "cannot write ckpt.pt", "no space left")
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["ckpt.pt"]


def test_full_disk_calibrate(tmp_path, tiny_model_onnx, syn_data):
    r = _full_disk(("calibrate", tiny_model_onnx, "--images", syn_data / "train" / "good", "-n", "4",
                    "-o", "q.int8.onnx"), tmp_path, 1000)
    _one_error_line(r, 1, "calibration could not write its temporary graphs", "TMPDIR")
    assert os.listdir(tmp_path) == []


def test_full_disk_run_jsonl_keeps_complete_records(tmp_path, toy_onnx):
    import json

    import numpy as np
    from PIL import Image

    (tmp_path / "frames").mkdir()
    for i in range(40):
        Image.fromarray(np.full((16, 16, 3), 6 * i, np.uint8)).save(tmp_path / "frames" / f"{i:02d}.png")
    r = _full_disk(("run", toy_onnx.name, "--source", "frames", "--headless", "--jsonl", "out.jsonl"), tmp_path, 2)
    _one_error_line(r, 1, "--jsonl out.jsonl", "complete records")
    lines = (tmp_path / "out.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) > 2  # ends with a whole record
    assert [json.loads(ln)["frame"] for ln in lines[:-1]] == list(range(len(lines) - 1))


def test_full_disk_run_video_is_not_renamed_broken(tmp_path, toy_onnx):
    """OpenCV's writer fails silently: the unreadable video must not replace the previous one."""
    import numpy as np
    from PIL import Image

    (tmp_path / "frames").mkdir()
    for i in range(40):
        Image.fromarray(np.full((16, 16, 3), 6 * i, np.uint8)).save(tmp_path / "frames" / f"{i:02d}.png")
    (tmp_path / "out.mp4").write_bytes(b"previous video")
    r = _full_disk(("run", toy_onnx.name, "--source", "frames", "--headless", "--save", "out.mp4"), tmp_path, 1)
    _one_error_line(r, 1, "--save out.mp4", "could not be written completely")
    assert (tmp_path / "out.mp4").read_bytes() == b"previous video"
    assert not _tmps(tmp_path, "out.mp4")
