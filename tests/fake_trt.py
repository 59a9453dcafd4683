"""A stand-in for the tensorrt module of one TensorRT generation (8.5.3, 10.3.0, 11.0.0), for the
builder path: it offers exactly the members trt_api.API records for that generation (anything else
raises AttributeError, and hasattr() says False, as with the real bindings), records what it is
given, and behaves as TensorRT does where a wrong call would otherwise pass unnoticed: the parser
reads the bytes it is given (an empty or foreign buffer fails), a network with a dynamic input and
no optimization profile builds nothing.

    rec = install(monkeypatch, "10.3.0")   # sys.modules["tensorrt"] is the fake now
    ... build_engine(...) ...
    rec.calls, rec.parsed, rec.layers
"""

from __future__ import annotations

import sys
import types
from typing import Dict, List

from trt_api import API, CREATION_FLAG_VALUES, ENUMS


class _Enum(int):
    def __new__(cls, value, name):
        obj = int.__new__(cls, value)
        obj.name = name
        return obj

    def __repr__(self):
        return self.name


def _enum_class(name: str, members, values: Dict[str, int]):
    return type(name, (), {m: _Enum(values.get(m, i), f"{name}.{m}") for i, m in enumerate(members)})


class _Missing:
    """A member this generation's bindings lack: reading or writing it raises AttributeError."""

    def __init__(self, owner: str, name: str, version: str):
        self.text = f"tensorrt {version}: {owner} has no attribute {name!r}"

    def __get__(self, obj, objtype=None):
        raise AttributeError(self.text)

    def __set__(self, obj, value):
        raise AttributeError(self.text)


class _Strict:
    """Base of the fake classes: only recorded members may be set on an instance."""

    _api: frozenset = frozenset()
    _version = "?"

    def __setattr__(self, name, value):
        if not name.startswith("_") and name not in self._api:
            raise AttributeError(f"tensorrt {self._version}: {type(self).__name__} has no attribute {name!r}")
        object.__setattr__(self, name, value)


def _restrict(cls, api_name: str, version: str, implemented):
    """cls limited to the members API[version][api_name]; implemented members outside it are _Missing."""
    api = frozenset(API[version][api_name])
    body = {"_api": api, "_version": version}
    for m in implemented:
        if m not in api:
            body[m] = _Missing(api_name, m, version)
    return type(api_name, (cls,), body)


def _public(cls) -> List[str]:
    return [m for c in cls.__mro__ if c not in (_Strict, object) for m in vars(c) if not m.startswith("_")]


class Recorder:
    def __init__(self, version: str):
        self.version = version
        self.calls: List[tuple] = []
        self.parsed: List[bytes] = []  # every buffer given to OnnxParser.parse
        self.layers: list = []  # the network's layers, after parsing
        self.serialized_cache = b"TIMING-CACHE"
        self.cuda = None  # the fake CUDA runtime whose memory an executed engine reads and writes
        self.module = _module(self)


def _module(rec: Recorder):  # noqa: C901 - one fake module, class by class
    v = rec.version
    enums = {e: _enum_class(e, API[v][e], CREATION_FLAG_VALUES[v] if e == "NetworkDefinitionCreationFlag" else {})
             for e in ENUMS}
    DataType, LayerType = enums["DataType"], enums["LayerType"]
    layer_types = {"Conv": "CONVOLUTION", "ConvTranspose": "DECONVOLUTION", "QuantizeLinear": "QUANTIZE",
                   "DequantizeLinear": "DEQUANTIZE", "Constant": "CONSTANT", "Resize": "RESIZE",
                   "MatMul": "MATRIX_MULTIPLY", "ReduceSum": "REDUCE", "ReduceMax": "REDUCE", "Sqrt": "UNARY",
                   "Relu": "ACTIVATION", "Clip": "ACTIVATION", "Cast": "CAST" if "CAST" in API[v]["LayerType"] else "IDENTITY"}

    class Tensor(_Strict):
        def __init__(self, name, shape, dtype):
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "shape", tuple(shape))
            object.__setattr__(self, "dtype", dtype)

    class Layer(_Strict):
        def __init__(self, name, type_, outputs):
            object.__setattr__(self, "name", name)
            object.__setattr__(self, "type", type_)
            object.__setattr__(self, "_outputs", outputs)
            object.__setattr__(self, "_precision", DataType.FLOAT)
            object.__setattr__(self, "precision_set", False)  # test-side view, not a TensorRT member
            object.__setattr__(self, "output_types", {})

        @property
        def num_outputs(self):
            return len(self._outputs)

        def get_output(self, i):
            return self._outputs[i]

        @property
        def precision(self):
            return self._precision

        @precision.setter
        def precision(self, dtype):
            object.__setattr__(self, "_precision", dtype)
            object.__setattr__(self, "precision_set", True)

        def set_output_type(self, i, dtype):
            self.output_types[i] = dtype

    Layer = _restrict(Layer, "ILayer", v, _public(Layer))
    Tensor = _restrict(Tensor, "ITensor", v, _public(Tensor))

    class Network(_Strict):
        def __init__(self):
            object.__setattr__(self, "_inputs", [])

        @property
        def num_inputs(self):
            return len(self._inputs)

        def get_input(self, i):
            return self._inputs[i]

        @property
        def num_layers(self):
            return len(rec.layers)

        def get_layer(self, i):
            return rec.layers[i]

    Network = _restrict(Network, "INetworkDefinition", v, _public(Network))

    class ParserError(_Strict):
        def __init__(self, desc):
            object.__setattr__(self, "_desc", desc)

        def node(self):
            return -1

        def desc(self):
            return self._desc

    ParserError = _restrict(ParserError, "ParserError", v, _public(ParserError))

    class OnnxParser(_Strict):
        def __init__(self, network, logger):
            object.__setattr__(self, "_network", network)
            object.__setattr__(self, "_errors", [])

        def parse(self, model):
            import onnx

            data = bytes(model)
            rec.parsed.append(data)
            try:
                graph = onnx.load_from_string(data).graph
            except Exception as exc:  # noqa: BLE001
                graph, why = None, str(exc)
            if graph is None or not graph.node:
                self._errors.append(ParserError("not an ONNX model (empty or unreadable buffer)"))
                return False
            types_ = {i.name: i.type.tensor_type.elem_type for i in list(graph.input) + list(graph.value_info)
                      + list(graph.output)}
            for i in graph.input:
                dims = [d.dim_value if d.dim_value > 0 else -1 for d in i.type.tensor_type.shape.dim]
                self._network._inputs.append(Tensor(i.name, dims, DataType.FLOAT))
            for n in graph.node:
                kind = layer_types.get(n.op_type, "ELEMENTWISE")
                outs = [Tensor(o, (), DataType.HALF if types_.get(o) == 10 else DataType.INT8
                               if n.op_type == "QuantizeLinear" else DataType.FLOAT) for o in n.output]
                rec.layers.append(Layer(n.name, getattr(LayerType, kind), outs))
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, i):
            return self._errors[i]

    OnnxParser = _restrict(OnnxParser, "OnnxParser", v, _public(OnnxParser))

    class Profile(_Strict):
        def set_shape(self, name, lo, opt, hi):
            rec.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    Profile = _restrict(Profile, "IOptimizationProfile", v, _public(Profile))

    class TimingCache(_Strict):
        def __init__(self, data):
            object.__setattr__(self, "_data", bytes(data))

        def serialize(self):
            return rec.serialized_cache

    TimingCache = _restrict(TimingCache, "ITimingCache", v, _public(TimingCache))

    class Config(_Strict):
        def __init__(self):
            object.__setattr__(self, "_profiles", [])
            object.__setattr__(self, "_cache", None)
            object.__setattr__(self, "_verbosity", None)

        def set_memory_pool_limit(self, pool, size):
            rec.calls.append(("set_memory_pool_limit", pool.name.split(".")[1], size))

        @property
        def max_workspace_size(self):
            return 0

        @max_workspace_size.setter
        def max_workspace_size(self, n):
            rec.calls.append(("max_workspace_size", n))

        def set_flag(self, flag):
            if not isinstance(flag, _Enum) or not flag.name.startswith("BuilderFlag."):
                raise TypeError(f"set_flag(): incompatible function arguments: {flag!r}")
            rec.calls.append(("set_flag", flag.name.split(".")[1]))

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            rec.calls.append(("add_optimization_profile",))
            return len(self._profiles) - 1

        @property
        def num_optimization_profiles(self):
            return len(self._profiles)

        def create_timing_cache(self, data):
            rec.calls.append(("create_timing_cache", bytes(data)))
            if bytes(data) not in (b"", rec.serialized_cache):
                raise RuntimeError("invalid timing cache")  # what deserializing garbage does
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            rec.calls.append(("set_timing_cache", cache._data, ignore_mismatch))
            object.__setattr__(self, "_cache", cache)
            return True

        def get_timing_cache(self):
            return self._cache

        @property
        def profiling_verbosity(self):
            return self._verbosity

        @profiling_verbosity.setter
        def profiling_verbosity(self, value):
            rec.calls.append(("profiling_verbosity", value.name))
            object.__setattr__(self, "_verbosity", value)

    Config = _restrict(Config, "IBuilderConfig", v, _public(Config))

    class Builder(_Strict):
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            rec.calls.append(("create_network", int(flags)))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            dynamic = any(-1 in t.shape for t in network._inputs)
            rec.calls.append(("build_serialized_network", config.num_optimization_profiles,
                              None if config._cache is None else config._cache._data))
            if dynamic and not config._profiles:
                return None  # TensorRT: "Network has dynamic or shape inputs, but no optimization profile"
            return b"ENGINE-BYTES"

    Builder = _restrict(Builder, "Builder", v, _public(Builder))

    severity = {s: _Enum(i, f"Severity.{s}") for i, s in enumerate(API[v]["Severity"])}
    Logger = type("Logger", (), {"__init__": lambda self, level=None: None, **severity})

    return types.SimpleNamespace(__version__=v, Builder=Builder, OnnxParser=OnnxParser, IBuilderConfig=Config,
                                 ILayer=Layer, Logger=Logger, nptype=_nptype(enums["DataType"]),
                                 Runtime=_runtime(rec, v, enums), **enums)


def _nptype(DataType):
    import numpy as np

    def nptype(dtype):  # tensorrt/__init__.py's mapping, for the types used here
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT32: np.int32}[dtype]
    return nptype


# The engine a fake Runtime deserializes: the toy graph (map = mean over RGB of |x - 0.5| * 2, score = its
# max), side S, profile batch 1..MAX_BATCH, computed on the fake CUDA runtime's memory when executed.
S, MAX_BATCH = 64, 4
IO = (("image", True, (3, S, S)), ("anomaly_map", False, (1, S, S)), ("score", False, ()))


def _toy(x):
    import numpy as np

    amap = (np.abs(x - 0.5) * 2).mean(axis=1, keepdims=True)
    return amap, amap.reshape(len(x), -1).max(axis=1)


def _runtime(rec: Recorder, v: str, enums):  # noqa: C901
    import numpy as np

    FLOAT, mode = enums["DataType"].FLOAT, enums["TensorIOMode"]

    class Context(_Strict):
        def __init__(self):
            object.__setattr__(self, "_batch", None)
            object.__setattr__(self, "_addr", {})

        def _shape(self, name):
            per = dict((n, s) for n, _, s in IO)[name]
            return (self._batch if self._batch is not None else -1,) + per

        def _set_batch(self, shape):
            ok = len(shape) == 4 and 1 <= shape[0] <= MAX_BATCH and tuple(shape[1:]) == (3, S, S)
            if ok:
                object.__setattr__(self, "_batch", int(shape[0]))
            return ok

        def _run(self, stream):
            rt = rec.cuda
            n = self._batch
            x = rt.device_array(self._addr["image"], n * 3 * S * S).reshape(n, 3, S, S)
            amap, score = _toy(x)
            rt.device_array(self._addr["anomaly_map"], n * S * S)[:] = amap.reshape(-1)
            rt.device_array(self._addr["score"], n)[:] = score
            rec.calls.append(("execute", n, int(stream)))
            return True

        # TensorRT >= 10: tensors by name
        def set_input_shape(self, name, shape):
            return name == "image" and self._set_batch(tuple(shape))

        def get_tensor_shape(self, name):
            return self._shape(name)

        def set_tensor_address(self, name, ptr):
            self._addr[name] = int(ptr)
            return True

        def execute_async_v3(self, stream_handle):
            return self._run(stream_handle)

        # TensorRT 8.5: bindings by index
        def set_binding_shape(self, index, shape):
            return index == 0 and self._set_batch(tuple(shape))

        def get_binding_shape(self, index):
            return self._shape(IO[index][0])

        def execute_async_v2(self, bindings, stream_handle):
            for (name, _, _), ptr in zip(IO, bindings):
                self._addr[name] = int(ptr)
            return self._run(stream_handle)

    Context = _restrict(Context, "IExecutionContext", v, _public(Context))

    class Engine(_Strict):
        num_io_tensors = len(IO)
        num_bindings = len(IO)

        def get_tensor_name(self, i):
            return IO[i][0]

        def get_tensor_mode(self, name):
            return mode.INPUT if dict((n, i) for n, i, _ in IO)[name] else mode.OUTPUT

        def get_tensor_dtype(self, name):
            return FLOAT

        def get_tensor_shape(self, name):
            return (-1,) + dict((n, s) for n, _, s in IO)[name]

        def get_tensor_profile_shape(self, name, profile):
            assert name == "image" and profile == 0
            return [(b, 3, S, S) for b in (1, 2, MAX_BATCH)]

        def get_binding_name(self, i):
            return IO[i][0]

        def binding_is_input(self, i):
            return IO[i][1]

        def get_binding_dtype(self, i):
            return FLOAT

        def get_binding_shape(self, i):
            return (-1,) + IO[i][2]

        def get_profile_shape(self, profile, i):
            assert i == 0 and profile == 0
            return [(b, 3, S, S) for b in (1, 2, MAX_BATCH)]

        def create_execution_context(self):
            return Context()

    Engine = _restrict(Engine, "ICudaEngine", v, _public(Engine))

    class Runtime(_Strict):
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if bytes(data) == b"ENGINE-BYTES" else None

    return _restrict(Runtime, "Runtime", v, _public(Runtime))


def install(monkeypatch, version: str) -> Recorder:
    rec = Recorder(version)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    return rec
