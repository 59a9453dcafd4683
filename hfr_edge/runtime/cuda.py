"""The ONE pycuda module (the users' choice of CUDA binding): a CUDA context created on one
device, one stream, pinned host + device buffers allocated once per tensor name, async copies
around the caller's launch, and CUDA events timing "h2d", "compute" and "d2h".

Whoever creates a CudaSession closes it; every CUDA failure becomes an HfrError naming the
CUDA call and error. pycuda is imported lazily, so the package imports without it.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Tuple

import numpy as np

from ..base.errors import HfrError
from ..base.lazy import require

PYCUDA_HINT = ("pip install pycuda inside the virtual environment (on a Jetson: a venv made with "
               "--system-site-packages so JetPack's TensorRT is visible, and CUDA's nvcc on PATH to build pycuda)")


def pycuda_driver():
    return require("pycuda.driver", "pycuda", PYCUDA_HINT)


@contextlib.contextmanager
def cuda_errors(what: str) -> Iterator[None]:
    """Turn a pycuda error into one HfrError line: 'CUDA error while <what>: <call> failed: <error>'."""
    drv = pycuda_driver()
    try:
        yield
    except drv.Error as exc:
        raise HfrError(f"CUDA error while {what}: {type(exc).__name__}: {exc}", exit_code=1) from None


def _head(host: np.ndarray, nbytes: int) -> np.ndarray:
    """The first nbytes of a pinned buffer, as a view (still pinned)."""
    return host.reshape(-1).view(np.uint8)[:nbytes]


class CudaSession:
    """A context on `device`, one stream, four events and named host/device buffer pairs."""

    def __init__(self, device: int = 0):
        drv = pycuda_driver()
        self._drv = drv
        self._ctx = None
        self._buffers: Dict[str, Tuple[np.ndarray, object]] = {}
        with cuda_errors("initialising the CUDA driver"):
            drv.init()
            count = drv.Device.count()
        if count == 0:
            raise HfrError("no CUDA device found; check the NVIDIA driver (nvidia-smi / tegrastats)")
        if not 0 <= device < count:
            raise HfrError(f"CUDA device {device}: this machine has {count} CUDA device(s), numbered 0..{count - 1}")
        with cuda_errors(f"creating a context on CUDA device {device}"):
            self._ctx = drv.Device(device).make_context()  # created and pushed: current now
        try:
            with cuda_errors("creating a CUDA stream and events"):
                self.stream = drv.Stream()
                self._events = [drv.Event() for _ in range(4)]
        except BaseException:
            self._ctx.pop()
            self.close()
            raise
        self._ctx.pop()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make this session's context current for the block (any thread), then pop it."""
        if self._ctx is None:
            raise HfrError("CUDA session used after it was closed")
        with cuda_errors("making the CUDA context current"):
            self._ctx.push()
        try:
            yield
        finally:
            self._ctx.pop()

    def allocate(self, name: str, shape, dtype) -> np.ndarray:
        """Pinned host array of `shape` plus a device buffer of the same size, under `name`."""
        with cuda_errors(f"allocating buffers for tensor '{name}' {tuple(shape)}"):
            host = self._drv.pagelocked_empty(tuple(int(d) for d in shape), np.dtype(dtype))
            dev = self._drv.mem_alloc(max(host.nbytes, 1))
        self._buffers[name] = (host, dev)
        return host

    def host(self, name: str) -> np.ndarray:
        return self._buffers[name][0]

    def device_ptr(self, name: str) -> int:
        return int(self._buffers[name][1])

    def run(self, inputs: Dict[str, int], launch: Callable[[int], None], outputs: Dict[str, int]) -> Dict[str, float]:
        """Copy the first `nbytes` of each input host->device, launch(stream handle), copy outputs
        back, wait. Call inside active(). Returns {"h2d", "compute", "d2h"} in ms."""
        drv, s = self._drv, self.stream
        e0, e1, e2, e3 = self._events
        with cuda_errors("copying inputs to the GPU"):
            e0.record(s)
            for name, nbytes in inputs.items():
                host, dev = self._buffers[name]
                drv.memcpy_htod_async(dev, _head(host, nbytes), s)
            e1.record(s)
        with cuda_errors("running the engine"):
            launch(s.handle)
            e2.record(s)
        with cuda_errors("copying outputs from the GPU"):
            for name, nbytes in outputs.items():
                host, dev = self._buffers[name]
                drv.memcpy_dtoh_async(_head(host, nbytes), dev, s)
            e3.record(s)
            e3.synchronize()
            return {"h2d": e1.time_since(e0), "compute": e2.time_since(e1), "d2h": e3.time_since(e2)}

    def close(self) -> None:
        """Free buffers, stream and events, then the context. Safe to call twice."""
        if self._ctx is None:
            return
        ctx, self._ctx = self._ctx, None
        with cuda_errors("releasing CUDA buffers and the context"):
            ctx.push()
            try:
                for host, dev in self._buffers.values():
                    dev.free()
                    host.base.free()
                self._buffers.clear()
                self.stream = None
                self._events = []
            finally:
                ctx.pop()
            ctx.detach()
