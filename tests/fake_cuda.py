"""A stand-in for cuda-python's runtime module (`cuda.bindings.runtime`) on a machine without a GPU:
the functions hfr-edge calls, with the real ones' parameters (SIGNATURES, from the bindings'
docstrings; test_cuda.py compares them with the installed cuda-python where there is one), and
memory that is real host memory, so copies move real bytes. "Device" buffers are plain numpy
buffers; pinned buffers too, remembered so that a copy from pageable or freed memory fails and a
test can see which pinned buffers are still allocated."""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import itertools
import sys
import types

import numpy as np

SIGNATURES = {  # name -> parameters, as `help(cuda.bindings.runtime.<name>)` shows them (cuda-python 13.4)
    "cudaGetDeviceCount": (), "cudaGetDevice": (), "cudaSetDevice": ("device",),
    "cudaMallocHost": ("size",), "cudaFreeHost": ("ptr",), "cudaMalloc": ("size",), "cudaFree": ("devPtr",),
    "cudaStreamCreate": (), "cudaStreamDestroy": ("stream",), "cudaEventCreate": (), "cudaEventDestroy": ("event",),
    "cudaEventRecord": ("event", "stream"), "cudaEventSynchronize": ("event",),
    "cudaEventElapsedTime": ("start", "end"), "cudaMemcpyAsync": ("dst", "src", "count", "kind", "stream"),
    "cudaGetErrorName": ("error",), "cudaGetDeviceProperties": ("device",),
}


class cudaError_t(enum.IntEnum):  # noqa: N801 - the real name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevice = 101


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class _Handle(int):
    """cudaStream_t / cudaEvent_t: int() gives the address."""


class FakeRuntime(types.ModuleType):
    OK = cudaError_t.cudaSuccess

    def __init__(self, devices: int = 1):
        super().__init__("cuda.bindings.runtime")
        self.cudaError_t, self.cudaMemcpyKind = cudaError_t, cudaMemcpyKind
        self.devices, self.current = devices, 0
        self.pinned, self.device_mem, self.freed_pinned = {}, {}, []
        self.streams, self.events, self.calls = set(), set(), []
        self._ids = itertools.count(0x1000, 0x10)
        self.fail = {}  # function name -> error to return once

    def _ret(self, name, *values):
        self.calls.append(name)
        err = self.fail.pop(name, self.OK)
        return (err, *values) if err == self.OK else (err, *([None] * len(values)))

    def cudaGetDeviceCount(self):  # noqa: N802
        return self._ret("cudaGetDeviceCount", self.devices)

    def cudaGetDevice(self):  # noqa: N802
        return self._ret("cudaGetDevice", self.current)

    def cudaSetDevice(self, device):  # noqa: N802
        if not 0 <= device < self.devices:
            return (cudaError_t.cudaErrorInvalidDevice,)
        self.current = device
        return self._ret("cudaSetDevice")

    def cudaMallocHost(self, size):  # noqa: N802
        buf = np.zeros(size, np.uint8)
        self.pinned[buf.ctypes.data] = buf
        return self._ret("cudaMallocHost", buf.ctypes.data)

    def cudaFreeHost(self, ptr):  # noqa: N802
        buf = self.pinned.pop(ptr)
        buf[:] = 0xFF  # poison: a read through a stale view would see NaNs, not the data
        self.freed_pinned.append(ptr)
        return self._ret("cudaFreeHost")

    def cudaMalloc(self, size):  # noqa: N802
        buf = np.zeros(size, np.uint8)
        self.device_mem[buf.ctypes.data] = buf
        return self._ret("cudaMalloc", buf.ctypes.data)

    def cudaFree(self, devPtr):  # noqa: N802, N803
        del self.device_mem[devPtr]
        return self._ret("cudaFree")

    def cudaStreamCreate(self):  # noqa: N802
        s = _Handle(next(self._ids))
        self.streams.add(s)
        return self._ret("cudaStreamCreate", s)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        self.streams.remove(stream)
        return self._ret("cudaStreamDestroy")

    def cudaEventCreate(self):  # noqa: N802
        e = _Handle(next(self._ids))
        self.events.add(e)
        return self._ret("cudaEventCreate", e)

    def cudaEventDestroy(self, event):  # noqa: N802
        self.events.remove(event)
        return self._ret("cudaEventDestroy")

    def cudaEventRecord(self, event, stream):  # noqa: N802
        assert event in self.events and stream in self.streams
        return self._ret("cudaEventRecord")

    def cudaEventSynchronize(self, event):  # noqa: N802
        return self._ret("cudaEventSynchronize")

    def cudaEventElapsedTime(self, start, end):  # noqa: N802
        return self._ret("cudaEventElapsedTime", 0.25)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        host, dev = (src, dst) if kind == cudaMemcpyKind.cudaMemcpyHostToDevice else (dst, src)
        assert self._inside(self.pinned, host, count), "async copy from memory that is not live pinned memory"
        assert self._inside(self.device_mem, dev, count), "copy to or from memory that is not a device buffer"
        ctypes.memmove(dst, src, count)
        return self._ret("cudaMemcpyAsync")

    def cudaGetErrorName(self, error):  # noqa: N802
        return (cudaError_t.cudaSuccess, cudaError_t(int(error)).name.encode())

    def cudaGetDeviceProperties(self, device):  # noqa: N802
        props = types.SimpleNamespace(name=b"Fake GPU\0\0", major=8, minor=7, totalGlobalMem=8 << 30)
        return self._ret("cudaGetDeviceProperties", props)

    @staticmethod
    def _inside(pool, ptr, count) -> bool:
        return any(base <= ptr and ptr + count <= base + buf.nbytes for base, buf in pool.items())

    def device_array(self, ptr, count, dtype=np.float32):
        """A numpy view of `count` items at device address ptr (for a fake engine's kernels)."""
        assert self._inside(self.device_mem, ptr, count * np.dtype(dtype).itemsize)
        return np.ctypeslib.as_array((ctypes.c_byte * (count * np.dtype(dtype).itemsize)).from_address(ptr)).view(dtype)


def install(monkeypatch, devices: int = 1) -> FakeRuntime:
    """sys.modules gets cuda, cuda.bindings and cuda.bindings.runtime = the fake; no pycuda."""
    rt = FakeRuntime(devices)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    for name, mod in (("cuda", cuda), ("cuda.bindings", bindings), ("cuda.bindings.runtime", rt)):
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, mod)
    for name in ("pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, as where it is not installed
    return rt
