"""`hfr-edge doctor`: exits 0 whatever is missing, lists ONNX Runtime's providers, writes JSON."""

import json
import os
import subprocess
import sys

import pytest

from hfr_edge import doctor
from hfr_edge.runtime import trtinfo

KEYS = {"hfr_edge", "python", "python_executable", "platform", "cpu", "jetson", "l4t", "torch", "onnxruntime", "openvino", "onnx",
        "tensorrt", "pycuda", "cuda_binding", "gpu", "opencv", "cameras"}


def _doctor(args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "hfr_edge", "doctor", *args], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=120)


def test_doctor_table_and_json(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    r = _doctor(["--json", "found.json"], tmp_path)
    assert r.returncode == 0, r.stderr
    for provider in ort.get_available_providers():
        assert provider in r.stdout
    labels = [line.split()[0] for line in r.stdout.splitlines() if line.strip()]
    assert {"python", "onnxruntime", "tensorrt", "gpu", "opencv", "cameras"} <= set(labels)
    info = json.loads((tmp_path / "found.json").read_text())
    assert set(info) == KEYS
    assert info["onnxruntime"]["providers"] == ort.get_available_providers()
    assert info["tensorrt"] == trtinfo.trt_version()
    table = [line for line in r.stdout.splitlines() if not line.startswith("wrote ")]
    col = len("l4t / jetpack") + 2  # the longest label, then two spaces: values start in one column
    assert all(line[col - 2:col] == "  " and line[col] != " " for line in table), table


def test_doctor_json_into_missing_folder_is_one_line(tmp_path):
    r = _doctor(["--json", str(tmp_path / "no" / "x.json")], tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_l4t_and_jetson_parsing(tmp_path, monkeypatch):
    rel = tmp_path / "nv_tegra_release"
    rel.write_text("# R35 (release), REVISION: 3.1, GCID: 32827747, BOARD: t186ref, EABI: aarch64, DATE: ...\n")
    assert doctor._l4t(str(rel)) == "L4T R35.3.1 (JetPack 5.x)"
    assert doctor._l4t(str(tmp_path / "absent")) is None
    model = tmp_path / "model"
    model.write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    monkeypatch.setattr(trtinfo, "JETSON_MODEL_FILE", str(model))
    assert trtinfo.jetson_model() == "NVIDIA Jetson AGX Orin Developer Kit"
    info = trtinfo._gpu_jetson()
    assert info["compute_capability"] == "8.7" and info["source"] == "device-tree"
    model.write_bytes(b"NVIDIA Jetson Xavier NX Developer Kit\x00")
    assert trtinfo._gpu_jetson()["compute_capability"] == "7.2"
    model.write_bytes(b"Raspberry Pi 4 Model B\x00")
    assert trtinfo.jetson_model() is None


def test_cpu_names_its_best_int8_instructions(tmp_path):
    """The CPU line: model, cores and the best int8 instructions among its flags (AMX over VNNI over
    AVX2), with what a part's int8 cpu graph ran on such CPUs; none where the flags say nothing."""
    info = tmp_path / "cpuinfo"

    def cpu(flags):
        info.write_text(f"processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu sse2 {flags}\n\n"
                        f"processor\t: 1\nflags\t\t: fpu\n")
        return doctor._cpu(str(info))

    assert cpu("avx2 avx512f avx512_vnni amx_tile amx_int8")["int8"] == "AMX"
    c = cpu("avx2 avx512f avx512_vnni")
    assert c["model"] == "Some Xeon" and c["int8"] == "AVX-512 VNNI, no AMX" and c["cores"] == os.cpu_count()
    assert doctor._cpu_text(c) == f"Some Xeon, {os.cpu_count()} cores; int8: AVX-512 VNNI, no AMX (a part's int8 cpu graph: 2-2.4x its fp32 graph at batch 1 on such CPUs)"
    assert cpu("avx2")["int8"] == "AVX2, no VNNI" and cpu("avx2 avx_vnni")["int8"] == "AVX-VNNI, no AMX"
    assert doctor._cpu_text(cpu("avx2 avx_vnni")).endswith("int8: AVX-VNNI, no AMX")
    assert cpu("")["int8"] is None and "int8" not in doctor._cpu_text(cpu(""))
    assert doctor._cpu(str(tmp_path / "absent"))["int8"] is None


def test_rows_survive_broken_probes():
    info = {k: None for k in KEYS}
    info.update(hfr_edge="0", python="3.8", python_executable="py", platform="x",
                torch={"error": "OSError: libcudart.so missing"}, onnxruntime={"version": None, "providers": []},
                opencv={"version": None, "gstreamer": None}, cameras=[])
    table = dict(doctor.rows(info))
    assert table["torch"] == "error: OSError: libcudart.so missing"
    assert table["onnxruntime"] == "not installed" and table["gpu"] == "none found" and table["cameras"] == "none"
    assert table["cpu"] == "unknown"
    assert table["openvino"] == "not installed"
    info["openvino"] = {"error": "RuntimeError: no plugins"}
    assert dict(doctor.rows(info))["openvino"] == "error: RuntimeError: no plugins"


@pytest.mark.parametrize("in_use,version,text", [
    (None, None, "none: pip install cuda-python (or pycuda)"),
    ("pycuda", None, "pycuda"),
    ("pycuda", "12.8.0", "pycuda, cuda-python 12.8.0 installed"),
    ("cuda.bindings", "13.0.1", "cuda.bindings 13.0.1"),
])
def test_doctor_says_which_cuda_binding(monkeypatch, in_use, version, text):
    monkeypatch.setattr(doctor, "_cuda_binding", lambda: {"in_use": in_use, "cuda_python": version})
    rows = dict(doctor.rows(doctor.collect()))
    assert rows["cuda binding"].startswith(text)
