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
                                 ILayer=Layer, Logger=Logger, **enums)


def install(monkeypatch, version: str) -> Recorder:
    rec = Recorder(version)
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    return rec
