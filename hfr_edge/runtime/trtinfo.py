"""What TensorRT and GPU this device has, and whether an engine was built for them.

Engines and timing caches are specific to the GPU and the TensorRT version, so `hfr-edge build`
stores a fingerprint in model.engine.json and the runtime checks it before loading. The ONE place
tensorrt is imported (import_tensorrt) and its version parsed (major_minor). torch-free; tensorrt
and the CUDA bindings are imported lazily; runs on Python 3.8 (JetPack 5).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any, Dict, Optional, Sequence, Tuple

from ..base.errors import HfrError, first_line

JETSON_MODEL_FILE = "/proc/device-tree/model"
# Jetson modules by the words of their device-tree model, most specific first -> CUDA compute capability.
JETSON_CC = (("orin", "8.7"), ("xavier", "7.2"), ("tx2", "6.2"), ("tx1", "5.3"), ("nano", "5.3"))


TRT_HINT = ("on a Jetson TensorRT's Python bindings come with JetPack (python3-libnvinfer): make the venv with "
            "--system-site-packages; on a desktop pip install tensorrt; or run model.onnx with ONNX Runtime instead")


def import_tensorrt():
    """The tensorrt module, or HfrError saying how to get it."""
    try:
        import tensorrt  # noqa: PLC0415
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken install failing to load its libraries
        raise HfrError(f"TensorRT is not importable ({first_line(exc, 160)}); {TRT_HINT}") from None
    return tensorrt


def trt_version() -> Optional[str]:
    """tensorrt.__version__, or None where tensorrt cannot be imported."""
    try:
        return str(getattr(import_tensorrt(), "__version__", "unknown"))
    except HfrError:
        return None


def major_minor(version: Optional[str]) -> Optional[Tuple[int, int]]:
    """'8.5.2.2' -> (8, 5), '10.3.0' -> (10, 3); None for anything else."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version or ""))
    return (int(m.group(1)), int(m.group(2))) if m else None


def trt_lib_version() -> Optional[str]:
    """TensorRT's version from its Python bindings, else from libnvinfer itself (what ONNX Runtime's
    TensorRT provider loads, with or without the bindings): getInferLibVersion(), e.g. "lib100300"."""
    version = trt_version()
    if version is not None:
        return version
    import ctypes  # noqa: PLC0415

    for name in ("libnvinfer.so.11", "libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so", "nvinfer.dll"):
        try:
            fn = ctypes.CDLL(name).getInferLibVersion
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int32
        return f"lib{fn()}"
    return None


def gpu_info() -> Optional[Dict[str, Any]]:
    """{"name", "compute_capability" ("8.7"), "memory_mib", "source"} of GPU 0, or None without one.

    Tries pycuda, cuda-python, then a Jetson's device tree (where nvidia-smi may be missing), then nvidia-smi.
    """
    for probe in (_gpu_pycuda, _gpu_cuda_python, _gpu_jetson, _gpu_nvidia_smi):
        info = probe()
        if info:
            return info
    return None


def _gpu_pycuda() -> Optional[Dict[str, Any]]:
    try:
        import pycuda.driver as cuda  # noqa: PLC0415

        cuda.init()
        if cuda.Device.count() < 1:
            return None
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return {"name": dev.name(), "compute_capability": f"{major}.{minor}",
                "memory_mib": int(dev.total_memory() // 2**20), "source": "pycuda"}
    except Exception:  # noqa: BLE001 - no pycuda, no driver, no device: try the next probe
        return None


def _gpu_cuda_python() -> Optional[Dict[str, Any]]:
    try:
        from .cudabind import import_cudart  # noqa: PLC0415

        rt = import_cudart()
        err, count = rt.cudaGetDeviceCount()
        if int(getattr(err, "value", err)) != 0 or count < 1:
            return None
        err, props = rt.cudaGetDeviceProperties(0)
        if int(getattr(err, "value", err)) != 0:
            return None
        name = props.name.split(b"\0")[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return {"name": name, "compute_capability": f"{props.major}.{props.minor}",
                "memory_mib": int(props.totalGlobalMem // 2**20), "source": "cuda-python"}
    except Exception:  # noqa: BLE001 - no cuda-python, no driver, no device: try the next probe
        return None


def jetson_model() -> Optional[str]:
    """'NVIDIA Jetson AGX Orin Developer Kit' on a Jetson, else None."""
    try:
        with open(JETSON_MODEL_FILE, "rb") as f:
            model = f.read().decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        return None
    return model if "jetson" in model.lower() else None


def _gpu_jetson() -> Optional[Dict[str, Any]]:
    model = jetson_model()
    if model is None:
        return None
    low = model.lower()
    cc = next((cc for word, cc in JETSON_CC if word in low), None)
    return {"name": model, "compute_capability": cc, "memory_mib": _meminfo_mib(), "source": "device-tree"}


def _meminfo_mib() -> Optional[int]:
    """Jetson GPUs share the system memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _gpu_nvidia_smi() -> Optional[Dict[str, Any]]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    for fields in ("name,compute_cap,memory.total", "name,memory.total"):  # old drivers lack compute_cap
        try:
            out = subprocess.run([smi, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=15)
        except (OSError, subprocess.SubprocessError):
            return None
        lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
        if out.returncode == 0 and lines:
            parts = [p.strip() for p in lines[0].split(",")]
            cc = parts[1] if len(parts) == 3 else None
            return {"name": parts[0], "compute_capability": cc if cc and re.match(r"^\d+\.\d+$", cc) else None,
                    "memory_mib": _int_or_none(parts[-1]), "source": "nvidia-smi"}
    return None


def _int_or_none(text: str) -> Optional[int]:
    try:
        return int(float(text))
    except ValueError:
        return None


def engine_fingerprint(precision: str, batch_profile: Sequence[int], image_size: int, onnx_sha256: str,
                       norm: Dict[str, Any]) -> Dict[str, Any]:
    """What an engine is bound to (this device's TensorRT and GPU) and what it was built from."""
    gpu = gpu_info() or {}
    return {"tensorrt": trt_version(), "gpu": gpu.get("name"), "compute_capability": gpu.get("compute_capability"),
            "precision": precision, "batch_profile": [int(b) for b in batch_profile], "image_size": int(image_size),
            "onnx_sha256": onnx_sha256, "norm": dict(norm)}


def _version_tuple(version: Optional[str]) -> Optional[Tuple[int, ...]]:
    """'8.5.2.2' -> (8, 5, 2, 2): every number, since an engine is specific to the exact TensorRT build."""
    nums = re.findall(r"\d+", version or "")
    return tuple(int(n) for n in nums) if nums else None


def _same_version(a: Optional[str], b: Optional[str]) -> bool:
    """Every number both name must agree: '8.5.2.2' vs '8.5.2.1' differ, '10.3.0' vs '10.3.0.30' (a version
    string without its build number) agree."""
    ta, tb = _version_tuple(a), _version_tuple(b)
    if ta is None or tb is None:
        return ta == tb
    n = min(len(ta), len(tb))
    return ta[:n] == tb[:n]


def _same_gpu(a: str, b: str) -> bool:
    """pycuda says 'Orin', the device tree 'NVIDIA Jetson AGX Orin Developer Kit': same GPU."""
    a, b = (re.sub(r"\bnvidia\b|[^a-z0-9]+", " ", x.lower()).split() for x in (a, b))
    return set(a) <= set(b) or set(b) <= set(a)


def check_engine_fingerprint(meta, engine_path) -> None:
    """Refuse (HfrError) an engine built with another TensorRT version (major.minor.patch.build: engines
    are not portable across TensorRT versions), GPU or compute capability.

    `meta` is the engine's ArtifactMeta; its fingerprint lives in meta.extra["fingerprint"]. What
    this device cannot tell (no GPU probe answered) is not held against the engine.
    """
    fp = (getattr(meta, "extra", None) or {}).get("fingerprint")
    if not isinstance(fp, dict):
        raise HfrError(f"{engine_path}: its metadata has no build fingerprint; rebuild it on this device: "
                       f"hfr-edge build model.onnx")
    here_trt = trt_version()
    if here_trt is None:
        raise HfrError(f"{engine_path}: TensorRT is not importable here; install it (JetPack: system TensorRT in a "
                       f"venv made with --system-site-packages) or run the .onnx graph instead")
    gpu = gpu_info() or {}
    built_trt, built_gpu, built_cc = fp.get("tensorrt"), fp.get("gpu"), fp.get("compute_capability")
    here_gpu, here_cc = gpu.get("name"), gpu.get("compute_capability")
    mismatch = not _same_version(built_trt, here_trt)
    if built_gpu and here_gpu and not _same_gpu(built_gpu, here_gpu):
        mismatch = True
    if built_cc and here_cc and built_cc != here_cc:
        mismatch = True
    if mismatch:
        precision = fp.get("precision") or getattr(meta, "precision", "")
        option = f" --{precision}" if precision in ("fp16", "int8") else ""
        raise HfrError(f"{engine_path}: built for {built_gpu or 'an unknown GPU'} cc {built_cc or '?'} with TensorRT "
                       f"{built_trt}, this device is {here_gpu or 'an unknown GPU'} cc {here_cc or '?'} with TensorRT "
                       f"{here_trt}; rebuild on this device: hfr-edge build model.onnx{option}")


def describe_missing() -> Optional[str]:
    """None if TensorRT and a GPU are both here, else one line saying what is missing and how to get it."""
    missing = []
    if trt_version() is None:
        missing.append("TensorRT's Python bindings (tensorrt)")
    if gpu_info() is None:
        missing.append("an NVIDIA GPU (no CUDA device via pycuda or cuda-python, no Jetson, no nvidia-smi)")
    if not missing:
        return None
    how = ("on a Jetson use JetPack's system TensorRT from a virtual environment made with "
           "`python3 -m venv --system-site-packages`; on a desktop NVIDIA's wheels: "
           "`pip install tensorrt --extra-index-url https://pypi.nvidia.com`, with an NVIDIA driver")
    return f"building a TensorRT engine needs {' and '.join(missing)}; {how}"
