"""The command line's vocabulary: help on every option, one word per concept across commands, and
the old spellings still accepted (hidden) so scripts written for them keep working."""

import json
import os
import subprocess
import sys

import pytest
import typer.main

from hfr_edge.cli import app

COMMANDS = ("train", "eval", "export", "calibrate", "build", "run", "bench", "doctor", "demo", "triton", "serve")


def _params(name):
    return typer.main.get_command(app).commands[name].params


def _options(name):
    """{option string: hidden} of a command."""
    return {o: p.hidden for p in _params(name) if p.param_type_name == "option" for o in p.opts + p.secondary_opts}


def test_every_command_and_visible_option_has_help():
    assert set(typer.main.get_command(app).commands) == set(COMMANDS)
    for name in COMMANDS:
        for p in _params(name):
            if p.param_type_name == "option" and not p.hidden:
                assert p.help, f"{name} {p.opts[0]} has no help text"


def test_one_word_per_concept():
    for name in ("eval", "export", "calibrate", "build", "run", "bench"):  # the model argument
        assert [p.name for p in _params(name) if p.param_type_name == "argument"][0] == "model", name
    for name in ("eval", "run", "bench", "doctor"):  # JSON output
        assert _options(name)["--json"] is False, name
    for name in ("calibrate", "build", "run"):  # a number of frames
        opts = _options(name)
        assert opts["--frames"] is False and opts["-n"] is False, name
    for name in ("calibrate", "build"):  # calibration images
        assert _options(name)["--images"] is False, name
    for name in ("export", "build"):  # precision, both ways
        opts = _options(name)
        assert not (opts["--precision"] or opts["--fp16"] or opts["--int8"]), name
    assert _options("bench")["--iters"] is False
    assert _options("calibrate")["--test"] is False


@pytest.mark.parametrize("name,old", [("eval", "--report"), ("run", "--summary"), ("run", "--max-frames"),
                                      ("bench", "--iterations"), ("bench", "-n"), ("build", "--calib")])
def test_old_spellings_are_hidden_aliases(name, old):
    assert _options(name)[old] is True


def _hfr(*args, cwd):
    return subprocess.run([sys.executable, "-m", "hfr_edge", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))


def test_run_with_the_old_option_names(tmp_path, toy_onnx):
    import numpy as np
    from PIL import Image

    for i in range(4):
        Image.fromarray(np.full((48, 48, 3), 60 * i, np.uint8)).save(tmp_path / f"f{i}.png")
    r = _hfr("run", toy_onnx, "--source", tmp_path, "--headless", "--max-frames", 2, "--summary", "s.json",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 2


def test_json_dash_puts_the_results_alone_on_stdout(tmp_path):
    r = _hfr("doctor", "--json", "-", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "python" in json.loads(r.stdout)  # the table went to stderr
    assert "onnxruntime" in r.stderr


def test_export_precision_flags_must_agree(tmp_path):
    r = _hfr("export", "nope.pt", "--fp16", "--precision", "fp32", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == "hfr-edge: error: --fp16 and --precision fp32 disagree: give one of them"


def test_calibrate_refit_with_a_wrong_checkpoint_is_one_line(tmp_path, tiny_ckpt, tiny_model_onnx, syn_data):
    """`calibrate --refit` with a missing checkpoint, or one without statistics (the tiny checkpoint is
    `--preset paper`): one line naming it and the fix, a non-zero exit, no traceback, no graph written."""
    for ckpt, says in ((tmp_path / "missing.pt", "checkpoint not found"), (tiny_ckpt, "no feature statistics to refit")):
        r = _hfr("calibrate", tiny_model_onnx, "--images", syn_data / "train" / "good", "-n", 4, "-o", "q.onnx",
                 "--refit", ckpt, cwd=tmp_path)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert says in r.stderr and ckpt.name in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / "q.onnx").exists()
