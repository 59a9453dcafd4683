"""The ONE CUDA module of the runtime: one device, one stream, pinned host + device buffers allocated
once per tensor name, async copies around the caller's launch, CUDA events timing "h2d", "compute"
and "d2h". Two bindings behind the same small interface (cudabind.py): pycuda (JetPack 5/6, where
NVIDIA's Jetson images have it) and NVIDIA's cuda-python (`cuda.bindings`, what TensorRT's own
samples use since 10.13, and a wheel with no compiler needed); whichever is importable, pycuda first.

Pinned host buffers belong to the numpy arrays that view them: closing the session frees the device
side at once, and each host buffer when its last view (e.g. a runner's input_buffer) is gone, so no
view ever points at freed memory. Every CUDA failure becomes an HfrError naming the call and error.
"""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from ..base.errors import HfrError
from .cudabind import CUDA_HINT, open_binding

BINDINGS = ("pycuda", "cuda.bindings")  # preference order


def binding_available() -> Optional[str]:
    """The CUDA binding the runtime would use here ("pycuda" or "cuda.bindings"), or None."""
    for name, module in (("pycuda", "pycuda"), ("cuda.bindings", "cuda.bindings")):
        try:
            if importlib.util.find_spec(module) is not None:
                return name
        except (ImportError, ValueError):  # "cuda" exists but is another package
            continue
    return None


def _head(host: np.ndarray, nbytes: int) -> np.ndarray:
    """The first nbytes of a pinned buffer, as a view (still pinned)."""
    return host.reshape(-1).view(np.uint8)[:nbytes]


class _Pinned:
    """Pinned host memory owned by the arrays viewing it: freed when the last view is collected."""

    def __init__(self, bind, nbytes: int):
        self._bind, self._ptr = bind, None
        self._ptr = bind.host_alloc(nbytes)
        self.__array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (self._ptr, False), "version": 3}
        bind.acquire()

    def __del__(self):
        if self._ptr is not None:
            ptr, self._ptr = self._ptr, None
            try:
                self._bind.host_free(ptr)
            finally:
                self._bind.release()


class CudaSession:
    """A context on `device`, one stream, four events and named host/device buffer pairs."""

    def __init__(self, device: int = 0, binding: Optional[str] = None):
        binding = binding or binding_available()
        if binding is None:
            raise HfrError(f"no CUDA binding is importable (pycuda or cuda-python); {CUDA_HINT}")
        self.binding = binding
        self._bind = open_binding(binding, device)  # checks the device; owns the context
        self._buffers: Dict[str, Tuple[np.ndarray, int]] = {}
        try:
            with self.active():
                self.stream = self._bind.stream_create()
                self._events = [self._bind.event_create() for _ in range(4)]
        except BaseException:
            self._bind.release()
            raise

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make this session's context current for the block (any thread), then restore the previous."""
        if self._bind is None:
            raise HfrError("CUDA session used after it was closed")
        self._bind.push()
        try:
            yield
        finally:
            self._bind.pop()

    def allocate(self, name: str, shape, dtype) -> np.ndarray:
        """Pinned host array of `shape` plus a device buffer of the same size, under `name`. Call inside active()."""
        shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
        used = int(np.prod(shape)) * dtype.itemsize
        host = np.asarray(_Pinned(self._bind, max(used, 1)))[:used].view(dtype).reshape(shape)
        self._buffers[name] = (host, self._bind.dev_alloc(max(used, 1)))
        return host

    def host(self, name: str) -> np.ndarray:
        return self._buffers[name][0]

    def device_ptr(self, name: str) -> int:
        return int(self._buffers[name][1])

    def run(self, inputs: Dict[str, int], launch: Callable[[int], None], outputs: Dict[str, int]) -> Dict[str, float]:
        """Copy the first `nbytes` of each input host->device, launch(stream handle), copy outputs
        back, wait. Call inside active(). Returns {"h2d", "compute", "d2h"} in ms."""
        b, s = self._bind, self.stream
        e0, e1, e2, e3 = self._events
        b.event_record(e0, s)
        for name, nbytes in inputs.items():
            host, dev = self._buffers[name]
            b.htod_async(dev, _head(host, nbytes), s)
        b.event_record(e1, s)
        launch(b.stream_handle(s))
        b.event_record(e2, s)
        for name, nbytes in outputs.items():
            host, dev = self._buffers[name]
            b.dtoh_async(_head(host, nbytes), dev, s)
        b.event_record(e3, s)
        b.event_synchronize(e3)
        return {"h2d": b.elapsed_ms(e0, e1), "compute": b.elapsed_ms(e1, e2), "d2h": b.elapsed_ms(e2, e3)}

    def close(self) -> None:
        """Free device buffers, stream and events now; host buffers go with their last view; the
        context when nothing uses it any more. Safe to call twice."""
        bind, self._bind = self._bind, None
        if bind is None:
            return
        try:
            bind.push()
            try:
                for _, dev in self._buffers.values():
                    bind.dev_free(dev)
                for event in self._events:
                    bind.event_destroy(event)
                bind.stream_destroy(self.stream)
            finally:
                self._buffers.clear()  # our views go; views held elsewhere keep their memory
                self._events, self.stream = [], None
                bind.pop()
        finally:
            bind.release()
