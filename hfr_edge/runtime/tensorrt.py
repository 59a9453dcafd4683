"""The TensorRT backend of the runner interface, thin and true to NVIDIA's Python API:
deserialize with trt.Runtime, allocate one pinned/device buffer pair per I/O tensor for the
profile's maximum batch (runtime/cuda.py), then per call: set the input shape, async H2D,
execute, async D2H on one stream.

TensorRT >= 10 is name-based (num_io_tensors, set_input_shape, set_tensor_address,
execute_async_v3); 8.5 / 8.6 (JetPack 5) use bindings (num_bindings, set_binding_shape,
execute_async_v2). tensorrt and the CUDA binding (pycuda or cuda-python) are imported lazily;
the engine's fingerprint (TensorRT version, GPU) is checked against this device before it is
deserialized. input_buffer() hands out views of pinned memory that stay valid after close().
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ..base.errors import HfrError
from .runner import Runner
from .trtinfo import import_tensorrt as tensorrt_module
from .trtinfo import major_minor


def trt_major(trt) -> int:
    return (major_minor(trt.__version__) or (0, 0))[0]


def _dims(d) -> Tuple[int, ...]:
    return tuple(int(v) for v in d)


class _TensorIO:
    """TensorRT >= 10: I/O tensors by name."""

    def __init__(self, trt, engine, context):
        self.trt, self.engine, self.context = trt, engine, context

    def tensors(self) -> Dict[str, bool]:  # name -> is input
        e, mode = self.engine, self.trt.TensorIOMode.INPUT
        return {e.get_tensor_name(i): e.get_tensor_mode(e.get_tensor_name(i)) == mode for i in range(e.num_io_tensors)}

    def dtype(self, name: str):
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def max_input_shape(self, name: str) -> Tuple[int, ...]:
        shape = _dims(self.engine.get_tensor_shape(name))
        if min(shape) >= 0:
            return shape
        return _dims(self.engine.get_tensor_profile_shape(name, 0)[2])  # (min, opt, max) of profile 0

    def set_input_shape(self, name: str, shape) -> bool:
        return bool(self.context.set_input_shape(name, tuple(shape)))

    def shape(self, name: str) -> Tuple[int, ...]:
        return _dims(self.context.get_tensor_shape(name))

    def bind(self, name: str, ptr: int) -> None:
        if not self.context.set_tensor_address(name, ptr):
            raise HfrError(f"TensorRT refused the device address of tensor '{name}'", exit_code=1)

    def execute(self, stream_handle: int) -> bool:
        return bool(self.context.execute_async_v3(stream_handle))


class _BindingIO:
    """TensorRT 8.5 / 8.6: I/O tensors by binding index."""

    def __init__(self, trt, engine, context):
        self.trt, self.engine, self.context = trt, engine, context
        self.index = {engine.get_binding_name(i): i for i in range(engine.num_bindings)}
        self.bindings: List[int] = [0] * engine.num_bindings

    def tensors(self) -> Dict[str, bool]:
        return {name: bool(self.engine.binding_is_input(i)) for name, i in self.index.items()}

    def dtype(self, name: str):
        return np.dtype(self.trt.nptype(self.engine.get_binding_dtype(self.index[name])))

    def max_input_shape(self, name: str) -> Tuple[int, ...]:
        i = self.index[name]
        shape = _dims(self.engine.get_binding_shape(i))
        if min(shape) >= 0:
            return shape
        return _dims(self.engine.get_profile_shape(0, i)[2])  # (min, opt, max) of profile 0

    def set_input_shape(self, name: str, shape) -> bool:
        return bool(self.context.set_binding_shape(self.index[name], tuple(shape)))

    def shape(self, name: str) -> Tuple[int, ...]:
        return _dims(self.context.get_binding_shape(self.index[name]))

    def bind(self, name: str, ptr: int) -> None:
        self.bindings[self.index[name]] = ptr

    def execute(self, stream_handle: int) -> bool:
        return bool(self.context.execute_async_v2(self.bindings, stream_handle))


class TrtRunner(Runner):
    def __init__(self, path, device: int = 0, meta=None):
        super().__init__(path, meta)
        self.device = device
        self._cuda = None
        self._logger = self._runtime = self._engine = self._context = self._io = None

    def _activate(self) -> None:
        try:
            trt = tensorrt_module()
        except HfrError as exc:  # name the engine the user gave
            raise HfrError(f"{self.path}: {exc}") from None
        from .trtinfo import check_engine_fingerprint  # noqa: PLC0415

        check_engine_fingerprint(self.meta, self.path)
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise HfrError(f"{self.path}: cannot read ({exc.strerror})") from None
        from .cuda import CudaSession  # noqa: PLC0415

        cuda = CudaSession(self.device)
        try:
            with cuda.active():
                self._load(trt, cuda, data)
        except BaseException:
            self._release(cuda)
            raise
        self._cuda = cuda
        self.backend = f"tensorrt {trt.__version__}"

    def _load(self, trt, cuda, data: bytes) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)  # kept: the runtime logs through it
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            raise HfrError(f"{self.path}: TensorRT {trt.__version__} could not deserialize this engine (corrupt, or "
                           f"built by another TensorRT version); rebuild it on this device with `hfr-edge build`")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise HfrError(f"{self.path}: TensorRT could not create an execution context (GPU memory full?)",
                           exit_code=1)
        io_cls = _TensorIO if trt_major(trt) >= 10 else _BindingIO
        io = io_cls(trt, self._engine, self._context)
        want = {self.input_name: True, **{n: False for n in self.output_names}}
        if io.tensors() != want:
            raise HfrError(f"{self.path}: engine tensors {io.tensors()} are not the hfr-edge contract (input image; "
                           f"outputs anomaly_map, score); rebuild it from an hfr-edge graph")
        s = self.meta.image_size
        shape = io.max_input_shape(self.input_name)
        if len(shape) != 4 or shape[1:] != (3, s, s) or io.dtype(self.input_name) != np.float32:
            raise HfrError(f"{self.path}: engine input 'image' is {io.dtype(self.input_name)} {shape}, expected "
                           f"float32 (N, 3, {s}, {s}) as its metadata says; rebuild it")
        if not io.set_input_shape(self.input_name, shape):
            raise HfrError(f"{self.path}: TensorRT refused input shape {shape}; rebuild the engine", exit_code=1)
        self.max_batch = shape[0]
        for name in want:
            cuda.allocate(name, shape if name == self.input_name else io.shape(name), io.dtype(name))
            io.bind(name, cuda.device_ptr(name))
        self._io = io

    def input_buffer(self, n: int):
        if self._cuda is None or self.max_batch is None or not 1 <= n <= self.max_batch:
            return None
        return self._cuda.host(self.input_name)[:n]

    def _infer(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        io, cuda, n = self._io, self._cuda, x.shape[0]
        staged = cuda.host(self.input_name)
        if x.__array_interface__["data"][0] != staged.__array_interface__["data"][0]:
            staged[:n] = x  # else x was pre-processed straight into the pinned buffer
        with cuda.active():
            if not io.set_input_shape(self.input_name, x.shape):
                raise HfrError(f"{self.path}: TensorRT refused input shape {x.shape}", exit_code=1)
            shapes = {name: io.shape(name) for name in self.output_names}
            nbytes = {name: int(np.prod(shp)) * cuda.host(name).itemsize for name, shp in shapes.items()}

            def launch(stream_handle: int) -> None:
                if not io.execute(stream_handle):
                    raise HfrError(f"{self.path}: TensorRT failed to execute the engine (see its log above)",
                                   exit_code=1)

            self.last_timings = cuda.run({self.input_name: x.nbytes}, launch, nbytes)
        return {name: np.array(cuda.host(name).reshape(-1)[:int(np.prod(shp))].reshape(shp), dtype=np.float32)
                for name, shp in shapes.items()}

    def _deactivate(self) -> None:
        cuda, self._cuda = self._cuda, None
        self._release(cuda)

    def _release(self, cuda) -> None:
        """TensorRT objects go first, inside their context; then the buffers and the context."""
        try:
            with cuda.active():
                self._io = self._context = self._engine = self._runtime = self._logger = None
        finally:
            cuda.close()
