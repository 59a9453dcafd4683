"""The two CUDA bindings behind cuda.CudaSession, each a few lines per operation: pycuda (driver
API, its own context) and cuda-python's runtime API (`cuda.bindings.runtime`, the device's primary
context, as TensorRT's samples use it). Both count their users (the session and every pinned host
buffer still viewed somewhere) and give their context up when the count reaches zero.
Imported lazily by cuda.py; every failure is an HfrError naming the call and the CUDA error."""

from __future__ import annotations

import importlib
from typing import Dict, List

import numpy as np

from ..base.errors import HfrError

CUDA_HINT = ("pip install cuda-python (NVIDIA's wheel; no compiler needed), or pycuda (JetPack: inside a venv made "
             "with --system-site-packages, with CUDA's nvcc on PATH to build it)")


def open_binding(name: str, device: int):
    return {"pycuda": _Pycuda, "cuda.bindings": _CudaRuntime}[name](device)


def _check_device(count: int, device: int) -> None:
    if count == 0:
        raise HfrError("no CUDA device found; check the NVIDIA driver (nvidia-smi / tegrastats)")
    if not 0 <= device < count:
        raise HfrError(f"--device {device}: this machine has {count} CUDA device(s), numbered 0..{count - 1}")


class _Lease:
    """Users of a context: the session plus each live pinned buffer. The last release closes it."""

    users = 1

    def acquire(self) -> None:
        self.users += 1

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self._close_context()

    def _close_context(self) -> None:
        raise NotImplementedError


class _Pycuda(_Lease):
    def __init__(self, device: int):
        try:
            self.drv = importlib.import_module("pycuda.driver")
        except ImportError as exc:
            raise HfrError(f"pycuda is not importable ({exc}); {CUDA_HINT}") from None
        with self._errors("initialising the CUDA driver"):
            self.drv.init()
            count = self.drv.Device.count()
        _check_device(count, device)
        with self._errors(f"creating a context on CUDA device {device}"):
            self.ctx = self.drv.Device(device).make_context()  # created and pushed: current now
        self.ctx.pop()
        self._host: Dict[int, np.ndarray] = {}
        self._dev: Dict[int, object] = {}

    def _errors(self, what: str):
        return _Translate(what, self.drv.Error, lambda exc: f"{type(exc).__name__}: {exc}")

    def push(self) -> None:
        with self._errors("making the CUDA context current"):
            self.ctx.push()

    def pop(self) -> None:
        self.ctx.pop()

    def host_alloc(self, nbytes: int) -> int:
        with self._errors(f"allocating {nbytes} bytes of pinned host memory"):
            arr = self.drv.pagelocked_empty(nbytes, np.uint8)
        self._host[arr.ctypes.data] = arr
        return arr.ctypes.data

    def host_free(self, ptr: int) -> None:
        arr = self._host.pop(ptr)
        self.push()
        try:
            arr.base.free()
        finally:
            self.pop()

    def dev_alloc(self, nbytes: int) -> int:
        with self._errors(f"allocating {nbytes} bytes on the GPU"):
            alloc = self.drv.mem_alloc(nbytes)
        self._dev[int(alloc)] = alloc
        return int(alloc)

    def dev_free(self, ptr: int) -> None:
        with self._errors("freeing GPU memory"):
            self._dev.pop(ptr).free()

    def stream_create(self):
        with self._errors("creating a CUDA stream"):
            return self.drv.Stream()

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def stream_destroy(self, stream) -> None:
        pass  # pycuda frees it with its last reference, the context being current (close() pushes it)

    def event_create(self):
        with self._errors("creating a CUDA event"):
            return self.drv.Event()

    def event_destroy(self, event) -> None:
        pass  # as streams

    def event_record(self, event, stream) -> None:
        with self._errors("recording a CUDA event"):
            event.record(stream)

    def event_synchronize(self, event) -> None:
        with self._errors("running the engine"):  # the launch's asynchronous errors surface here
            event.synchronize()

    def elapsed_ms(self, start, end) -> float:
        return float(end.time_since(start))

    def htod_async(self, dev: int, host: np.ndarray, stream) -> None:
        with self._errors("copying inputs to the GPU"):
            self.drv.memcpy_htod_async(dev, host, stream)

    def dtoh_async(self, host: np.ndarray, dev: int, stream) -> None:
        with self._errors("copying outputs from the GPU"):
            self.drv.memcpy_dtoh_async(host, dev, stream)

    def _close_context(self) -> None:
        with self._errors("releasing the CUDA context"):
            self.ctx.detach()


class _CudaRuntime(_Lease):
    def __init__(self, device: int):
        self.rt = import_cudart()
        count = self._call("cudaGetDeviceCount", "initialising CUDA")
        _check_device(count, device)
        self.device = device
        self._previous: List[int] = []

    def _call(self, fn: str, what: str, *args):
        """cuda-python returns (cudaError_t, results...): check the error, return the result(s)."""
        out = getattr(self.rt, fn)(*args)
        err, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
        if int(getattr(err, "value", err)) != 0:
            name = self.rt.cudaGetErrorName(err)
            text = name[1] if isinstance(name, tuple) else name
            text = text.decode() if isinstance(text, bytes) else str(text)
            raise HfrError(f"CUDA error while {what}: {fn} failed: {text}", exit_code=1)
        return rest[0] if len(rest) == 1 else (rest or None)

    def push(self) -> None:
        self._previous.append(self._call("cudaGetDevice", "reading the current CUDA device"))
        self._call("cudaSetDevice", "making the CUDA device current", self.device)

    def pop(self) -> None:
        self._call("cudaSetDevice", "restoring the CUDA device", self._previous.pop())

    def host_alloc(self, nbytes: int) -> int:
        return int(self._call("cudaMallocHost", f"allocating {nbytes} bytes of pinned host memory", nbytes))

    def host_free(self, ptr: int) -> None:
        self._call("cudaFreeHost", "freeing pinned host memory", ptr)

    def dev_alloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", f"allocating {nbytes} bytes on the GPU", nbytes))

    def dev_free(self, ptr: int) -> None:
        self._call("cudaFree", "freeing GPU memory", ptr)

    def stream_create(self):
        return self._call("cudaStreamCreate", "creating a CUDA stream")

    def stream_handle(self, stream) -> int:
        return int(stream)

    def stream_destroy(self, stream) -> None:
        self._call("cudaStreamDestroy", "destroying the CUDA stream", stream)

    def event_create(self):
        return self._call("cudaEventCreate", "creating a CUDA event")

    def event_destroy(self, event) -> None:
        self._call("cudaEventDestroy", "destroying a CUDA event", event)

    def event_record(self, event, stream) -> None:
        self._call("cudaEventRecord", "recording a CUDA event", event, stream)

    def event_synchronize(self, event) -> None:
        self._call("cudaEventSynchronize", "running the engine", event)

    def elapsed_ms(self, start, end) -> float:
        return float(self._call("cudaEventElapsedTime", "timing the run", start, end))

    def htod_async(self, dev: int, host: np.ndarray, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", "copying inputs to the GPU", dev, host.ctypes.data, host.nbytes, kind, stream)

    def dtoh_async(self, host: np.ndarray, dev: int, stream) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", "copying outputs from the GPU", host.ctypes.data, dev, host.nbytes, kind, stream)

    def _close_context(self) -> None:
        pass  # the primary context lives as long as the process (TensorRT uses it too)


def import_cudart():
    for module in ("cuda.bindings.runtime", "cuda.cudart"):  # cuda-python >= 12.6, older releases
        try:
            return importlib.import_module(module)
        except ImportError:
            continue
    raise HfrError(f"cuda-python is not importable (no cuda.bindings.runtime); {CUDA_HINT}")


class _Translate:
    """Context manager: a binding's exception -> HfrError('CUDA error while <what>: ...')."""

    def __init__(self, what: str, error_type, describe):
        self.what, self.error_type, self.describe = what, error_type, describe

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, self.error_type):
            raise HfrError(f"CUDA error while {self.what}: {self.describe(exc)}", exit_code=1) from None
        return False
