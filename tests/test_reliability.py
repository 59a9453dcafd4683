"""Bad inputs, run as a user would (`python -m hfr_edge ...`): every case is generated here (no
committed binaries) and must end with its exit code, ONE `hfr-edge: error:` line naming the file
or value, no traceback, and no partial artifact. Accepted oddities (16-bit, grey, RGBA, CMYK,
symlink loops, non-UTF-8 names, a graph without its JSON) must work and honour the input contract.
The test ids read as a table: <input>-<command>."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from hfr_edge.base.artifact import ArtifactMeta, load_meta, sidecar, write_meta
from hfr_edge.base.errors import HfrError
from hfr_edge.base import images as processing
from hfr_edge.runtime import trtinfo

Image = pytest.importorskip("PIL.Image")
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers


def cli(*args, cwd, env=None, timeout=300):
    """Run `python -m hfr_edge ARGS` (str, Path or bytes for non-UTF-8 names) -> (rc, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "hfr_edge", *(os.fsencode(a) for a in args)], cwd=cwd,
                       capture_output=True, timeout=timeout,
                       env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def error_line(rc, err, code, *names):
    """The run failed with `code` and one error line (the last) naming each of `names`; no traceback."""
    assert "Traceback" not in err and not re.search(r"\w+Warning: ", err), err  # no traceback, no Python warning
    assert rc == code, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("hfr-edge: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


def listing(folder) -> set:
    return {os.fsencode(p.relative_to(folder)) for p in Path(folder).rglob("*")}


def toy_score(rgb: np.ndarray) -> float:
    """What tests/toy.py's graph outputs for an (H, W, 3) uint8 frame after the product's pre-processing."""
    x = processing.preprocess([rgb], 64)[0]
    return float((np.abs(x - 0.5) * 2).mean(axis=0).max())


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h RGB pixels, with a tiny (bogus) payload."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


REF = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)  # (H, W, 3): resized to 64 by run


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(REF).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


# name in the table -> (file name, bytes maker, the reason the message must give)
BAD_IMAGES = {
    "zero-byte-png": ("zero.png", lambda: b"", "not a readable image"),
    "zero-byte-jpg": ("zero.jpg", lambda: b"", "not a readable image"),
    "truncated-png": ("cut.png", lambda: half(encoded("PNG")), "corrupt or truncated"),
    "truncated-jpg": ("cut.jpg", lambda: half(encoded("JPEG")), "corrupt or truncated"),
    "bomb-40000x40000-png": ("bomb.png", lambda: png_header_only(40000, 40000), "decompression-bomb guard"),
    "bomb-10000x9000-png": ("big.png", lambda: png_header_only(10000, 9000), "decompression-bomb guard"),
    "text-as-png": ("notes.png", lambda: b"hello, I am not a picture\n", "not a readable image"),
    "text-as-jpg": ("notes.jpg", lambda: b"GIF89a? no, plain text\n", "not a readable image"),
}


def write_bad(folder: Path, case: str) -> Path:
    name, make, _ = BAD_IMAGES[case]
    p = folder / name
    p.write_bytes(make())
    return p


# ---------------------------------------------------------------- bad image files


@pytest.mark.parametrize("case", list(BAD_IMAGES), ids=[f"{c}-run" for c in BAD_IMAGES])
def test_bad_image_run(tmp_path, toy_onnx, case):
    p = write_bad(tmp_path, case)
    before = listing(tmp_path)
    rc, _, err = cli("run", toy_onnx.name, "--source", p.name, "--headless", "--summary", "s.json", cwd=tmp_path)
    error_line(rc, err, 1, p.name, "no frame could be read")
    assert BAD_IMAGES[case][2] in err  # the skipped-file warning gives the reason
    assert listing(tmp_path) - before == {b"s.json"}  # only the (complete) summary
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["frames"], s["skipped"]) == (0, 1)


@pytest.mark.parametrize("case", list(BAD_IMAGES), ids=[f"{c}-calibrate" for c in BAD_IMAGES])
def test_bad_image_calibrate(tmp_path, tiny_model_onnx, case):
    p = write_bad(tmp_path, case)
    before = listing(tmp_path)
    rc, _, err = cli("calibrate", tiny_model_onnx, "--images", p.name, "-o", "out.int8.onnx", cwd=tmp_path)
    error_line(rc, err, 2, p.name, BAD_IMAGES[case][2])
    assert len(err.strip().splitlines()) == 1  # the error alone: one image, its own reason
    assert listing(tmp_path) == before


def test_bomb_is_refused_before_decoding(tmp_path):
    """The header alone decides: the 40000 x 40000 image is never decoded (it would need 4.8 GB)."""
    p = tmp_path / "bomb.png"
    p.write_bytes(png_header_only(40000, 40000))
    with pytest.raises(HfrError, match=rf"bomb.png: .*exceeds the limit of {processing.MAX_PIXELS} pixels"):
        processing.read_image(p)


def test_unreadable_training_images(tmp_path):
    good = tmp_path / "ds" / "train" / "good"
    good.mkdir(parents=True)
    for case in ("zero-byte-png", "truncated-jpg", "text-as-png", "bomb-40000x40000-png"):
        write_bad(good, case)
    rc, _, err = cli("train", "ds", "-o", "ckpt.pt", "--epochs", "1", cwd=tmp_path)
    error_line(rc, err, 2, "images are unreadable", "ds/train/good/")
    assert not (tmp_path / "ckpt.pt").exists()


# ---------------------------------------------------------------- accepted odd formats

def _gray16(p):
    import cv2

    cv2.imwrite(str(p), REF[:, :, 0].astype(np.uint16) * 257)  # 16-bit grey: exact after >> 8


def _rgb16(p):
    import cv2

    cv2.imwrite(str(p), REF[:, :, ::-1].astype(np.uint16) * 257)


ODD_IMAGES = {  # name -> (file name, writer, the RGB the model must see)
    "gray-8bit-png": ("g8.png", lambda p: Image.fromarray(REF[:, :, 0]).save(p), "gray"),
    "gray-16bit-png": ("g16.png", _gray16, "gray"),
    "rgb-16bit-png": ("c16.png", _rgb16, "rgb"),
    "rgba-png": ("rgba.png", lambda p: Image.fromarray(np.dstack([REF, REF[:, :, 1]])).save(p), "rgb"),
    "cmyk-tif": ("cmyk.tif", lambda p: Image.fromarray(REF).convert("CMYK").save(p), "rgb"),
    "palette-png": ("pal.png", lambda p: Image.fromarray(REF[:, :, 0]).convert("P").save(p), "gray"),
    "gray-alpha-png": ("la.png", lambda p: Image.fromarray(np.dstack([REF[:, :, 0], REF[:, :, 2]])).save(p), "gray"),
}


@pytest.mark.parametrize("case", list(ODD_IMAGES), ids=[f"{c}-run" for c in ODD_IMAGES])
def test_odd_formats_are_converted(tmp_path, toy_onnx, case):
    pytest.importorskip("cv2")
    name, write, kind = ODD_IMAGES[case]
    write(tmp_path / name)
    want = REF if kind == "rgb" else np.repeat(REF[:, :, :1], 3, axis=2)
    rgb = processing.read_image(tmp_path / name)
    assert rgb.dtype == np.uint8 and rgb.shape == (48, 80, 3)
    np.testing.assert_array_equal(rgb, want)
    x = processing.preprocess([rgb], 64)
    assert x.dtype == np.float32 and x.shape == (1, 3, 64, 64) and 0.0 <= x.min() and x.max() <= 1.0
    rc, _, err = cli("run", toy_onnx.name, "--source", name, "--headless", "--jsonl", "out.jsonl", cwd=tmp_path)
    assert rc == 0, err
    (rec,) = [json.loads(ln) for ln in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rec["score"] == pytest.approx(toy_score(want), abs=1e-6)


# ---------------------------------------------------------------- folders: symlink loops, non-UTF-8 names


def _loops(folder: Path) -> None:
    (folder / "up").symlink_to("..")  # a loop through the parent
    (folder / "self").symlink_to("self")  # a link to itself (ELOOP)


def test_symlink_loop_run_visits_each_image_once(tmp_path, toy_onnx):
    d = tmp_path / "frames" / "line1"
    d.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(REF).save(d / f"{i}.png")
    _loops(d)
    rc, _, err = cli("run", toy_onnx.name, "--source", "frames", "--headless", "--summary", "s.json", cwd=tmp_path)
    assert rc == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["frames"] == 3  # not once per lap of the loop


def test_symlink_loop_eval_dataset(tmp_path, toy_onnx, syn_data):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(syn_data, ds)
    n_test = len(list((ds / "test").rglob("*.png")))
    _loops(ds / "test" / "good")
    _loops(ds / "train" / "good")
    rc, _, err = cli("eval", toy_onnx.name, "ds", "--report", "r.json", cwd=tmp_path)
    assert rc == 0, err
    assert json.loads((tmp_path / "r.json").read_text())["n_images"] == n_test


NONUTF = b"caf\xe9_\xff"  # Latin-1 bytes: not valid UTF-8


def test_non_utf8_names_run(tmp_path, toy_onnx):
    d = tmp_path / "frames"
    d.mkdir()
    Image.fromarray(REF).save(os.fsdecode(os.fsencode(d) + b"/" + NONUTF + b".png"))
    (Path(os.fsdecode(os.fsencode(d) + b"/bad_" + NONUTF + b".png"))).write_bytes(b"junk")
    rc, _, err = cli("run", toy_onnx.name, "--source", "frames", "--headless", "--jsonl", b"out_" + NONUTF + b".jsonl",
                     "--summary", "s.json", cwd=tmp_path, env={"PYTHONIOENCODING": "utf-8:strict"})
    assert rc == 0 and "Traceback" not in err, err
    assert "bad_caf" in err and "not a readable image" in err  # the skipped one is named, bytes escaped
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["frames"], s["skipped"]) == (1, 1)
    (rec,) = [json.loads(ln) for ln in Path(os.fsdecode(os.fsencode(tmp_path) + b"/out_" + NONUTF + b".jsonl"))
              .read_text().splitlines()]
    assert os.fsencode(rec["source"]).endswith(NONUTF + b".png")


def test_non_utf8_names_eval_and_bench(tmp_path, toy_onnx, syn_data):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(syn_data, ds)
    t = os.fsencode(ds / "test")
    defect = sorted(p.name for p in (ds / "test").iterdir() if p.name != "good")[0]
    os.rename(t + b"/" + defect.encode(), t + b"/" + NONUTF)
    os.rename(os.fsencode(ds / "ground_truth" / defect), os.fsencode(ds / "ground_truth") + b"/" + NONUTF)
    model = os.fsencode(tmp_path) + b"/m_" + NONUTF + b".onnx"
    shutil.copyfile(toy_onnx, model)
    shutil.copyfile(sidecar(toy_onnx), model + b".json")
    strict = {"PYTHONIOENCODING": "utf-8:strict"}  # as under a UTF-8 locale: stdout refuses undecodable names
    rc, out, err = cli("eval", model, "ds", "--report", b"r_" + NONUTF + b".json", cwd=tmp_path, env=strict)
    assert rc == 0 and "Traceback" not in err, err
    rep = json.loads(Path(os.fsdecode(os.fsencode(tmp_path) + b"/r_" + NONUTF + b".json")).read_text())
    assert NONUTF in {os.fsencode(k) for k in rep["per_defect"]}  # the defect folder, named as on disk
    rc, out, err = cli("bench", model, "-n", "3", "--warmup", "0", "--json", b"b_" + NONUTF + b".json",
                       cwd=tmp_path, env=strict)
    assert rc == 0 and "Traceback" not in err, err
    assert "wrote b_caf" in out


def test_non_utf8_graph_calibrates_with_a_ragged_batch(tmp_path, tiny_model_onnx, syn_data):
    """ONNX Runtime cannot open a non-UTF-8 path, and 6 frames = 5 calibration (4 + 1) + 1 held out."""
    import shutil

    model = os.fsencode(tmp_path) + b"/m_" + NONUTF + b".onnx"
    shutil.copyfile(tiny_model_onnx, model)  # no JSON: the graph's own metadata is used
    rc, _, err = cli("calibrate", model, "--images", syn_data / "train" / "good", "-n", "6", cwd=tmp_path)
    assert rc == 0 and "Traceback" not in err, err
    assert load_meta(os.fsdecode(model[:-5] + b".int8.onnx")).precision == "int8"


# ---------------------------------------------------------------- checkpoints that would run code


def _evil(kind: str, path: Path, marker: Path) -> None:
    torch = pytest.importorskip("torch")
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    if kind == "torch-zip":
        torch.save({"format": "hfr-edge-checkpoint", "version": 1, "config": Evil()}, path)
    else:  # a bare pickle, protocol 4
        path.write_bytes(pickle.dumps({"format": Evil()}, protocol=4))


@pytest.mark.parametrize("kind,command", [("torch-zip", "export"), ("torch-zip", "eval"), ("bare-pickle", "bench")],
                         ids=["pickled-code-torch-zip-export", "pickled-code-torch-zip-eval", "pickled-code-bare-pickle-bench"])
def test_checkpoint_with_code_is_refused(tmp_path, syn_data, kind, command):
    marker = tmp_path / "PWNED"
    _evil(kind, tmp_path / "evil.pt", marker)
    before = listing(tmp_path)
    args = {"export": ("export", "evil.pt", "-o", "m.onnx"), "eval": ("eval", "evil.pt", syn_data),
            "bench": ("bench", "evil.pt", "-n", "1", "--warmup", "0")}[command]
    rc, _, err = cli(*args, cwd=tmp_path)
    error_line(rc, err, 2, "evil.pt", "refused", "would run code")
    assert not marker.exists()
    assert listing(tmp_path) == before


# ---------------------------------------------------------------- ONNX files: truncated, foreign, JSON missing or corrupt


def _foreign(path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "other",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 64, 64])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="another-tool")
    m.ir_version = 8
    onnx.save(m, str(path))


def make_graph_case(case: str, folder: Path, tiny: Path) -> Path:
    import shutil

    p = folder / "m.onnx"
    data = Path(tiny).read_bytes()
    if case.startswith("truncated"):
        p.write_bytes(data[: len(data) // 3])
        if case == "truncated-with-json":
            shutil.copyfile(sidecar(tiny), sidecar(p))
    elif case.startswith("foreign"):
        _foreign(p)
        if case == "foreign-with-json":
            shutil.copyfile(sidecar(tiny), sidecar(p))
    else:
        p.write_bytes(data)
        if case == "corrupt-json":
            sidecar(p).write_text('{"schema": "hfr-edge-artifact", "kind": ')
        elif case == "json-of-another-schema":
            sidecar(p).write_text('{"schema": "someone-else", "version": 3}')
        elif case == "json-not-an-object":
            sidecar(p).write_text("[1, 2, 3]\n")
    return p


def _graph_command(command: str, syn_data, img: str):
    return {"eval": ("eval", "m.onnx", syn_data, "--report", "r.json"),
            "calibrate": ("calibrate", "m.onnx", "--images", img, "-n", "4", "-o", "q.int8.onnx"),
            "run": ("run", "m.onnx", "--source", img, "--headless", "--jsonl", "o.jsonl"),
            "bench": ("bench", "m.onnx", "-n", "2", "--warmup", "0", "--json", "b.json")}[command]


# (input, command) -> (exit code, words the error line must hold)
GRAPH_CASES = {
    **{("truncated-no-json", c): (2, ("m.onnx", "not a valid ONNX file")) for c in ("eval", "calibrate", "run", "bench")},
    **{("truncated-with-json", c): (2, ("m.onnx", "not a valid ONNX file")) for c in ("eval", "calibrate", "run", "bench")},
    **{("foreign-no-json", c): (2, ("m.onnx", "not an hfr-edge graph")) for c in ("eval", "calibrate", "run", "bench")},
    ("foreign-with-json", "run"): (2, ("m.onnx", "not the hfr-edge contract")),
    ("foreign-with-json", "calibrate"): (2, ("m.onnx", "not an hfr-edge graph")),
    **{("corrupt-json", c): (2, ("m.onnx.json", "not valid JSON")) for c in ("eval", "calibrate", "run", "bench")},
    ("json-of-another-schema", "run"): (2, ("m.onnx.json", "not hfr-edge artifact metadata")),
    ("json-not-an-object", "bench"): (2, ("m.onnx.json", "must hold a JSON object")),
    **{("missing-json", c): (0, ()) for c in ("eval", "calibrate", "run", "bench")},  # falls back to the graph's own
}


@pytest.mark.parametrize("case,command", list(GRAPH_CASES), ids=[f"{a}-{b}" for a, b in GRAPH_CASES])
def test_graph_inputs(tmp_path, tiny_model_onnx, syn_data, case, command):
    make_graph_case(case, tmp_path, tiny_model_onnx)
    Image.fromarray(REF).save(tmp_path / "f.png")
    img = "f.png" if command == "run" else str(syn_data / "train" / "good")
    before = listing(tmp_path)
    rc, _, err = cli(*_graph_command(command, syn_data, img), cwd=tmp_path)
    code, words = GRAPH_CASES[(case, command)]
    if code == 0:
        assert rc == 0 and "Traceback" not in err, err
        new = listing(tmp_path) - before
        assert new >= {{"eval": b"r.json", "calibrate": b"q.int8.onnx", "run": b"o.jsonl", "bench": b"b.json"}[command]}
        assert not any(b".tmp-" in n for n in new)
        return
    error_line(rc, err, code, *words)
    assert listing(tmp_path) == before  # nothing written, not even a partial report


# ---------------------------------------------------------------- engines


def _engine(folder: Path, fingerprint) -> Path:
    p = folder / "model.engine"
    p.write_bytes(b"not really a TensorRT plan")
    extra = {} if fingerprint is None else {"fingerprint": fingerprint}
    write_meta(p, ArtifactMeta("engine", "int8", 64, {"backbone": "toy"}, {"threshold": 1.0, "low": 0.0}, extra))
    return p


RTX = {"tensorrt": "10.3.0", "gpu": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "precision": "int8"}
ORIN_DEVICE = {"name": "Orin", "compute_capability": "8.7", "memory_mib": 30000, "source": "pycuda"}

ORIN = {**RTX, "gpu": "Orin", "compute_capability": "8.7"}
FINGERPRINTS = {  # engine built ... checked on an Orin with TensorRT 10.3.0 -> error words, or None (accepted)
    "built-for-other-gpu": (RTX, ("built for NVIDIA GeForce RTX 4090 cc 8.9", "rebuild on this device", "--int8")),
    "built-with-other-tensorrt": ({**ORIN, "tensorrt": "8.5.2.2"}, ("TensorRT 8.5.2.2", "rebuild on this device")),
    "built-for-other-compute-capability": ({**ORIN, "compute_capability": "7.2"}, ("cc 7.2", "rebuild on this device")),
    "no-fingerprint": (None, ("no build fingerprint", "rebuild it on this device")),
    "built-here-gpu-named-differently": ({**ORIN, "gpu": "NVIDIA Jetson AGX Orin Developer Kit",
                                          "tensorrt": "10.3.0.30"}, None),
}


@pytest.fixture
def fake_orin(monkeypatch):
    """This device, as trtinfo sees it: an Orin with TensorRT 10.3.0 (whether or not tensorrt is here)."""
    monkeypatch.setattr(trtinfo, "trt_version", lambda: "10.3.0")
    monkeypatch.setattr(trtinfo, "gpu_info", lambda: dict(ORIN_DEVICE))


@pytest.mark.parametrize("case", list(FINGERPRINTS), ids=[f"engine-json-{c}" for c in FINGERPRINTS])
def test_engine_fingerprint(tmp_path, fake_orin, case):
    fp, words = FINGERPRINTS[case]
    engine = _engine(tmp_path, fp)
    meta = load_meta(engine)
    if words is None:
        trtinfo.check_engine_fingerprint(meta, engine)  # accepted: the same GPU under two names
        return
    with pytest.raises(HfrError) as exc:
        trtinfo.check_engine_fingerprint(meta, engine)
    assert "model.engine" in str(exc.value) and "\n" not in str(exc.value)
    for w in words:
        assert w in str(exc.value)


def test_engine_of_another_gpu_is_refused_before_loading(tmp_path, fake_orin, monkeypatch):
    """The runner checks the fingerprint before it reads or deserializes the plan."""
    from hfr_edge.runtime import tensorrt as trt_backend
    from hfr_edge.runtime.runner import open_runner

    class FakeTrt:
        __version__ = "10.3.0"

        def Runtime(self, *a):  # noqa: N802 - TensorRT's name
            raise AssertionError("the engine must not be deserialized")

    monkeypatch.setattr(trt_backend, "tensorrt_module", lambda: FakeTrt())
    engine = _engine(tmp_path, RTX)
    with pytest.raises(HfrError, match="rebuild on this device: hfr-edge build model.onnx --int8"):
        open_runner(engine)


@pytest.mark.parametrize("case", ["engine-without-tensorrt", "engine-without-json"])
def test_engine_cli(tmp_path, case):
    if case == "engine-without-tensorrt" and trtinfo.trt_version() is not None:
        pytest.skip("tensorrt is importable here: this case is about a machine without it")
    engine = _engine(tmp_path, RTX)
    if case == "engine-without-json":
        sidecar(engine).unlink()
    Image.fromarray(REF).save(tmp_path / "f.png")
    before = listing(tmp_path)
    rc, _, err = cli("run", "model.engine", "--source", "f.png", "--headless", cwd=tmp_path)
    if case == "engine-without-json":
        error_line(rc, err, 2, "model.engine", "metadata", "missing", "hfr-edge build")
    else:
        error_line(rc, err, 2, "model.engine", "TensorRT is not importable")
    assert listing(tmp_path) == before
