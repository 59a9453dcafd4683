"""`run` checks every output path before it opens the model or the source, and a failed run leaves
no temporary file and no empty folder of its own behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from hfr_edge.base.errors import HfrError
from hfr_edge.runtime.outputs import check_outputs, per_source
from hfr_edge.runtime.run import run
from hfr_edge.runtime.runner import open_runner

cv2 = pytest.importorskip("cv2")
REPO = Path(__file__).resolve().parents[1]


def _never_opened(*a, **k):
    raise AssertionError("the model was opened before the outputs were checked")


@pytest.fixture
def frames(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(8):
        cv2.imwrite(str(d / f"{i:02d}.png"), np.full((32, 40, 3), 30 * i, np.uint8))
    return d


def _listing(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("option, value, message", [
    ("save", "{tmp}", r"--save .*: is a folder; give a file name such as .*out\.mp4"),
    ("jsonl", "{tmp}/missing/r.jsonl", r"--jsonl .*r\.jsonl: folder .*missing does not exist"),
    ("summary", "{tmp}/frames/00.png/s.json", r"--json .*: .*00\.png is a file, not a folder"),
    ("save_anomalies", "{tmp}/frames/00.png", r"--save-anomalies .*00\.png: is a file; give a folder"),
    ("save_anomalies", "{tmp}/no/such/dir", r"--save-anomalies .*dir: folder .*no/such does not exist"),
])
def test_bad_output_fails_before_the_model_is_opened(tmp_path, frames, option, value, message):
    before = _listing(tmp_path)
    with pytest.raises(HfrError, match=message) as exc:
        run("model.onnx", source=str(frames), headless=True, opener=_never_opened,
            **{option: value.format(tmp=tmp_path)})
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)
    assert _listing(tmp_path) == before  # nothing written, not even a probe


def test_unwritable_folder_is_refused(frames):
    try:  # /sys refuses new files even to root, where chmod would not
        fd, p = tempfile.mkstemp(dir="/sys")
    except OSError:
        pass
    else:
        os.close(fd)
        os.unlink(p)
        pytest.skip("/sys is writable here")
    for option, name in (("save", "--save"), ("jsonl", "--jsonl"), ("summary", "--json")):
        with pytest.raises(HfrError, match=rf"{name} /sys/x\.mp4: cannot create files in folder /sys"):
            run("model.onnx", source=str(frames), headless=True, opener=_never_opened, **{option: "/sys/x.mp4"})


def test_outputs_may_not_collide_with_each_other_or_the_source(tmp_path):
    video = tmp_path / "in.mp4"
    video.write_bytes(b"a user's recording")
    with pytest.raises(HfrError, match=r"--save .*in\.mp4: is also --source"):
        check_outputs(1, save=str(video), inputs=[str(video)])
    with pytest.raises(HfrError, match=r"--json .*r\.json: is also --jsonl"):
        check_outputs(1, jsonl=str(tmp_path / "r.json"), summary=str(tmp_path / "r.json"))
    assert video.read_bytes() == b"a user's recording"


def test_a_video_without_an_extension_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(HfrError, match=r"--save .*saves: no file extension.*saves\.mp4.*--save-anomalies"):
        check_outputs(1, save=str(tmp_path / "saves"))
    assert _listing(tmp_path) == []


def test_several_sources_get_one_video_and_folder_each(tmp_path):
    assert per_source("out.mp4", 1) == [Path("out.mp4")]
    assert per_source("a/out.mp4", 3) == [Path("a/out_0.mp4"), Path("a/out_1.mp4"), Path("a/out_2.mp4")]
    outs = check_outputs(2, save=str(tmp_path / "v.mp4"), save_anomalies=str(tmp_path / "bad"))
    assert outs.anomaly_dirs == [tmp_path / "bad" / "0", tmp_path / "bad" / "1"]
    assert all(d.is_dir() for d in outs.anomaly_dirs) and outs.videos[1] == tmp_path / "v_1.mp4"


def test_cli_save_to_a_folder_is_one_line_and_leaves_nothing(tmp_path, toy_onnx, frames):
    out = tmp_path / "out"
    out.mkdir()
    before = _listing(tmp_path)
    r = subprocess.run([sys.executable, "-m", "hfr_edge", "run", str(toy_onnx), "--source", str(frames),
                        "--headless", "--save", str(out)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "--save" in r.stderr and "is a folder" in r.stderr
    assert _listing(tmp_path) == before


class _FailsAt:
    """The real toy runner, which fails (as a broken GPU would) at its n-th inference."""

    def __init__(self, path, n):
        self._runner, self._left = open_runner(path), n

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def infer(self, feed):
        self._left -= 1
        if self._left == 0:
            raise HfrError("toy.onnx: onnxruntime failed to run the graph (injected)", exit_code=1)
        return self._runner.infer(feed)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._runner.close()


def test_failed_run_removes_its_temporary_files(tmp_path, toy_onnx, frames):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(HfrError, match="injected"):
        run(str(toy_onnx), source=str(frames), headless=True, save=str(out / "v.mp4"), jsonl=str(out / "r.jsonl"),
            save_anomalies=str(out / "never"), threshold=99.0, summary=str(out / "s.json"),
            opener=lambda p, provider: _FailsAt(p, 5))
    left = sorted(os.listdir(out))
    assert not [n for n in left if ".tmp" in n or n.startswith(".hfr-edge-probe")], left
    assert "never" not in left  # the anomaly folder it made stayed empty: removed
    assert len((out / "r.jsonl").read_text().splitlines()) == 4  # the frames before the failure are kept
