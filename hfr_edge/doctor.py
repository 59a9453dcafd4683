"""`hfr-edge doctor`: what this machine has for each stage (Python, the CPU and its int8 instructions,
Jetson/L4T, torch, ONNX Runtime, OpenVINO, onnx, TensorRT, the CUDA binding in use (pycuda or cuda-python), GPU, OpenCV with or without
GStreamer, cameras), as an aligned table and
optionally JSON. Each probe imports lazily and reports what it finds; doctor always exits 0.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import __version__
from .runtime.openvino import openvino_info
from .runtime.runner import auto_picks_openvino
from .runtime.trtinfo import gpu_info, jetson_model, trt_version

NOT_INSTALLED = "not installed"
# L4T major release -> JetPack generation (NVIDIA's JetPack archive).
JETPACK_OF_L4T = {"32": "4.x", "34": "5.0 (preview)", "35": "5.x", "36": "6.x", "38": "7.x"}


def _l4t(path: str = "/etc/nv_tegra_release") -> Optional[str]:
    try:
        with open(path) as f:
            first = f.readline()
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    if not m:
        return first.strip() or None
    return f"L4T R{m.group(1)}.{m.group(2)} (JetPack {JETPACK_OF_L4T.get(m.group(1), '?')})"


# x86 int8 dot-product instructions, best first, and what a part's int8 (cpu) graph ran on OpenVINO
# against the fp32 graph on ONNX Runtime at batch 1 on such a CPU (docs/benchmarks.md, Speed)
INT8_ISA = (("amx_int8", "AMX", "about 2x"), ("avx512_vnni", "AVX-512 VNNI, no AMX", "2-2.4x"),
            ("avx_vnni", "AVX-VNNI, no AMX", None), ("avx2", "AVX2, no VNNI", "1.2-1.35x"))


def cpuinfo(path: str = "/proc/cpuinfo") -> Tuple[Optional[str], set]:
    """(the CPU's model name, its instruction flags) from Linux's /proc/cpuinfo (the first CPU's);
    elsewhere (platform.processor() or None, no flags). The benchmarks' machine record reads it too."""
    model, flags = platform.processor() or None, set()
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return model, flags


def _cpu(path: str = "/proc/cpuinfo") -> Dict[str, Any]:
    """The CPU's model, core count and the best int8 instructions it has (cpuinfo's flags); int8
    (cpu) graphs gain on VNNI and most on AMX."""
    model, flags = cpuinfo(path)
    best = next((isa for isa in INT8_ISA if isa[0] in flags), None)
    return {"model": model, "cores": os.cpu_count(), "int8": best[1] if best else None,
            "int8_speedup": best[2] if best else None}


def _cpu_text(c: Any) -> str:
    if not isinstance(c, dict) or "error" in c:
        return _text(c, "unknown")
    text = f"{c['model'] or 'unknown'}, {c['cores']} cores"
    if c.get("int8"):
        text += f"; int8: {c['int8']}"
        if c.get("int8_speedup"):
            text += f" (a part's int8 cpu graph: {c['int8_speedup']} its fp32 graph at batch 1 on such CPUs)"
    return text


def _torch() -> Dict[str, Any]:
    try:
        import torch  # noqa: PLC0415
    except ImportError:
        return {"version": None, "cuda": None}
    cuda = torch.cuda.is_available()
    return {"version": torch.__version__, "cuda": cuda,
            "cuda_version": torch.version.cuda, "device": torch.cuda.get_device_name(0) if cuda else None}


def _onnxruntime() -> Dict[str, Any]:
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError:
        return {"version": None, "providers": []}
    return {"version": ort.__version__, "providers": list(ort.get_available_providers())}


def _openvino() -> Dict[str, Any]:
    info = openvino_info()
    if info is None:
        return {"version": None, "devices": []}
    return {"version": info[0], "devices": info[1], "auto": auto_picks_openvino()}


def _module_version(name: str, attr: str = "__version__") -> Optional[str]:
    try:
        mod = __import__(name)
    except ImportError:
        return None
    return str(getattr(mod, attr, "unknown"))


def _cuda_binding() -> Dict[str, Any]:
    """Which CUDA binding TensorRT engines would run with here, and the cuda-python version."""
    from importlib import metadata  # noqa: PLC0415

    from .runtime.cuda import binding_available  # noqa: PLC0415

    version = None
    for dist in ("cuda-bindings", "cuda-python"):  # cuda-python >= 12.8 ships the bindings as cuda-bindings
        try:
            version = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    return {"in_use": binding_available(), "cuda_python": version}


def _cuda_binding_text(c: Any) -> str:
    if not isinstance(c, dict) or "error" in c:
        return _text(c)
    if c["in_use"] is None:
        return "none: pip install cuda-python (or pycuda) to run TensorRT engines"
    if c["in_use"] == "cuda.bindings":
        return f"cuda.bindings {c['cuda_python'] or ''}".strip()
    return "pycuda" + (f", cuda-python {c['cuda_python']} installed" if c["cuda_python"] else "")


def _opencv() -> Dict[str, Any]:
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        return {"version": None, "gstreamer": None}
    m = re.search(r"GStreamer:\s*([^\n]+)", cv2.getBuildInformation())
    gst = m.group(1).strip() if m else "NO"
    return {"version": cv2.__version__, "gstreamer": gst.upper().startswith("YES"), "gstreamer_build": gst}


def _safe(probe: Callable[[], Any]) -> Any:
    try:
        return probe()
    except Exception as exc:  # noqa: BLE001 - doctor reports a broken install, it never fails on one
        return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


def collect() -> Dict[str, Any]:
    """Everything doctor reports, as JSON-ready values (None where a thing is absent)."""
    return {
        "hfr_edge": __version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu": _safe(_cpu),
        "jetson": _safe(jetson_model),
        "l4t": _safe(_l4t),
        "torch": _safe(_torch),
        "onnxruntime": _safe(_onnxruntime),
        "openvino": _safe(_openvino),
        "onnx": _safe(lambda: _module_version("onnx")),
        "tensorrt": _safe(trt_version),
        "pycuda": _safe(lambda: _module_version("pycuda", "VERSION_TEXT")),
        "cuda_binding": _safe(_cuda_binding),
        "gpu": _safe(gpu_info),
        "opencv": _safe(_opencv),
        "cameras": _safe(lambda: sorted(glob.glob("/dev/video*"))),
    }


def _text(value: Any, absent: str = NOT_INSTALLED) -> str:
    if isinstance(value, dict) and "error" in value:
        return f"error: {value['error']}"
    return absent if value is None else str(value)


def _torch_text(t: Dict[str, Any]) -> str:
    if "error" in t or t["version"] is None:
        return _text(t.get("error") and t)
    cuda = f"CUDA {t['cuda_version']}, {t['device']}" if t["cuda"] else "no CUDA device"
    return f"{t['version']} ({cuda})"


def _ort_text(o: Dict[str, Any]) -> str:
    if "error" in o or o["version"] is None:
        return _text(o.get("error") and o)
    return f"{o['version']}: {', '.join(o['providers'])}"


def _ov_text(o: Any) -> str:
    if not isinstance(o, dict) or "error" in o or o.get("version") is None:
        return _text(o.get("error") and o if isinstance(o, dict) else None)
    auto = " (`--provider auto` runs int8 graphs on it here)" if o.get("auto") else ""
    return f"{o['version']}: {', '.join(o['devices']) or 'no device'}{auto}"


def _gpu_text(g: Any) -> str:
    if not (isinstance(g, dict) and "name" in g):
        return _text(g, "none found")
    mem = f", {g['memory_mib']} MiB" if g.get("memory_mib") else ""
    return f"{g['name']} (compute capability {g.get('compute_capability') or '?'}{mem}; via {g['source']})"


def _cv_text(c: Dict[str, Any]) -> str:
    if "error" in c or c["version"] is None:
        return _text(c.get("error") and c)
    return f"{c['version']} " + ("with GStreamer" if c["gstreamer"] else "without GStreamer (no CSI cameras or pipelines)")


def rows(info: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(label, text) lines of the table."""
    cams = info["cameras"]
    return [
        ("hfr-edge", info["hfr_edge"]),
        ("python", f"{info['python']} ({info['python_executable']})"),
        ("platform", info["platform"]),
        ("cpu", _cpu_text(info["cpu"])),
        ("jetson", _text(info["jetson"], "no")),
        ("l4t / jetpack", _text(info["l4t"], "-")),
        ("torch", _torch_text(info["torch"])),
        ("onnxruntime", _ort_text(info["onnxruntime"])),
        ("openvino", _ov_text(info["openvino"])),
        ("onnx", _text(info["onnx"])),
        ("tensorrt", _text(info["tensorrt"])),
        ("pycuda", _text(info["pycuda"])),
        ("cuda binding", _cuda_binding_text(info["cuda_binding"])),
        ("gpu", _gpu_text(info["gpu"])),
        ("opencv", _cv_text(info["opencv"])),
        ("cameras", ", ".join(cams) if isinstance(cams, list) and cams else _text(cams or None, "none")),
    ]


def table(info: Dict[str, Any]) -> str:
    """The rows aligned: labels left, values from one column."""
    lines = rows(info)
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {text}" for label, text in lines)
