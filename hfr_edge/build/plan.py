"""Which TensorRT API calls build our graph on a given TensorRT version: a pure function, so the
rules for every generation are tested on a machine without TensorRT.

Facts it encodes (NVIDIA's API references, the 10.x -> 11.x migration guide, and the Python
bindings themselves, pyCore.cpp at the 8.5.3 / v10.3.0 / v11.0 tags, recorded in tests/trt_api.py):
- 8.x: networks need NetworkDefinitionCreationFlag.EXPLICIT_BATCH; precision is chosen by builder
  flags (a Q/DQ graph needs INT8, plus FP16 so the non-quantized rest may use fp16 kernels). Weak
  typing may run any layer in any enabled precision, the graph's Casts notwithstanding, unless
  OBEY_PRECISION_CONSTRAINTS is set and the layer's precision is set: so the fusion tail gets FP32.
- 8.4+: IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, n); before 8.4 only the
  `max_workspace_size` attribute exists (gone from the bindings in 10.x).
- 8.x parses ONNX opset <= 17.
- 10.x: EXPLICIT_BATCH is "[DEPRECATED] Ignored" (networks are always explicit batch);
  NetworkDefinitionCreationFlag.STRONGLY_TYPED makes the graph's own tensor types the precision.
- 11.x: every network is strongly typed (EXPLICIT_BATCH is gone, STRONGLY_TYPED deprecated);
  BuilderFlag.FP16/INT8/BF16/FP8/INT4/FP4, OBEY/PREFER_PRECISION_CONSTRAINTS,
  IBuilderConfig.int8_calibrator and ILayer.precision / set_output_type are removed; DIRECT_IO is
  deprecated, not removed (hfr-edge uses it nowhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

from ..base.contract import PRECISIONS, TRT8_MAX_OPSET
from ..base.errors import HfrError
from ..runtime.trtinfo import major_minor

# Python API names absent from TensorRT 11's bindings (present in 8.5 and/or 10.3): no plan for 11
# may use them. (DIRECT_IO is only deprecated in 11.)
REMOVED_IN_11 = frozenset({
    "FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS", "int8_calibrator", "EXPLICIT_BATCH", "max_workspace_size",
})


@dataclass(frozen=True)
class BuildPlan:
    trt_version: str  # the TensorRT version this plan is for, e.g. "10.3.0"
    precision: str  # what the engine computes in: fp32 | fp16 | int8 (recorded in model.engine.json)
    strongly_typed: bool  # the graph's tensor types decide the precision (no precision flags)
    explicit_batch_flag: bool  # pass NetworkDefinitionCreationFlag.EXPLICIT_BATCH (TensorRT 8.x)
    network_flags: Tuple[str, ...]  # NetworkDefinitionCreationFlag members for create_network
    builder_flags: Tuple[str, ...]  # BuilderFlag members to set, e.g. ("INT8", "FP16")
    workspace_api: str  # "memory_pool_limit" (8.4+) or "max_workspace_size" (older)
    notes: Tuple[str, ...] = ()  # one line each, printed by `hfr-edge build`
    tail_fp32: bool = False  # pin the fusion tail's layers to FP32 (weak typing with FP16/INT8 enabled)

    def to_dict(self) -> dict:
        return {"trt_version": self.trt_version, "precision": self.precision, "strongly_typed": self.strongly_typed,
                "network_flags": list(self.network_flags), "builder_flags": list(self.builder_flags),
                "workspace_api": self.workspace_api, "tail_fp32": self.tail_fp32}


def parse_version(version: str) -> Tuple[int, int]:
    """'8.5.2.2' -> (8, 5); '10.3.0' -> (10, 3)."""
    parsed = major_minor(version)
    if parsed is None:
        raise HfrError(f"TensorRT version {version!r} is not of the form MAJOR.MINOR[.PATCH]")
    return parsed


def api_for_version(version: str) -> Dict[str, bool]:
    """What the Python bindings of this TensorRT version offer, as far as the plan cares."""
    major, minor = parse_version(version)
    return {
        "explicit_batch_flag": major <= 10,  # needed on 8.x, ignored on 10.x
        "strongly_typed": major >= 10,  # STRONGLY_TYPED flag (10.x); the only mode on 11.x
        "precision_flags": major <= 10,  # BuilderFlag.FP16 / INT8, removed in 11.x
        "memory_pool_limit": (major, minor) >= (8, 4),
    }


def check_opset(trt_version: str, opset: Optional[int], where: str = "the graph") -> None:
    """Refuse a graph whose opset this TensorRT's ONNX parser does not read (8.x: <= 17)."""
    major, minor = parse_version(trt_version)
    if opset is not None and major < 9 and int(opset) > TRT8_MAX_OPSET:
        raise HfrError(f"{where}: opset {opset}, but TensorRT {major}.{minor}'s ONNX parser reads opset <= "
                       f"{TRT8_MAX_OPSET}; re-export it with `hfr-edge export ckpt.pt --opset {TRT8_MAX_OPSET}`")


def make_plan(trt_version: str, has_api: Optional[Mapping[str, bool]] = None, graph_precision: str = "fp32",
              requested: Optional[str] = None, graph_opset: Optional[int] = None) -> BuildPlan:
    """The build recipe for a graph of `graph_precision` ("fp32"|"fp16"|"int8", from its metadata)
    and ONNX opset `graph_opset` when the user asked for `requested` ("fp16"|"int8"|None = as the graph is).

    `has_api` (keys as in api_for_version) overrides what the version implies, for bindings that
    differ from their release notes; `hfr-edge build` passes what the imported module really has.
    """
    major, minor = parse_version(trt_version)
    if major < 8:
        raise HfrError(f"TensorRT {trt_version} is too old: hfr-edge needs TensorRT 8.x or newer "
                       f"(JetPack 5.1 has 8.5); upgrade JetPack or TensorRT")
    if graph_precision not in PRECISIONS:
        raise HfrError(f"graph precision {graph_precision!r} must be one of {', '.join(PRECISIONS)}")
    if requested not in (None, "fp16", "int8"):
        raise HfrError(f"requested precision {requested!r} must be fp16, int8 or none")
    check_opset(trt_version, graph_opset)
    api = dict(api_for_version(trt_version))
    api.update(has_api or {})
    precision = _engine_precision(graph_precision, requested)
    workspace_api = "memory_pool_limit" if api["memory_pool_limit"] else "max_workspace_size"
    weak_fp16 = graph_precision == "fp32" and requested == "fp16"  # only builder flags can lower this graph

    if major >= 11 or not api["precision_flags"]:
        # TensorRT 11: strongly typed is the only mode, and the default of create_network().
        if weak_fp16:
            raise HfrError(f"TensorRT {trt_version} takes precision from the graph only: convert it first "
                           f"(`hfr-edge build --fp16` does so) instead of building an fp32 graph as fp16")
        return BuildPlan(trt_version, precision, True, False, (), (), workspace_api,
                         (f"TensorRT {major}.{minor}: strongly typed network, precision from the {graph_precision} graph",))

    if major >= 10 and api["strongly_typed"] and not weak_fp16:
        # TensorRT 10.x (JetPack 6's 10.3 included): STRONGLY_TYPED rather than the INT8/FP16 flags.
        # Why: (1) the graph already carries its precision (fp16 casts, Q/DQ scales), and strong typing
        # honours it exactly, keeping the float32 fusion tail (1 - cos, blur) in float32, which the
        # FP16 flag would let TensorRT demote; (2) it is the same build as on 11.x, where the flags no
        # longer exist, so one engine recipe is validated for 10 and 11. Cost: the few non-quantized
        # layers of an int8 graph run in fp32 rather than fp16 (they are elementwise, mostly fused).
        return BuildPlan(trt_version, precision, True, False, ("STRONGLY_TYPED",), (), workspace_api,
                         (f"TensorRT {major}.{minor}: strongly typed network, precision from the {graph_precision} graph",))

    # TensorRT 8.x (JetPack 5's 8.5), 9.x, or 10.x for an fp32 graph built as fp16: weak typing.
    flags: Tuple[str, ...] = ()
    if precision == "int8":
        flags = ("INT8", "FP16")  # INT8 lets the Q/DQ layers run in int8; FP16 for the rest
    elif precision == "fp16":
        flags = ("FP16",)
    if flags:  # else weak typing may run the float32 fusion tail (residuals, blur, score) in fp16
        flags += ("OBEY_PRECISION_CONSTRAINTS",)
    explicit = major < 10 and api["explicit_batch_flag"]
    notes = [f"TensorRT {major}.{minor}: builder flags {', '.join(flags) or 'none'} (weak typing)"]
    if flags:
        notes.append("fusion tail layers pinned to FP32 (OBEY_PRECISION_CONSTRAINTS)")
    return BuildPlan(trt_version, precision, False, explicit, ("EXPLICIT_BATCH",) if explicit else (), flags,
                     workspace_api, tuple(notes), tail_fp32=bool(flags))


def _engine_precision(graph: str, requested: Optional[str]) -> str:
    if requested is None or requested == graph:
        return graph
    if requested == "fp16" and graph == "fp32":
        return "fp16"
    if requested == "int8":
        raise HfrError(f"--int8 needs a Q/DQ graph: this {graph} graph must be calibrated first "
                       f"(`hfr-edge build --int8` on the fp32 model.onnx does so)")
    raise HfrError(f"--{requested} does not apply to a {graph} graph; build it without a precision option")
