"""`hfr-edge doctor`: what this machine has for each stage (Python, Jetson/L4T, torch, ONNX Runtime,
onnx, TensorRT, pycuda, GPU, OpenCV with or without GStreamer, cameras), as an aligned table and
optionally JSON. Each probe imports lazily and reports what it finds; doctor always exits 0.
"""

from __future__ import annotations

import glob
import platform
import re
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import __version__
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


def _module_version(name: str, attr: str = "__version__") -> Optional[str]:
    try:
        mod = __import__(name)
    except ImportError:
        return None
    return str(getattr(mod, attr, "unknown"))


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
        "jetson": _safe(jetson_model),
        "l4t": _safe(_l4t),
        "torch": _safe(_torch),
        "onnxruntime": _safe(_onnxruntime),
        "onnx": _safe(lambda: _module_version("onnx")),
        "tensorrt": _safe(trt_version),
        "pycuda": _safe(lambda: _module_version("pycuda", "VERSION_TEXT")),
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
        ("jetson", _text(info["jetson"], "no")),
        ("l4t / jetpack", _text(info["l4t"], "-")),
        ("torch", _torch_text(info["torch"])),
        ("onnxruntime", _ort_text(info["onnxruntime"])),
        ("onnx", _text(info["onnx"])),
        ("tensorrt", _text(info["tensorrt"])),
        ("pycuda", _text(info["pycuda"])),
        ("gpu", _gpu_text(info["gpu"])),
        ("opencv", _cv_text(info["opencv"])),
        ("cameras", ", ".join(cams) if isinstance(cams, list) and cams else _text(cams or None, "none")),
    ]


def table(info: Dict[str, Any]) -> str:
    """The rows aligned: labels left, values from one column."""
    lines = rows(info)
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label:<{width}}  {text}" for label, text in lines)
